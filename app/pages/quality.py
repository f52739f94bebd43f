"""Quality (merchandisers): Recall@k of a catalog, its failures and most-confused product pairs, a
map of the catalog (app.map_view), its hygiene reports (index.quality.hygiene), and two models side by
side, for a catalog manager with the one to serve and a picked model's catalog built in the background
(app.model_choice).

Every number comes from index.quality.evaluation (the product's one Recall@k): leave-one-out over the
catalog, an image counting as found when another image of its product_id is among its k
nearest neighbours.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import altair as alt

from app import components as ui
from app.item_actions import item_actions, last_outcome, selected_ids
from app.roles import is_catalog_manager
from app.model_choice import compared_default, show_model_build, show_serving
from app.shopper_view import show_shopper_recall
from app.embedding_map import thumbnail_url
from app.map_view import show_map
from embedder.images import decode_image
from index.quality import failures as failure_analysis
from index.quality.bootstrap import BOOTSTRAP_SAMPLES, difference_words, paired_comparison
from index.quality.evaluation import DEFAULT_KS, RecallReport, nearest_neighbours
from index.quality.hygiene import hygiene_report
from index.quality.hygiene_report import HygieneError, HygieneReport, duplicate_rule

GALLERY_DEPTH = 5  # results shown per query in the galleries
FULL_EVALUATION_UP_TO = 100_000  # items; bigger catalogs are evaluated on a sample of queries
SAMPLED_QUERIES = 10_000
SAMPLED_GALLERY_QUERIES = 2_000


@st.cache_resource(max_entries=8, show_spinner="Computing Recall@k…")
def _report(folder: str, stamp: str) -> tuple[RecallReport, dict]:
    """Leave-one-out Recall@k over the catalog (Catalog.evaluate: the shared recall_at_k); big
    catalogs are evaluated on a seeded sample of queries, as the CLI does."""
    catalog = ui.load_catalog(folder)
    return catalog.evaluate(max_queries=None if len(catalog) <= FULL_EVALUATION_UP_TO else SAMPLED_QUERIES,
                            ks=DEFAULT_KS)


@st.cache_resource(max_entries=8, show_spinner="Finding the items' nearest neighbours…")
def _neighbours(folder: str, stamp: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query rows, scores, neighbour rows) for the galleries: every item of a catalog up to
    FULL_EVALUATION_UP_TO items (exact, itself left out), else a seeded sample of items searched
    through the catalog's index."""
    catalog = ui.load_catalog(folder)
    n = len(catalog)
    if n <= FULL_EVALUATION_UP_TO:
        scores, rows = nearest_neighbours(catalog.embeddings, catalog.embeddings, GALLERY_DEPTH, exclude_self=True)
        return np.arange(n), scores, rows
    queries = np.sort(np.random.default_rng(0).choice(n, SAMPLED_GALLERY_QUERIES, replace=False))
    hits = catalog.search_vectors(np.asarray(catalog.embeddings[queries]), GALLERY_DEPTH,
                                  exclude_ids=[[i] for i in catalog.ids[queries]])
    scores, ids = hits.padded(GALLERY_DEPTH)
    return queries, scores, catalog.rows_of(ids.reshape(-1)).reshape(ids.shape)


def report(folder: Path) -> RecallReport:
    return _report(str(folder), ui.catalog_stamp(folder))[0]


def how_evaluated(folder: Path) -> str:
    return _report(str(folder), ui.catalog_stamp(folder))[1]["mode"]


