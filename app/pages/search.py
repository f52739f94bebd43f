"""Search (shoppers): a product photo or a catalog item in, the most similar catalog items out.

A photo is checked (blank, uniform or tiny photos get a message instead of results), its product
found automatically and shown in a crop box the shopper can move; the page shows what the model
sees, the category it predicts, and a notice when even the best match scores lower than real
matches do in this catalog.

Results are cards (picture, two lines, details on demand); a card's *Search from this* searches
from that item, and *Back* returns to the query before (photos included). The options sit in an
expander above the results, so they stay in reach on a phone: one result per product, filters on
any metadata column (OR within a column, AND across columns), near-duplicate hiding that says
what it hid. A catalog item is picked by browsing the catalog (app.browse) or by its id.

Each search is bounded as the HTTP API's are (app/limits.py) and runs once per query: a rerun that
changes neither the query, its box nor the options shows the results it already has, and every
search is logged (logger `app.search`). On a narrow screen the results come first, above the photo.
"""
from __future__ import annotations

import hashlib
import logging
import random
import time

import pandas as pd
import streamlit as st

from app import components as ui
from app.browse import browse_grid, filter_columns
from app.item_actions import item_actions, last_outcome
from app.limits import MAX_K, search_bounds
from app.roles import is_catalog_manager
from embedder.images import ACCEPTED_FORMATS, ImageError, decode_image
from index.search.filters import Condition, MetadataFilter, as_text
from index.search.service import CatalogItem, Results, UnusablePhotoError, object_regions
from index.catalog.store import CatalogError

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif", "avif"]  # HEIC: iPhones' camera format
GROUP_COLUMN = "product_id"
HISTORY_KEY, CURRENT_KEY, BACK_PHOTO_KEY = "search_history", "search_current", "search_back_photo"
HISTORY_LENGTH = 10  # earlier queries kept for *Back* (a photo's bytes included)
RESULT_COLUMNS = 2  # cards per row: pictures of about 210 px in the results column at 1440 px
LAST_SEARCH_KEY = "search_last"  # (what was searched, its results, seconds): reruns reuse it
PAGE_K = min(50, MAX_K)
log = logging.getLogger("app.search")
# Below Streamlit's 640 px breakpoint the columns stack: put the query's column (the one holding the
# keyed query block; the result cards' own columns do not) after the results, so a phone's first
# screen shows the best matches.
NARROW_LAYOUT_CSS = """<style>
@media (max-width: 640px) {
  [data-testid="stColumn"]:has(.st-key-search_query) { order: 1; }
}
</style>"""


def options(categories: list[str], items: pd.DataFrame) -> dict:
    """The search options, in an expander above the results (a collapsed sidebar would hide them on a phone)."""
    with st.expander("Search options", icon=":material/tune:"):
        left, right = st.columns(2)
        with left:
            k = st.slider("Number of results", 1, PAGE_K, 10, key="search_k")
            category = st.selectbox("Category", ["All categories", *categories], key="search_category")
            group = st.toggle("One result per product", key="search_group", disabled=GROUP_COLUMN not in items,
                              help="Show each product once, by its best-matching photo, and still as many products "
                                   "as asked for.")
            expression = filter_controls(items)
            mirror = st.toggle("Match either facing", value=True, key="search_mirror",
                               help="Also search the photo as its mirror image, so a shoe photographed facing the "
                                    "other way from the catalog's is found.")
        with right:
            hide = st.toggle("Hide near-duplicates", key="search_hide_duplicates",
                             help="Leave out matches that are almost the same image as a better one shown.")
            threshold = st.slider("Near-duplicate above similarity", 0.90, 1.0, 0.98, 0.005,
                                  key="search_dup_threshold", disabled=not hide)
            why = st.toggle("Why it matched", key="search_why",
                            help="Overlay where the model looks (attention of its last feature map).")
            min_score = st.slider("Leave out results below score", 0.0, 1.0, 0.0, 0.01, key="search_min_score",
                                  help="Results scoring lower than this (cosine similarity) are not shown; "
                                       "0 shows all.")
    return {"k": k, "category": None if category == "All categories" else category,
            "hide_duplicates_above": threshold if hide else None, "why": why,
            "min_score": min_score if min_score > 0 else None,
            "group_by": GROUP_COLUMN if group and GROUP_COLUMN in items else None, "filter": expression,
            "mirror": mirror}


