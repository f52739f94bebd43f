"""Search (shoppers): a product photo or a catalog item in, the most similar catalog items out."""
from __future__ import annotations

import random
import time

import pandas as pd
import streamlit as st

from app import components as ui
from embedder.images import ImageError, decode_image
from index.service import CatalogItem
from index.store import CatalogError

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp"]


def options(categories: list[str]) -> dict:
    """The search options, in the sidebar."""
    with st.sidebar:
        st.subheader("Search options")
        k = st.slider("Number of results", 1, 50, 10, key="search_k")
        category = st.selectbox("Category", ["All categories", *categories], key="search_category")
        hide = st.toggle("Hide near-duplicates", key="search_hide_duplicates",
                         help="Leave out matches that are almost the same image as a better one.")
        threshold = st.slider("Near-duplicate above similarity", 0.90, 1.0, 0.98, 0.005, key="search_dup_threshold",
                              disabled=not hide)
        why = st.toggle("Why it matched", key="search_why",
                        help="Overlay where the model looks (attention of its last feature map).")
    return {"k": k, "category": None if category == "All categories" else category,
            "hide_duplicates_above": threshold if hide else None, "why": why}


def pick_random_item(ids: list) -> None:
    st.session_state["search_item"] = random.choice(ids)


def query_input(metadata: pd.DataFrame):
    """The query: ("photo", file name, bytes) or ("item", id, image path); None until there is one."""
    mode = st.radio("Query", ["Upload a photo", "Pick a catalog item"], horizontal=True,
                    key="search_mode", label_visibility="collapsed")
    if mode == "Upload a photo":
        upload = st.file_uploader("Product photo (JPEG, PNG or WebP)", type=UPLOAD_TYPES, key="search_upload")
        return None if upload is None else ("photo", upload.name, upload.getvalue())
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
                     "Please upload a JPEG, PNG or WebP product photo.", icon=":material/broken_image:")
        else:
            st.error(f"The image of catalog item {name} can't be read: {exc}", icon=":material/broken_image:")
        return None


def run_search(service, kind: str, value, image, opts: dict) -> tuple[pd.DataFrame, float]:
    args = {"k": opts["k"], "category": opts["category"], "hide_duplicates_above": opts["hide_duplicates_above"]}
    started = time.perf_counter()
    results = service.search(image if kind == "photo" else CatalogItem(value), **args).frame
    return results, time.perf_counter() - started


def page() -> None:
    st.title("Find similar products")
    try:
        service = ui.search_service()
    except Exception as exc:  # no catalog yet, missing model, model/catalog mismatch: say so, keep the app up
        st.error(f"Search is not available: {exc}", icon=":material/error:")
        st.info("Build or rebuild the catalog on the **Catalog** page, or start the app with the "
                "right `--catalog` / `--model` (see app/settings.py).")
        return
    metadata = service.catalog.metadata
    categories = sorted(metadata["category"].dropna().astype(str).unique()) if "category" in metadata else []
    opts = options(categories)

    query_column, results_column = st.columns([1, 3], gap="large")
    with query_column:
        query = query_input(metadata)
    with results_column:
        if query is None:
            st.info(f"Upload a product photo, or pick one of the {len(metadata):,} catalog items, "
                    "to see the most similar products.", icon=":material/image_search:")
            return
        kind, value, source = query
        image = decoded(kind, value, source)
        if image is None:
            return  # the page and its options stay as they are: the next upload just works
        heat = service.embedder.attention_map if opts["why"] else None
        try:
            results, seconds = run_search(service, kind, value, image, opts)
        except CatalogError as exc:  # e.g. an item or category that a catalog change just removed
            st.error(f"Search failed: {exc}", icon=":material/error:")
            return
        where = f" in {opts['category']}" if opts["category"] else ""
        st.subheader(f"{len(results)} matches{where}")
        st.caption(f"Search took {seconds * 1000:.0f} ms over {len(metadata):,} items"
                   + (" · overlays show where the model looks" if heat else ""))
        if results.empty:
            st.info("No matches: try another category or turn off *Hide near-duplicates*.")
        ui.result_grid(results, columns=5, heat=heat)
    with query_column:
        ui.show_image(image, heat)
        st.caption("Your photo" if kind == "photo" else f"Catalog item {value}")

page()