def neighbours(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _neighbours(str(folder), ui.catalog_stamp(folder))


def has_products(folder: Path) -> bool:
    catalog = ui.load_catalog(folder)
    return "product_id" in catalog.metadata.columns


def recall_table(rep: RecallReport) -> pd.DataFrame:
    """Rows: `all` then each category; columns R@k (fractions) and queries."""
    return rep.to_frame().reset_index()


def long_form(rep: RecallReport) -> pd.DataFrame:
    """category, k, recall rows for the charts (k as an ordered category so bars keep 1 < 2 < ... < 100)."""
    frame = rep.to_frame().drop(columns="queries").reset_index().melt("category", var_name="k", value_name="recall")
    frame["k"] = pd.Categorical(frame["k"], categories=[f"R@{k}" for k in rep.overall], ordered=True)
    return frame


def three_decimals(rep: RecallReport) -> dict:
    return {f"R@{k}": st.column_config.NumberColumn(f"R@{k}", format="%.3f") for k in rep.overall}


def show_report(folder: Path, key: str) -> None:
    rep = report(folder)
    shown = [k for k in (1, 10, 100) if k in rep.overall]
    columns = st.columns(len(shown) + 1)
    for column, k in zip(columns, shown):
        column.metric(f"Recall@{k}", f"{rep.overall[k]:.1%}")
    columns[-1].metric("Queries", f"{rep.num_queries:,}")
    notes = [f"Evaluated {how_evaluated(folder)}: every query's own image is left out of its results."]
    if rep.queries_without_match:
        notes.append(f"{rep.queries_without_match:,} queries have no other image of their product and count as misses.")
    if rep.clamped_ks:
        notes.append("The catalog is smaller than some k: " +
                     ", ".join(f"R@{k} uses k={used}" for k, used in rep.clamped_ks.items()) + ".")
    st.caption(" ".join(notes))
    st.dataframe(recall_table(rep), hide_index=True, column_config=three_decimals(rep), key=f"{key}_table")
    chart = long_form(rep)
    left, right = st.columns(2)
    with left:
        st.markdown("**Overall**")
        st.bar_chart(chart[chart["category"] == "all"], x="k", y="recall", y_label="Recall@k", height=300)
    with right:
        st.markdown("**Per category**")
        st.bar_chart(chart[chart["category"] != "all"], x="k", y="recall", color="category", stack=False,
                     y_label="Recall@k", height=300)
    name = folder.name
    a, b, _ = st.columns([1, 1, 3])
    a.download_button("Download CSV", recall_table(rep).to_csv(index=False, float_format="%.3f"), f"recall-{name}.csv",
                      "text/csv",
                      icon=":material/download:", key=f"{key}_csv")
    b.download_button("Download Markdown", f"# Recall@k: {name}\n\n" + rep.to_markdown(), f"recall-{name}.md",
                      "text/markdown", icon=":material/download:", key=f"{key}_md")


def results_frame(folder: Path, query: int) -> pd.DataFrame:
    """A query row's nearest catalog items shaped like a search result (rank, score, id, …, image_path)."""
    catalog = ui.load_catalog(folder)
    queries, scores, found = neighbours(folder)
    at = int(np.searchsorted(queries, query))
    rows = ui.catalog_items(catalog).iloc[found[at]].copy()
    rows.insert(0, "score", scores[at])
    rows.insert(0, "rank", np.arange(1, len(rows) + 1))
    return rows.reset_index(drop=True)


def _analysis_inputs(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(products, queries, scores, found): what index.quality.failures reads, for this catalog's galleries."""
    products = ui.load_catalog(folder).metadata["product_id"].astype(str).to_numpy()
    return (products, *neighbours(folder))


def top1_correct(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, whether each query's best match shows the same product)."""
    products, queries, _, found = _analysis_inputs(folder)
    return queries, failure_analysis.top1_correct(products, queries, found)


def failures(folder: Path) -> np.ndarray:
    """Rows of the items whose best match is another product, the most confidently wrong first."""
    return failure_analysis.failure_rows(*_analysis_inputs(folder))


def failure_pairs(folder: Path) -> pd.DataFrame:
    """One row per failure, most confident first: row, query product, matched product, top-1 score."""
    return failure_analysis.failure_pairs(*_analysis_inputs(folder))


def confused_pairs(folder: Path) -> pd.DataFrame:
    """Query product vs top-1 product over the failures, most frequent first."""
    return failure_analysis.confused_pairs(*_analysis_inputs(folder))


def pair_label(query_product: str, matched_product: str) -> str:
    return f"{query_product} → {matched_product}"


def query_row(folder: Path, query: int, other: Path | None = None) -> None:
    """One query: its image, then its top results (and, when comparing, the other model's below)."""
    item = ui.catalog_items(ui.load_catalog(folder)).iloc[query]
    product = str(item["product_id"])
    left, right = st.columns([1, 5])
    with left:
        ui.show_image(decode_image(item["image_path"]))
        st.caption(f"**Query** id `{item['id']}`  \n{item.get('category', '')} · product {product}")
    with right:
        for source in [folder] + ([other] if other else []):
            results = results_frame(source, query)
            best = results.iloc[0]
            verdict = ("best match is the same product" if str(best["product_id"]) == product else
                       f"best match is product **{best['product_id']}** (id `{best['id']}`)")
            if other:
                st.caption(f"**{source.name}**")
            st.caption(f"{verdict}, score {float(best['score']):.3f}")
            ui.result_strip(results, same=lambda row: str(row["product_id"]) == product)


def show_failures(folder: Path, editable: bool = False) -> None:
    rows = failures(folder)
    items = ui.catalog_items(ui.load_catalog(folder))
    asked = len(neighbours(folder)[0])
    st.caption(f"{len(rows):,} of {asked:,} {'sampled ' if asked < len(items) else ''}items "
               f"({len(rows) / max(asked, 1):.1%}) have another product as their best match. "
               "Green frame ✓: same product; red frame ✗: another product.")
    st.caption("Most confidently wrong first (highest score of the wrong best match).")
    categories = sorted(items["category"].astype(str).iloc[rows].unique()) if len(rows) else []
    pairs = failure_pairs(folder)
    labels = [pair_label(a, b) for a, b in confused_pairs(folder)[["query_product", "matched_product"]].itertuples(
        index=False)]
    left, middle, right = st.columns([2, 2, 1])
    category = left.selectbox("Category", ["All categories", *categories], key="failures_category")
    pair = middle.selectbox("Product pair (query → best match)", ["All pairs", *labels], key="failures_pair")
    keep = np.ones(len(rows), bool)
    if category != "All categories":
        keep &= items["category"].astype(str).iloc[rows].to_numpy() == category
    if pair != "All pairs":
        keep &= np.array([pair_label(a, b) == pair for a, b in zip(pairs["query_product"], pairs["matched_product"])])
    limit = right.number_input("Show", 1, 200, 12, key="failures_limit")
    rows = rows[keep]
    if len(rows) == 0:
        st.info("No failures match these filters.")
    for query in rows[:limit]:
        with st.container(border=True):
            query_row(folder, int(query))
            if editable:
                item = int(items["id"].iloc[int(query)])
                with st.popover(f"Fix item {item}", icon=":material/build:"):
                    item_actions(folder, [item], key=f"failures_fix_{item}")


def show_confused_pairs(folder: Path) -> None:
    table = confused_pairs(folder)
    if len(table) == 0:
        st.info("Every query's best match shows its own product: no confused pairs.")
        return
    st.caption("Query product vs the product of its best match, over the failures; pick a pair to see its queries.")
    shown = table.assign(share_of_queries=table["share_of_queries"])
    event = st.dataframe(shown, hide_index=True, key="pairs_table", on_select="rerun", selection_mode="single-row",
                         column_config={"mean_score": st.column_config.NumberColumn("mean score", format="%.3f"),
                                        "share_of_queries": st.column_config.NumberColumn(
                                            "share of the product's queries", format="%.3f")})
    st.download_button("Download pairs CSV", table.to_csv(index=False, float_format="%.3f"),
                       f"confused-pairs-{folder.name}.csv", "text/csv", icon=":material/download:", key="pairs_csv")
    labels = [pair_label(a, b) for a, b in table[["query_product", "matched_product"]].itertuples(index=False)]
    selected = getattr(getattr(event, "selection", None), "rows", None) or []
    if selected:
        st.session_state["pairs_pick"] = labels[selected[0]]
    pick = st.selectbox("Open pair", labels, key="pairs_pick")
    pairs = failure_pairs(folder)
    rows = pairs["row"][[pair_label(a, b) == pick for a, b in zip(pairs["query_product"], pairs["matched_product"])]]
    for query in rows[:6]:
        with st.container(border=True):
            query_row(folder, int(query))


def open_map_item(folder: Path, row: int) -> None:
    """An item opened on the embedding map, with its nearest neighbours as in the galleries."""
    if row not in set(neighbours(folder)[0].tolist()):
        st.info("This item is not among the sampled queries of this large catalog.")
        return
    with st.container(border=True):
        query_row(folder, row)


@st.cache_resource(max_entries=4, show_spinner="Checking the catalog's hygiene…")
def _hygiene(folder: str, stamp: str) -> HygieneReport:
    return hygiene_report(ui.load_catalog(folder))


SERVER_PATH_COLUMNS = ("path", "image_path")  # shown to catalog managers only


def without_server_paths(table: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns that name files on the server (what everyone may see)."""
    return table.drop(columns=[c for c in SERVER_PATH_COLUMNS if c in table])


def with_thumbnails(table: pd.DataFrame, items: pd.DataFrame, limit: int) -> pd.DataFrame:
    shown = table.head(limit).copy()
    if "id" in shown and "image_path" in items:
        paths = items.set_index("id")["image_path"]
        shown.insert(0, "photo", [thumbnail_url(paths[i]) for i in shown["id"]])
    return shown


def show_hygiene(folder: Path, manager: bool, editable: bool) -> None:
    """The three reports; server paths only for a catalog manager; rows chosen in a table can be
    fixed where the page serves this catalog to a manager (app.item_actions)."""
    try:
        report = _hygiene(str(folder), ui.catalog_stamp(folder))
    except HygieneError as exc:
        st.info(str(exc))
        return
    items = ui.catalog_items(ui.load_catalog(folder))
    cli = (f" The same reports from the command line: `python -m index hygiene --catalog {folder} --out "
           f"reports/{folder.name}-hygiene`." if manager else "")
    st.caption(report.summary() + "." + cli)
    if manager and not editable:
        st.caption("Items can be fixed here in the catalog the app serves; this is another catalog.")
    elif editable:
        st.caption("Choose rows of a table (the boxes on the left) to re-categorise, tag or remove those items.")
    limit = st.number_input("Rows shown per table", 10, 1000, 50, step=10, key="hygiene_rows")
    photo = {"photo": st.column_config.ImageColumn("photo", width="small")}
    three = {c: st.column_config.NumberColumn(c, format="%.3f")
             for c in ("similarity", "share", "support", "odd_share", "worst_own", "worst_other")}
    for title, name, table, note in (
            ("Likely mis-categorised items", "miscategorised", report.miscategorised,
             "Items whose nearest neighbours mostly carry another category, most certain first."),
            ("Near-duplicate listings", "duplicates", report.duplicates,
             f"Groups of linked items ({duplicate_rule(report.facts)}), most alike first."),
            ("Products whose photos disagree", "products", report.products,
             "Products ranked by the share of their photos that look more like another product.")):
        st.subheader(title)
        st.caption(f"{note} {len(table):,} rows.")
        if len(table) == 0:
            st.info("None found.")
            continue
        if not manager:
            table = without_server_paths(table)
        shown = with_thumbnails(table, items, int(limit)) if name != "products" else table.head(int(limit))
        chosen = {"on_select": "rerun", "selection_mode": "multi-row"} if editable else {}
        event = st.dataframe(shown, hide_index=True, column_config={**photo, **three}, key=f"hygiene_{name}",
                             **chosen)
        if editable:
            item_actions(folder, selected_ids(event, shown, "id" if name != "products" else "worst_id"),
                         key=f"hygiene_{name}_fix")
        st.download_button(f"Download {name} CSV", table.to_csv(index=False, float_format="%.3f"),
                           f"{folder.name}-{name}.csv", "text/csv", icon=":material/download:",
                           key=f"hygiene_{name}_csv")


def model_line(folder: Path) -> tuple[str, str]:
    info = ui.load_catalog(folder).info
    return Path(str(info.model_path or "unknown model")).name, str(info.model_fingerprint or "")


def show_compare(folder_a: Path, folder_b: Path) -> None:
    items_a, items_b = (ui.catalog_items(ui.load_catalog(f)) for f in (folder_a, folder_b))
    if list(items_a["path"].astype(str)) != list(items_b["path"].astype(str)):
        st.warning("These two catalogs don't hold the same images in the same order, so their results can't be "
                   "compared query by query. Build both from the same manifest.")
        return
    rep_a, rep_b = report(folder_a), report(folder_b)
    a, b = folder_a.name, folder_b.name
    (name_a, print_a), (name_b, print_b) = model_line(folder_a), model_line(folder_b)
    st.caption(f"**{a}**: model `{name_a}` · fingerprint `{print_a}`  \n**{b}**: model `{name_b}` · "
               f"fingerprint `{print_b}`")
    if print_a == print_b:
        st.warning(f"Both catalogs were built with the same model (fingerprint `{print_a}`): any difference comes "
                   "from the catalogs, not the models.", icon=":material/warning:")
    compared = paired_comparison(rep_a, rep_b)
    overall = compared.rename(columns={"a": a, "b": b}).assign(k=[f"R@{k}" for k in compared["k"]])
    overall["verdict"] = [f"{b} {difference_words(lo, hi)}" if difference_words(lo, hi) != "no clear difference"
                          else "no clear difference" for lo, hi in zip(compared["difference_low"],
                                                                      compared["difference_high"])]

    def interval(name: str) -> list[str]:
        return [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(compared[f"{name}_low"], compared[f"{name}_high"])]
    shown = pd.DataFrame({"k": overall["k"], a: overall[a], f"{a} 95% interval": interval("a"), b: overall[b],
                          f"{b} 95% interval": interval("b"), "difference": overall["difference"],
                          "difference 95% interval": interval("difference"), "verdict": overall["verdict"]})
    overall = overall.rename(columns={"a_low": f"{a}_low", "a_high": f"{a}_high", "b_low": f"{b}_low",
                                      "b_high": f"{b}_high"})
    st.caption(f"Intervals: the bootstrap over the {rep_a.num_queries:,} queries ({BOOTSTRAP_SAMPLES:,} samples; "
               f"paired: both models read on the same resampled queries); `difference` is {b} minus {a}.")
    table_col, chart_col = st.columns(2)
    three = {c: st.column_config.NumberColumn(c, format="%.3f") for c in (a, b, "difference")}
    table_col.dataframe(shown, hide_index=True, column_config=three, key="compare_table")
    chart = overall.melt("k", [a, b], var_name="catalog", value_name="recall")
    with chart_col:  # legend in the table's order (a, b); a zoomed axis so the differences show
        st.altair_chart(alt.Chart(chart).mark_line(point=True).encode(
            x=alt.X("k:N", sort=list(overall["k"])), y=alt.Y("recall:Q", scale=alt.Scale(zero=False), title="Recall@k"),
            color=alt.Color("catalog:N", sort=[a, b], scale=alt.Scale(domain=[a, b])),
            tooltip=["catalog", "k", alt.Tooltip("recall:Q", format=".3f")]).properties(height=280),
            width="stretch")
    table_col.download_button("Download comparison CSV", overall.to_csv(index=False, float_format="%.3f"),
                              f"recall-{a}-vs-{b}.csv", "text/csv", icon=":material/download:", key="compare_csv")
    cols = st.columns(2)
    for column, folder in zip(cols, (folder_a, folder_b)):
        with column, st.expander(f"Per category: {folder.name}"):
            rep = report(folder)
            st.dataframe(recall_table(rep), hide_index=True, column_config=three_decimals(rep))

    st.subheader("Same queries, both models")
    queries, right_a = top1_correct(folder_a)
    _, right_b = top1_correct(folder_b)
    choices = {f"Only {b} is right": right_b & ~right_a, f"Only {a} is right": right_a & ~right_b,
               "Both wrong": ~right_a & ~right_b, "All queries": np.ones(len(queries), bool)}
    left, right = st.columns([2, 1])
    first = next(i for i, n in enumerate(choices) if choices[n].any())  # never open on an empty view
    which = left.selectbox("Queries", list(choices), index=first,
                           format_func=lambda n: f"{n} ({choices[n].sum():,})", key="compare_queries")
    limit = right.number_input("Show", 1, 100, 8, key="compare_limit")
    for query in queries[choices[which]][:limit]:
        with st.container(border=True):
            query_row(folder_a, int(query), other=folder_b)


def page() -> None:
    st.title("Retrieval quality")
    cfg = ui.settings()
    manager = is_catalog_manager()
    last_outcome()
    catalogs = ui.list_catalogs(cfg.catalogs_dir)
    if ui.catalog_stamp(cfg.catalog) is not None and cfg.catalog not in catalogs:
        catalogs.insert(0, cfg.catalog)
    if not catalogs:
        where = f" in `{cfg.catalogs_dir}`" if manager else ""
        st.info(f"No catalogs found{where}. Build one on the **Catalog** page.")
        return
    default = catalogs.index(cfg.catalog) if cfg.catalog in catalogs else 0
    folder = st.selectbox("Catalog", catalogs, index=default, format_func=lambda p: p.name, key="quality_catalog")
    if not has_products(folder):
        st.info("This catalog's metadata has no `product_id` column, so there is no way to tell whether a match "
                "shows the same product: Recall@k needs it. Add `product_id` to the manifest and rebuild.",
                icon=":material/info:")
        return
    report_tab, failures_tab, pairs_tab, map_tab, hygiene_tab, compare_tab = st.tabs(
        ["Recall@k", "Failure gallery", "Confused pairs", "Embedding map", "Hygiene", "Compare models"])
    with report_tab:
        show_report(folder, key="report")
        show_shopper_recall(folder, cfg)
    editable = manager and folder.resolve() == cfg.catalog.resolve()
    with failures_tab:
        show_failures(folder, editable)
    with pairs_tab:
        show_confused_pairs(folder)
    with map_tab:
        show_map(folder, open_map_item, editable)
    with hygiene_tab:
        show_hygiene(folder, manager, editable)
    with compare_tab:
        others = [c for c in catalogs if c != folder and has_products(c)]
        if not others:
            how = " (below)" if manager else ""
            st.info(f"Build a second catalog from the same manifest with another model{how} to compare the two "
                    "models here.")
        else:
            compared_default(others)
            other = st.selectbox(f"Compare **{folder.name}** with", others, format_func=lambda p: p.name,
                                 key="compare_other")
            show_compare(folder, other)
        if manager:
            if others:
                show_serving(other, cfg)
            show_model_build(folder, cfg)


page()