def filter_controls(items: pd.DataFrame) -> str | None:
    """Filters on metadata columns: any of the values picked in a column, all the columns picked.
    Returns the filter in the search's syntax (index.search.filters), or None."""
    columns = filter_columns(items)
    if not columns:
        return None
    chosen = st.multiselect("Filter on", columns, key="search_filter_columns", format_func=ui.column_label,
                            placeholder="Choose metadata columns")
    conditions = []
    for column in chosen:
        values = sorted(v for v in as_text(items[column]).unique() if v != "")
        picked = st.multiselect(f"{ui.column_label(column)}: any of", values, key=f"search_filter_{column}")
        if picked:
            conditions.append(Condition(column, frozenset(picked)))
    if not conditions:
        return None
    expression = str(MetadataFilter(tuple(conditions)))
    st.caption(f"Filter: `{expression}`")
    return expression


# ---------------------------------------------------------------- the query and its history

def remember(query: tuple) -> None:
    """Put the query shown now on the history, for *Back*."""
    history = st.session_state.setdefault(HISTORY_KEY, [])
    if query is not None and (not history or history[-1] != query):
        history.append(query)
        del history[:-HISTORY_LENGTH]


def search_from(item: int) -> None:
    """A result's *Search from this*: that catalog item becomes the query."""
    remember(st.session_state.get(CURRENT_KEY))
    st.session_state["search_mode"] = "Pick a catalog item"
    st.session_state["search_item"] = int(item)


def go_back() -> None:
    history = st.session_state.get(HISTORY_KEY) or []
    if not history:
        return
    earlier = history.pop()
    if earlier[0] == "item":
        st.session_state["search_mode"] = "Pick a catalog item"
        st.session_state["search_item"] = earlier[1]
    else:
        st.session_state["search_mode"] = "Upload a photo"
        st.session_state[BACK_PHOTO_KEY] = (earlier[1], earlier[2])


def describe(query: tuple) -> str:
    return f"photo {query[1]}" if query[0] == "photo" else f"item {query[1]}"


def history_controls() -> None:
    history = st.session_state.get(HISTORY_KEY) or []
    if history:
        st.button(f"Back to {describe(history[-1])}", icon=":material/arrow_back:", key="search_back",
                  on_click=go_back, help="Earlier: " + " → ".join(describe(q) for q in history))


def browse_to_pick(items: pd.DataFrame) -> None:
    """A catalog item picked from a browsable, filterable grid becomes the query (before the id box is drawn)."""
    if not st.toggle("Browse the catalog to pick an item", key="search_browse_open",
                     help="Thumbnails of the catalog, filtered by category, metadata and text"):
        return  # drawn only when asked for: a page of thumbnails on every search would slow each one
    picked = browse_grid(items, key="search_browse", action="Search from this")
    if picked and picked[0] != st.session_state.get("search_item"):
        remember(st.session_state.get(CURRENT_KEY))
        st.session_state["search_item"] = picked[0]


def pick_random_item(ids: list) -> None:
    st.session_state["search_item"] = random.choice(ids)


def query_input(metadata: pd.DataFrame):
    """The query: ("photo", file name, bytes) or ("item", id, image path); None until there is one."""
    mode = st.radio("Query", ["Upload a photo", "Pick a catalog item"], horizontal=True,
                    key="search_mode", label_visibility="collapsed")
    if mode == "Upload a photo":
        upload = st.file_uploader(f"Product photo ({ACCEPTED_FORMATS})", type=UPLOAD_TYPES, key="search_upload")
        if upload is not None:
            st.session_state.pop(BACK_PHOTO_KEY, None)
            return "photo", upload.name, upload.getvalue()
        if BACK_PHOTO_KEY in st.session_state:  # *Back* to a photo: the uploader forgot it, the history did not
            name, data = st.session_state[BACK_PHOTO_KEY]
            st.caption(f"Searching with your earlier photo **{name}**; upload another to replace it.")
            return "photo", name, data
        return None
    ids = metadata["id"].tolist()
    if st.session_state.get("search_item") is None:
        st.session_state["search_item"] = ids[0]
    if len(ids) <= ui.PICKER_MAX_ITEMS:
        labels = dict(zip(ids, (f"{i} · {c} · {p.rsplit('/', 1)[-1]}" for i, c, p in
                                zip(ids, metadata.get("category", [""] * len(ids)), metadata["path"].astype(str)))))
        if st.session_state["search_item"] not in labels:
            st.session_state["search_item"] = ids[0]
        st.selectbox("Catalog item", ids, format_func=labels.get, key="search_item")
    else:
        st.number_input("Catalog item id", min_value=min(ids), max_value=max(ids), step=1, key="search_item")
    st.button("Random item", icon=":material/casino:", on_click=pick_random_item, args=(ids,))
    item = int(st.session_state["search_item"])
    rows = metadata.loc[metadata["id"] == item, "image_path"]
    if rows.empty:
        st.warning(f"There is no item {item} in the catalog (removed?). Pick another one.")
        return None
    return "item", item, rows.iloc[0]


