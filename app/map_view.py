"""The Quality page's embedding map: the catalog drawn in two dimensions (PCA of every vector, or
t-SNE of the points drawn, or UMAP where umap-learn is installed; app.embedding_map), hover for a photo, click to open an item, drag a box
to select several: listed for everyone, fixed there (app.item_actions) or selected in the Catalog
page's browser by a catalog manager on the served catalog.

Projections are computed once per catalog version and kept for every session. Opening an item is
the page's business (its galleries' nearest neighbours): the page passes `open_item`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import components as ui
from app.browse import CATALOG_BROWSER, select_items
from app.embedding_map import (UMAP_PACKAGE, in_box, map_chart, map_points, map_rows, pca_2d, tsne_2d, umap_2d,
                                umap_available)
from app.item_actions import item_actions

MAP_VIEWS = {"PCA": "principal axis", "t-SNE": "t-SNE axis", "UMAP": "UMAP axis"}


@st.cache_resource(max_entries=4, show_spinner="Projecting the catalog to two dimensions…")
def _projection(folder: str, stamp: str) -> np.ndarray:
    return pca_2d(ui.load_catalog(folder).embeddings)


@st.cache_resource(max_entries=4, show_spinner="Drawing the map's thumbnails…")
def _map_points(folder: str, stamp: str) -> pd.DataFrame:
    return map_points(ui.catalog_items(ui.load_catalog(folder)), _projection(folder, stamp))


@st.cache_resource(max_entries=4, show_spinner="Running t-SNE on the points drawn…")
def _tsne(folder: str, stamp: str) -> np.ndarray:
    embeddings = ui.load_catalog(folder).embeddings
    return tsne_2d(embeddings, map_rows(len(embeddings)))


@st.cache_resource(max_entries=4, show_spinner="Running UMAP on the points drawn…")
def _umap(folder: str, stamp: str) -> np.ndarray:
    embeddings = ui.load_catalog(folder).embeddings
    return umap_2d(embeddings, map_rows(len(embeddings)))


def map_of(folder: Path, view: str) -> pd.DataFrame:
    """The points drawn with their thumbnails, placed by PCA, t-SNE or UMAP."""
    stamp = ui.catalog_stamp(folder)
    points = _map_points(str(folder), stamp)
    if view in ("t-SNE", "UMAP"):
        xy = (_tsne if view == "t-SNE" else _umap)(str(folder), stamp)[map_rows(len(ui.load_catalog(folder)))]
        points = points.assign(x=xy[:, 0], y=xy[:, 1])
    return points


def show_map_selection(folder: Path, points: pd.DataFrame, event, editable: bool) -> None:
    """The items in the box dragged on the map: for a catalog manager on the served catalog, fixed
    here or selected in the Catalog page's browser."""
    ids = in_box(points, (getattr(event, "selection", None) or {}).get("area") or {})
    if not ids:
        st.caption("Drag a box over points to select the items inside it.")
        return
    st.caption(f"**{len(ids):,} items in the box**: ids {', '.join(map(str, ids[:20]))}"
               + (" …" if len(ids) > 20 else ""))
    if not editable:
        return
    if st.button(f"Select these {len(ids):,} in the Catalog browser", icon=":material/checklist:",
                 key="map_to_browser"):
        select_items(CATALOG_BROWSER, ids)
        st.switch_page("pages/catalog.py")
    item_actions(folder, ids, key="map_fix")


def show_map(folder: Path, open_item: Callable[[Path, int], None], editable: bool = False) -> None:
    """The map with its view and colour choices, the box selection, and the item opened by a click or
    by its id (`open_item(folder, row)` draws it)."""
    catalog = ui.load_catalog(folder)
    left, middle, right = st.columns([2, 1, 1])
    view = middle.radio("Map", list(MAP_VIEWS), horizontal=True, key="map_view")
    if view == "UMAP" and not umap_available():
        st.info(f"UMAP needs the optional package {UMAP_PACKAGE} (`pip install {UMAP_PACKAGE}` on the server, then "
                "restart the app); t-SNE is drawn instead.", icon=":material/info:")
        view = "t-SNE"
    points = map_of(folder, view)
    colours = [c for c in ("category", "product_id") if c in points]
    colour = left.radio("Colour by", colours, horizontal=True, key="map_colour") if colours else None
    sampled = f" ({len(points):,} drawn, a seeded sample)" if len(points) < len(catalog) else ""
    how = (f"PCA of all {len(catalog):,} vectors{sampled}" if view == "PCA" else
           f"{view} of the {len(points):,} points drawn{sampled and ' (a seeded sample)'}: neighbourhoods are kept, "
           "distances between clusters are not")
    st.caption(f"{how}. Hover a point for its photo; click it to open it; drag a box to select several.")
    event = st.altair_chart(map_chart(points, colour or "id", MAP_VIEWS[view]), key="map_chart", on_select="rerun",
                            width="stretch")
    show_map_selection(folder, points, event, editable)
    clicked = (getattr(event, "selection", None) or {}).get("item") or []
    if clicked and "id" in clicked[0]:
        st.session_state["map_item"] = int(clicked[0]["id"])
    item = right.number_input("Open item id", min_value=int(catalog.ids.min()), max_value=int(catalog.ids.max()),
                              value=None, step=1, key="map_item")
    if item is None:
        return
    try:
        row = int(catalog.rows_of([int(item)])[0])
    except ValueError as exc:
        st.warning(str(exc))
        return
    open_item(folder, row)
