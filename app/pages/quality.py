"""Quality (merchandisers): Recall@k of a catalog, its failures, and two models side by side.

Every number comes from index.evaluation (the product's one Recall@k): leave-one-out over the
catalog, an image counting as found when another image of its product_id is among its k
nearest neighbours.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import components as ui
from embedder.images import decode_image
from index.evaluation import DEFAULT_KS, RecallReport, nearest_neighbours

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


def percent_columns(rep: RecallReport) -> dict:
    return {f"R@{k}": st.column_config.NumberColumn(f"R@{k}", format="percent") for k in rep.overall}


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
    st.dataframe(recall_table(rep), hide_index=True, column_config=percent_columns(rep), key=f"{key}_table")
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
    a.download_button("Download CSV", recall_table(rep).to_csv(index=False), f"recall-{name}.csv", "text/csv",
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


def top1_correct(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, whether each query's best match shows the same product)."""
    products = ui.load_catalog(folder).metadata["product_id"].astype(str).to_numpy()
    queries, _, found = neighbours(folder)
    return queries, products[found[:, 0]] == products[queries]


def failures(folder: Path) -> np.ndarray:
    """Rows of the items whose best match is another product (among items whose product has another image)."""
    products = ui.load_catalog(folder).metadata["product_id"].astype(str)
    has_twin = products.map(products.value_counts()).to_numpy() > 1
    queries, correct = top1_correct(folder)
    return queries[~correct & has_twin[queries]]


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
            if other:
                st.caption(f"**{source.name}**")
            ui.result_strip(results_frame(source, query), same=lambda row: str(row["product_id"]) == product)


def show_failures(folder: Path) -> None:
    rows = failures(folder)
    items = ui.catalog_items(ui.load_catalog(folder))
    asked = len(neighbours(folder)[0])
    st.caption(f"{len(rows):,} of {asked:,} {'sampled ' if asked < len(items) else ''}items "
               f"({len(rows) / max(asked, 1):.1%}) have another product as their best match. "
               "Green frame ✓: same product; red frame ✗: another product.")
    categories = sorted(items["category"].astype(str).iloc[rows].unique()) if len(rows) else []
    left, right = st.columns([2, 1])
    category = left.selectbox("Category", ["All categories", *categories], key="failures_category")
    if category != "All categories":
        rows = rows[items["category"].astype(str).iloc[rows].to_numpy() == category]
    limit = right.number_input("Show", 1, 200, 12, key="failures_limit")
    for query in rows[:limit]:
        with st.container(border=True):
            query_row(folder, int(query))


def show_compare(folder_a: Path, folder_b: Path) -> None:
    items_a, items_b = (ui.catalog_items(ui.load_catalog(f)) for f in (folder_a, folder_b))
    if list(items_a["path"].astype(str)) != list(items_b["path"].astype(str)):
        st.warning("These two catalogs don't hold the same images in the same order, so their results can't be "
                   "compared query by query. Build both from the same manifest.")
        return
    rep_a, rep_b = report(folder_a), report(folder_b)
    a, b = folder_a.name, folder_b.name
    overall = pd.DataFrame({"k": [f"R@{k}" for k in rep_a.overall],
                            a: list(rep_a.overall.values()), b: list(rep_b.overall.values())})
    overall["difference"] = overall[b] - overall[a]
    table_col, chart_col = st.columns(2)
    percent = {c: st.column_config.NumberColumn(c, format="percent") for c in (a, b, "difference")}
    table_col.dataframe(overall, hide_index=True, column_config=percent, key="compare_table")
    chart = overall.melt("k", [a, b], var_name="catalog", value_name="recall")
    chart["k"] = pd.Categorical(chart["k"], categories=overall["k"], ordered=True)
    with chart_col:
        st.bar_chart(chart, x="k", y="recall", color="catalog", stack=False, y_label="Recall@k", height=280)
    table_col.download_button("Download comparison CSV", overall.to_csv(index=False), f"recall-{a}-vs-{b}.csv",
                              "text/csv", icon=":material/download:", key="compare_csv")
    cols = st.columns(2)
    for column, folder in zip(cols, (folder_a, folder_b)):
        with column, st.expander(f"Per category: {folder.name}"):
            rep = report(folder)
            st.dataframe(recall_table(rep), hide_index=True, column_config=percent_columns(rep))

    st.subheader("Same queries, both models")
    queries, right_a = top1_correct(folder_a)
    _, right_b = top1_correct(folder_b)
    choices = {f"Only {b} is right": right_b & ~right_a, f"Only {a} is right": right_a & ~right_b,
               "Both wrong": ~right_a & ~right_b, "All queries": np.ones(len(queries), bool)}
    left, right = st.columns([2, 1])
    which = left.selectbox("Queries", list(choices), format_func=lambda n: f"{n} ({choices[n].sum():,})",
                           key="compare_queries")
    limit = right.number_input("Show", 1, 100, 8, key="compare_limit")
    for query in queries[choices[which]][:limit]:
        with st.container(border=True):
            query_row(folder_a, int(query), other=folder_b)


def page() -> None:
    st.title("Retrieval quality")
    cfg = ui.settings()
    catalogs = ui.list_catalogs(cfg.catalogs_dir)
    if ui.catalog_stamp(cfg.catalog) is not None and cfg.catalog not in catalogs:
        catalogs.insert(0, cfg.catalog)
    if not catalogs:
        st.info(f"No catalogs found in `{cfg.catalogs_dir}`. Build one on the **Catalog** page.")
        return
    default = catalogs.index(cfg.catalog) if cfg.catalog in catalogs else 0
    folder = st.selectbox("Catalog", catalogs, index=default, format_func=lambda p: p.name, key="quality_catalog")
    if not has_products(folder):
        st.info("This catalog's metadata has no `product_id` column, so there is no way to tell whether a match "
                "shows the same product: Recall@k needs it. Add `product_id` to the manifest and rebuild.",
                icon=":material/info:")
        return
    report_tab, failures_tab, compare_tab = st.tabs(["Recall@k", "Failure gallery", "Compare models"])
    with report_tab:
        show_report(folder, key="report")
    with failures_tab:
        show_failures(folder)
    with compare_tab:
        others = [c for c in catalogs if c != folder and has_products(c)]
        if not others:
            st.info(f"Build a second catalog from the same manifest with another model into `{cfg.catalogs_dir}` "
                    "to compare the two models here.")
        else:
            other = st.selectbox(f"Compare **{folder.name}** with", others, format_func=lambda p: p.name,
                                 key="compare_other")
            show_compare(folder, other)


page()