def decoded(kind: str, name, source):
    """The query image, or None after telling the user why it can't be used."""
    try:
        return decode_image(source)
    except ImageError as exc:
        if kind == "photo":
            st.error(f"**{name}** can't be used as a search photo: {exc}. "
                     f"Please upload a {ACCEPTED_FORMATS} product photo.", icon=":material/broken_image:")
        else:
            st.error(f"The image of catalog item {name} can't be read: {exc}", icon=":material/broken_image:")
        return None


def photo_regions(name: str, image) -> list[tuple[int, int, int, int]] | None:
    """The automatic product region and the other things in the photo, or None after telling the
    shopper why the photo can't be searched."""
    try:
        return object_regions(image)
    except UnusablePhotoError as exc:
        st.error(f"**{name}** can't be searched: {exc}.", icon=":material/hide_image:")
        return None


def pick_object(regions: list, key: str) -> int:
    """Which of the things found in the photo to search (0: the automatic choice). Only asked when
    the photo holds more than one: a cluttered table may hold something the shopper did not mean."""
    if len(regions) < 2:
        return 0
    return st.radio("Things in your photo", range(len(regions)), key=key, horizontal=True,
                    format_func=lambda i: "The product found" if i == 0 else f"Thing {i + 1}",
                    help="The box starts on the thing most likely to be the product; pick another "
                         "if it chose the wrong one, or move the box yourself.")


def run_search(service, kind: str, value, image, opts: dict, box=None, source: bytes | None = None
               ) -> tuple[Results, float]:
    """The search for this query, box and options: run once (bounded as the API's), then reused by
    every rerun that changes none of them."""
    args = {"k": min(opts["k"], MAX_K), "category": opts["category"],
            "hide_duplicates_above": opts["hide_duplicates_above"], "min_score": opts["min_score"],
            "group_by": opts["group_by"], "metadata_filter": opts["filter"]}
    identity = hashlib.sha1(source).hexdigest() if kind == "photo" and source is not None else value
    asked = (id(service), kind, identity, box, opts["mirror"] if kind == "photo" else None, tuple(sorted(args.items())))
    last = st.session_state.get(LAST_SEARCH_KEY)
    if last is not None and last[0] == asked:
        return last[1], last[2]
    started = time.perf_counter()
    if kind == "photo":
        found = service.search(image, box=box, mirror=opts["mirror"], **args, **search_bounds())
    else:
        found = service.search(CatalogItem(value), **args, **search_bounds())
    seconds = time.perf_counter() - started
    log.info("search: %s %s box=%s k=%d -> %d results in %.0f ms%s", kind, value, list(box) if box else None,
             args["k"], len(found.frame), 1000 * seconds, f" (cut short: {found.cut_short['reason']})"
             if found.cut_short else "")
    st.session_state[LAST_SEARCH_KEY] = (asked, found, seconds)
    return found, seconds


def show_verdict(found: Results, opts: dict) -> None:
    """The predicted category, the weak-match notice and what the score threshold left out."""
    if found.category is not None and found.category.unlike_catalog:
        st.markdown("Predicted category: **not like anything this catalog sells**")
    elif found.category is not None:
        st.markdown(f"Predicted category: **{found.category.name}** ({found.category.probability:.0%} sure)")
    if found.confidence is not None and found.confidence.weak:
        st.warning(found.confidence.notice(), icon=":material/help:")
    if found.dropped:
        st.caption(f"{found.dropped} result(s) scoring below {opts['min_score']:.2f} left out "
                   "(*Leave out results below score* in the search options)")
    if found.filter_matches == 0:
        st.warning(f"No item matches the filter `{found.filter}`: pick other values or fewer columns in the "
                   "search options.", icon=":material/filter_alt_off:")
    if found.cut_short:
        limit = ("its time limit" if found.cut_short["reason"] == "time_budget"
                 else f"its limit of {found.cut_short['candidates']:,} candidates")
        st.caption(f"Fewer results than asked for: the search stopped at {limit}; the others were hidden as "
                   "near-duplicates, of products already shown, or outside the filter.")


def show_hidden(found: Results, opts: dict) -> None:
    """The near-duplicates the search left out, on demand."""
    if found.hidden is None or found.hidden.empty:
        return
    count = len(found.hidden)
    if st.toggle(f"{count} near-duplicate{'s' if count != 1 else ''} hidden — show", key="search_show_hidden"):
        st.caption(f"Each is almost the same image (similarity above {opts['hide_duplicates_above']:.3f}) as a "
                   "better result shown; the copy of your own photo hides none.")
        ui.result_grid(found.hidden, columns=RESULT_COLUMNS, search_from=search_from, key="search_hidden")


