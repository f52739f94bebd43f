"""A paged thumbnail grid of catalog items: filter by category, by one metadata column's value and by
text over every metadata column; pick items with a checkbox each (the Catalog page removes them) or
one item with a button under it (a page that searches from a catalog item).

The selection lives in session state under `<key>_selected`, so it survives paging and filtering.
The filters, page size and page are also kept under `<key>_kept`: Streamlit forgets the state of a widget
that a run does not draw (a page that asks for a confirmation instead), and the kept values become the
widgets' state again when they are next drawn.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from app.components import thumbnail
from embedder.images import ImageError, decode_image

PAGE_SIZES = (12, 24, 48)
THUMB_SIDE = 160  # pixels: the grid's thumbnails
ANY = "(any)"
NOT_FILTERED = {"id", "path", "image_path", "category"}  # the category has its own filter; the rest are unique
MAX_FILTER_VALUES = 500  # a column with more distinct values is left to the text search


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    column: str | None = None
    value: str | None = None
    text: str = ""


def filter_items(items: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """The rows that match every filter given (text: case-insensitive, in any metadata column)."""
    keep = pd.Series(True, index=items.index)
    if filters.category is not None and "category" in items:
        keep &= items["category"].astype(str) == filters.category
    if filters.column is not None and filters.value is not None and filters.column in items:
        keep &= items[filters.column].astype(str) == filters.value
    text = filters.text.strip().lower()
    if text:
        searched = [c for c in items.columns if c != "image_path"]
        found = pd.Series(False, index=items.index)
        for column in searched:
            found |= items[column].astype(str).str.lower().str.contains(text, regex=False)
        keep &= found
    return items[keep]


def filter_columns(items: pd.DataFrame) -> list[str]:
    """Metadata columns worth a value filter: not ids or paths, and not too many distinct values."""
    return [c for c in items.columns
            if c not in NOT_FILTERED and 1 < items[c].nunique(dropna=True) <= MAX_FILTER_VALUES]


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_png(path: str, mtime_ns: int, side: int = THUMB_SIDE) -> bytes | None:
    """A thumbnail as PNG bytes (cached per file version), or None when the file cannot be read."""
    try:
        image = thumbnail(decode_image(path), side)
    except ImageError:
        return None
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def file_mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _restore(widget_key: str, kept_key: str, allowed=None) -> None:
    """Give a widget whose state Streamlit dropped its kept value back (when that is still a choice)."""
    kept = st.session_state.get(kept_key, {})
    if widget_key not in st.session_state and widget_key in kept and (allowed is None or kept[widget_key] in allowed):
        st.session_state[widget_key] = kept[widget_key]


def _keep(widget_key: str, kept_key: str) -> None:
    st.session_state.setdefault(kept_key, {})[widget_key] = st.session_state.get(widget_key)


def _kept_selectbox(where, label: str, options: list, widget_key: str, kept_key: str, **kwargs):
    _restore(widget_key, kept_key, options)
    chosen = where.selectbox(label, options, key=widget_key, **kwargs)
    _keep(widget_key, kept_key)
    return chosen


def filter_controls(items: pd.DataFrame, key: str) -> Filters:
    kept_key = f"{key}_kept"
    left, middle, right, text_col = st.columns([2, 2, 2, 3])
    category = None
    if "category" in items:
        categories = sorted(items["category"].dropna().astype(str).unique())
        chosen = _kept_selectbox(left, "Category", [ANY, *categories], f"{key}_category", kept_key)
        category = None if chosen == ANY else chosen
    column, value = None, None
    columns = filter_columns(items)
    if columns:
        column_choice = _kept_selectbox(middle, "Metadata", [ANY, *columns], f"{key}_column", kept_key,
                                        format_func=lambda c: c if c == ANY else c.replace("_", " "))
        if column_choice != ANY:
            values = sorted(items[column_choice].dropna().astype(str).unique())
            picked = _kept_selectbox(right, "Value", [ANY, *values], f"{key}_value", kept_key)
            column, value = column_choice, (None if picked == ANY else picked)
        else:  # no column, no value: the next column chosen starts from (any)
            st.session_state.get(kept_key, {}).pop(f"{key}_value", None)
    _restore(f"{key}_text", kept_key)
    text = text_col.text_input("Search the metadata", key=f"{key}_text", placeholder="product id, file name, colour…")
    _keep(f"{key}_text", kept_key)
    return Filters(category, column, value, text)


def _card_caption(row: pd.Series) -> str:
    lines = [f"**{row['category']}**" if "category" in row and pd.notna(row["category"]) else ""]
    if "product_id" in row and pd.notna(row["product_id"]):
        lines[0] += f" · product {row['product_id']}"
    lines.append(f"id `{row['id']}` · {Path(str(row['path'])).name}")
    return "  \n".join(line for line in lines if line)


def _toggle(selected_key: str, item: int, widget_key: str) -> None:
    selected: set = st.session_state[selected_key]
    if st.session_state[widget_key]:
        selected.add(item)
    else:
        selected.discard(item)


def selected_ids(key: str) -> list[int]:
    return sorted(st.session_state.get(f"{key}_selected", set()))


CATALOG_BROWSER = "catalog_browse"  # the Catalog page's browser (its selection is what its actions act on)


def select_items(key: str, ids) -> None:
    """Make `ids` the browser's selection (the embedding map's box selection, say); its checkboxes are
    drawn again from it."""
    clear_selection(key)
    st.session_state[f"{key}_selected"] = {int(i) for i in ids}


def clear_selection(key: str) -> None:
    st.session_state[f"{key}_selected"] = set()
    for name in [k for k in st.session_state if str(k).startswith(f"{key}_pick_")]:
        del st.session_state[name]


def browse_grid(items: pd.DataFrame, *, key: str, columns: int = 6, action: str | None = None) -> list[int]:
    """Draw the filters and one page of the grid.

    Without `action`: a checkbox under each item; returns every selected id (all pages).
    With `action` (a button label): a button under each item; returns [id] of the one clicked, else [].
    """
    selected_key = f"{key}_selected"
    st.session_state.setdefault(selected_key, set())
    shown = filter_items(items, filter_controls(items, key))
    count_col, size_col, page_col = st.columns([4, 1, 1])
    kept_key, size_key = f"{key}_kept", f"{key}_page_size"
    st.session_state.setdefault(kept_key, {}).setdefault(size_key, PAGE_SIZES[1])
    page_size = _kept_selectbox(size_col, "Per page", list(PAGE_SIZES), size_key, kept_key)
    pages = max(1, math.ceil(len(shown) / page_size))
    page_key = f"{key}_page"
    _restore(page_key, kept_key)
    if st.session_state.get(page_key, 1) > pages:  # the filters shrank the list below the page shown
        st.session_state[page_key] = pages
    page = page_col.number_input("Page", min_value=1, max_value=pages, step=1, key=page_key)
    _keep(page_key, kept_key)
    count_col.caption(f"{len(shown):,} of {len(items):,} items match · page {page} of {pages}"
                      + (f" · **{len(st.session_state[selected_key]):,} selected**" if action is None else ""))
    if action is None:
        select_all, clear, _ = st.columns([2, 2, 6])
        if select_all.button(f"Select all {len(shown):,} matching", key=f"{key}_select_all",
                             disabled=len(shown) == 0):
            st.session_state[selected_key] |= set(int(i) for i in shown["id"])
            for name in [k for k in st.session_state if str(k).startswith(f"{key}_pick_")]:
                del st.session_state[name]  # the checkboxes are drawn again from the selection
        if clear.button("Clear selection", key=f"{key}_clear", disabled=not st.session_state[selected_key]):
            clear_selection(key)
    if shown.empty:
        st.info("No item matches these filters.", icon=":material/filter_alt_off:")
        return selected_ids(key) if action is None else []

    rows = shown.iloc[(page - 1) * page_size: page * page_size]
    clicked: list[int] = []
    for start in range(0, len(rows), columns):
        for column, (_, row) in zip(st.columns(columns), rows.iloc[start:start + columns].iterrows()):
            item = int(row["id"])
            with column.container(border=True):
                png = thumbnail_png(str(row["image_path"]), file_mtime(str(row["image_path"])))
                if png is None:
                    st.caption(":orange[image unavailable]")
                else:
                    st.image(png, width="stretch")
                st.caption(_card_caption(row))
                if action is None:
                    widget_key = f"{key}_pick_{item}"
                    st.checkbox("Select", value=item in st.session_state[selected_key], key=widget_key,
                                on_change=_toggle, args=(selected_key, item, widget_key))
                elif st.button(action, key=f"{key}_use_{item}"):
                    clicked = [item]
    return selected_ids(key) if action is None else clicked
