"""Search (shoppers): a product photo or a catalog item in, the most similar catalog items out.

A photo is checked (blank, uniform or tiny photos get a message instead of results), its product
found automatically and shown in a crop box the shopper can move; the page shows what the model
sees, the category it predicts, and a notice when even the best match scores lower than real
matches do in this catalog.
"""
from __future__ import annotations

import hashlib
import random
import time

import pandas as pd
import streamlit as st

from app import components as ui
from embedder.images import ImageError, decode_image
from index.service import CatalogItem, Results, UnusablePhotoError, product_region
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
        min_score = st.slider("Leave out results below score", 0.0, 1.0, 0.0, 0.01, key="search_min_score",
                              help="Results scoring lower than this (cosine similarity) are not shown; 0 shows all.")
    return {"k": k, "category": None if category == "All categories" else category,
            "hide_duplicates_above": threshold if hide else None, "why": why,
            "min_score": min_score if min_score > 0 else None}


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


def photo_region(name: str, image) -> tuple[int, int, int, int] | None:
    """The automatic product region, or None after telling the shopper why the photo can't be searched."""
    try:
        return product_region(image)
    except UnusablePhotoError as exc:
        st.error(f"**{name}** can't be searched: {exc}.", icon=":material/hide_image:")
        return None


def run_search(service, kind: str, value, image, opts: dict, box=None) -> tuple[Results, float]:
    args = {"k": opts["k"], "category": opts["category"], "hide_duplicates_above": opts["hide_duplicates_above"],
            "min_score": opts["min_score"]}
    started = time.perf_counter()
    if kind == "photo":
        found = service.search(image, box=box, **args)
    else:
        found = service.search(CatalogItem(value), **args)
    return found, time.perf_counter() - started


def show_verdict(found: Results, opts: dict) -> None:
    """The predicted category, the weak-match notice and what the score threshold left out."""
    if found.category is not None:
        st.markdown(f"Predicted category: **{found.category.name}** ({found.category.probability:.0%} sure)")
    if found.confidence is not None and found.confidence.weak:
        st.warning(found.confidence.notice(), icon=":material/help:")
    if found.dropped:
        st.caption(f"{found.dropped} result(s) scoring below {opts['min_score']:.2f} left out "
                   "(*Leave out results below score* in the sidebar)")


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

    query_column, results_column = st.columns([2, 5], gap="large")
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
        region = photo_region(value, image) if kind == "photo" else None
        if kind == "photo" and region is None:
            return
    box = None
    with query_column:
        if kind == "photo":  # the product's region, which the shopper may move or resize
            box = ui.crop_box(image, region, key=f"search_crop_{hashlib.sha1(source).hexdigest()[:16]}")
    with results_column:
        heat = service.embedder.attention_map if opts["why"] else None
        try:
            found, seconds = run_search(service, kind, value, image, opts, box)
        except ImageError as exc:  # a region the shopper drew that holds nothing to search for
            st.error(f"**{value}** can't be searched: {exc}.", icon=":material/hide_image:")
            return
        except CatalogError as exc:  # e.g. an item or category that a catalog change just removed
            st.error(f"Search failed: {exc}", icon=":material/error:")
            return
        results = found.frame
        where = f" in {opts['category']}" if opts["category"] else ""
        st.subheader(f"{len(results)} matches{where}")
        show_verdict(found, opts)
        st.caption(f"Search took {seconds * 1000:.0f} ms over {len(metadata):,} items"
                   + (" · overlays show where the model looks" if heat else ""))
        if results.empty:
            st.info("No matches: try another category, lower *Leave out results below score*, or turn off "
                    "*Hide near-duplicates*.")
        ui.result_grid(results, columns=5, heat=heat)
    with query_column:
        if kind == "photo":
            st.caption("Your photo: move or resize the box around the product")
            if found.view is not None:
                ui.show_model_view(found.view)
        else:
            ui.show_image(image, heat)
            st.caption(f"Catalog item {value}")

page()