def fix_results(results: pd.DataFrame) -> None:
    """Catalog managers: re-categorise, tag or remove results where they are shown (app.item_actions,
    on the served catalog; Undo on the Catalog page). Nothing for a shopper."""
    if results.empty or "id" not in results or not is_catalog_manager():
        return
    ids = [int(i) for i in results["id"]]
    with st.expander("Fix results (catalog manager)", icon=":material/build:"):
        chosen = st.multiselect("Results to fix", ids, key="search_fix_ids",
                                format_func=lambda i: f"#{ids.index(i) + 1} · id {i}")
        item_actions(ui.settings().catalog, chosen, key="search_fix")


def page() -> None:
    st.title("Find similar products")
    last_outcome()  # of a fix made to a result (fix_results)
    try:
        service = ui.search_service()
    except Exception as exc:  # no catalog yet, missing model, model/catalog mismatch: say so, keep the app up
        st.error(f"Search is not available: {exc}", icon=":material/error:")
        st.info("Build or rebuild the catalog on the **Catalog** page, or start the app with the "
                "right `--catalog` / `--model` (see app/settings.py).")
        return
    metadata = service.catalog.metadata
    items = ui.catalog_items(service.catalog)
    categories = sorted(metadata["category"].dropna().astype(str).unique()) if "category" in metadata else []
    opts = options(categories, items)
    if st.session_state.get("search_mode") == "Pick a catalog item":
        browse_to_pick(items)

    st.markdown(NARROW_LAYOUT_CSS, unsafe_allow_html=True)
    # Half the width for the photo: its crop box as wide as the column, over 400 px on a desktop.
    query_column, results_column = st.columns(2, gap="medium")
    with query_column, st.container(key="search_query"):
        history_controls()
        query = query_input(metadata)
        st.session_state[CURRENT_KEY] = None if query is None else (
            ("photo", query[1], query[2]) if query[0] == "photo" else ("item", int(query[1])))
    with results_column:
        if query is None:
            st.info(f"Upload a product photo, or pick one of the {len(metadata):,} catalog items, "
                    "to see the most similar products.", icon=":material/image_search:")
            return
        kind, value, source = query
        image = decoded(kind, value, source)
        if image is None:
            return  # the page and its options stay as they are: the next upload just works
        regions = photo_regions(value, image) if kind == "photo" else None
        if kind == "photo" and regions is None:
            return
    box = None
    with query_column:
        if kind == "photo":  # the product's region, which the shopper may move or resize
            photo_key = hashlib.sha1(source).hexdigest()[:16]
            chosen = pick_object(regions, key=f"search_object_{photo_key}")
            box = ui.crop_box(image, regions[chosen], key=f"search_crop_{photo_key}_{chosen}")
            if box is None and chosen > 0:  # another thing than the automatic choice, as found
                box = regions[chosen]
    with results_column:
        heat = service.embedder.attention_map if opts["why"] else None
        try:
            found, seconds = run_search(service, kind, value, image, opts, box, source if kind == "photo" else None)
        except ImageError as exc:  # a region the shopper drew that holds nothing to search for
            st.error(f"**{value}** can't be searched: {exc}.", icon=":material/hide_image:")
            return
        except CatalogError as exc:  # e.g. an item or category that a catalog change just removed
            st.error(f"Search failed: {exc}", icon=":material/error:")
            return
        results = found.frame
        where = f" in {opts['category']}" if opts["category"] else ""
        what = "products" if opts["group_by"] else "matches"
        st.subheader(f"{len(results)} {what}{where}")
        show_verdict(found, opts)
        st.caption(f"Search took {seconds * 1000:.0f} ms over {len(metadata):,} items"
                   + (" · overlays show where the model looks" if heat else ""))
        if results.empty and found.filter_matches != 0:
            st.info("No matches: try another category, lower *Leave out results below score*, or turn off "
                    "*Hide near-duplicates*.")
        ui.result_grid(results, columns=RESULT_COLUMNS, heat=heat, search_from=search_from)
        show_hidden(found, opts)
        fix_results(results)
    with query_column:
        if kind == "photo":
            st.caption("Your photo: move the box, or resize it by a corner, around the product"
                       + (f" · searching {box[0]},{box[1]} – {box[2]},{box[3]} of {image.width} × {image.height} px"
                          if box else ""))
            if found.view is not None:
                ui.show_model_view(found.view)
        else:
            ui.show_image(image, heat)
            st.caption(f"Catalog item {value}")

page()
