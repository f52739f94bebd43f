"""Fix items where a page names them (hygiene tables, failure gallery, catalog browser): re-categorise,
tag or remove the chosen items, one or a whole selection at once. Catalog managers only (app.roles);
each action is a catalog operation (index.catalog.edit, index.catalog.operations.remove_from_catalog) committed as a
new version, so the Catalog page's Undo (or `python -m index restore`) takes it back.

The outcome of the last action is kept in session state and shown at the top of the next run.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import components as ui
from app.roles import is_catalog_manager
from index.catalog.edit import edit_catalog
from index.catalog.operations import UpdateReport, remove_from_catalog
from index.catalog.store import CatalogError

OUTCOME_KEY = "item_actions_outcome"
PENDING_KEY = "item_actions_pending_removal"
NEW_CATEGORY = "(new category…)"


def categories_of(folder: Path) -> list[str]:
    catalog = ui.load_catalog(folder)
    if catalog is None or "category" not in catalog.metadata:
        return []
    return sorted(catalog.metadata["category"].dropna().astype(str).unique())


def run_action(label: str, operation, *args, **kwargs) -> bool:
    """Run a catalog change; keep its outcome for the next run and rerun. False (and the error
    shown) when it was refused."""
    try:
        report: UpdateReport = operation(*args, **kwargs)
    except (CatalogError, ValueError, OSError) as exc:
        st.error(f"{label} failed: {exc}", icon=":material/error:")
        return False
    st.session_state[OUTCOME_KEY] = (f"{label}: {report.summary()}. Undo restores the version before it "
                                     "(Catalog page → Undo, or `python -m index restore`).")
    st.rerun()
    return True


def last_outcome() -> None:
    """The outcome of the last action, once."""
    outcome = st.session_state.pop(OUTCOME_KEY, None)
    if outcome:
        st.success(outcome, icon=":material/task_alt:")


def item_actions(folder: Path, ids: list[int], *, key: str, remove: bool = True) -> None:
    """Re-categorise, tag and (with `remove`) remove controls for the chosen item ids (nothing for a
    shopper)."""
    if not is_catalog_manager():
        return
    ids = sorted({int(i) for i in ids})
    chosen = f"{len(ids):,} chosen item{'s' * (len(ids) != 1)}"
    with st.container(border=True):
        st.caption(f"**Fix {chosen}**" + (f": ids {', '.join(map(str, ids[:12]))}" + (" …" if len(ids) > 12 else "")
                                          if ids else " (choose rows first)"))
        if not ids:
            return
        pending = st.session_state.get(PENDING_KEY)
        if pending and pending[0] == key:
            st.warning(f"Remove {chosen} from the catalog? Searches stop finding them; Undo restores them.",
                       icon=":material/delete:")
            yes, no, _ = st.columns([2, 2, 6])
            if yes.button("Confirm removal", type="primary", key=f"{key}_confirm_remove"):
                st.session_state.pop(PENDING_KEY, None)
                run_action(f"Removed {chosen}", remove_from_catalog, folder, ids=pending[1], progress=False)
            if no.button("Cancel", key=f"{key}_cancel_remove"):
                st.session_state.pop(PENDING_KEY, None)
                st.rerun()
            return
        left, middle, right = st.columns([3, 3, 2])
        with left:
            categories = categories_of(folder)
            picked = st.selectbox("Category", [*categories, NEW_CATEGORY], key=f"{key}_category")
            typed = st.text_input("New category", key=f"{key}_new_category") if picked == NEW_CATEGORY else picked
            if st.button("Re-categorise", icon=":material/label:", key=f"{key}_recategorise",
                         disabled=not (typed or "").strip()):
                run_action(f"Re-categorised {chosen} as {typed.strip()}", edit_catalog, folder, ids=ids,
                           values={"category": typed.strip()})
        with middle:
            tag = st.text_input("Tag", key=f"{key}_tag", placeholder="review, sale…")
            if st.button("Add tag", icon=":material/sell:", key=f"{key}_add_tag", disabled=not tag.strip()):
                run_action(f"Tagged {chosen} '{tag.strip()}'", edit_catalog, folder, ids=ids, tags=[tag.strip()])
        with right:
            st.write("")
            if remove and st.button("Remove", icon=":material/delete:", key=f"{key}_remove"):
                st.session_state[PENDING_KEY] = (key, ids)
                st.rerun()


def selected_ids(event, table, column: str = "id") -> list[int]:
    """The ids of the rows chosen in a st.dataframe drawn with on_select (none when nothing is)."""
    rows = getattr(getattr(event, "selection", None), "rows", None) or []
    if column not in table:
        return []
    return [int(table[column].iloc[r]) for r in rows if 0 <= r < len(table)]
