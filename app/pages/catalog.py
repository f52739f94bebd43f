"""Catalog (catalog managers): what the served catalog holds, and changing it.

Every change goes through index.operations / index.add, which writes a complete new version before switching
to it: searches keep using the previous catalog until the change is complete, then the app
loads the new one (caches are keyed on the catalog's build time).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import components as ui
from app.roles import catalog_manager_gate
from app.settings import OutsideDataRootError, inside_data_root
from embedder.checkpoint import CheckpointError, load_checkpoint
from embedder.images import ImageError
from index.add import add_to_catalog
from index.operations import UpdateReport, build_catalog, rebuild_catalog, remove_from_catalog
from index.store import CatalogError, read_info
from index.manifest import ManifestError

USER_ERRORS = (CatalogError, ManifestError, CheckpointError, ImageError, FileNotFoundError, ValueError, OSError)
REPORT_KEY = "catalog_last_report"


@st.cache_data(max_entries=4, show_spinner=False)
def model_fingerprint(path: str, mtime_ns: int) -> str:
    return load_checkpoint(path)["fingerprint"]


def configured_fingerprint(model: Path) -> str | None:
    try:
        return model_fingerprint(str(model), model.stat().st_mtime_ns)
    except (OSError, CheckpointError):
        return None


def status(info: dict, model: Path) -> None:
    """The catalog's facts: size, categories, model, index (and why), when built, skipped files."""
    counts, index = info.get("counts", {}), info.get("index", {})
    categories = counts.get("categories", {})
    cols = st.columns(4)
    cols[0].metric("Items", f"{counts.get('items', 0):,}")
    cols[1].metric("Categories", f"{len(categories):,}")
    cols[2].metric("Index", index.get("factory", "?"))
    cols[3].metric("Skipped files", f"{len(info.get('skipped', [])):,}")

    fingerprint = configured_fingerprint(model)
    if fingerprint == info["model_fingerprint"]:
        st.success(f"Model `{model.name}` matches this catalog (fingerprint `{fingerprint}`).",
                   icon=":material/check_circle:")
    else:
        found = f"has fingerprint `{fingerprint}`" if fingerprint else "can't be read"
        st.warning(f"The app's model `{model}` {found}, but this catalog was built with "
                   f"`{info['model_fingerprint']}`: searches are refused until you **rebuild with re-embedding** "
                   "below (or start the app with the catalog's own model).", icon=":material/warning:")

    left, right = st.columns([3, 2], gap="large")
    with left:
        recall = index.get("recall_at_10")
        facts = {
            "Built": _when(info.get("built_at")),
            "First created": _when(info.get("created_at")),
            "Model checkpoint": info.get("model_path") or "not recorded",
            "Model fingerprint": info["model_fingerprint"],
            "Feature dimension": str(info.get("feature_dim")),
            "Precision": info.get("precision", "?"),
            "Manifest": info.get("manifest", "?"),
            "Image folder": info.get("root", "?"),
            "Index": index.get("factory", "?") + (f" · recall@10 vs exact {recall:.3f}" if recall is not None else ""),
            "Why this index": index.get("reason", ""),
            "Last change": _last_operation(info.get("last_operation")),
        }
        st.table(pd.DataFrame({"fact": list(facts), "value": list(facts.values())}), hide_index=True,
                 hide_header=True, border="horizontal")
    with right:
        if categories:
            st.markdown("**Items per category**")
            st.bar_chart(pd.Series(categories, name="items"), horizontal=True, height=max(160, 28 * len(categories)))
    skipped = info.get("skipped", [])
    with st.expander(f"Skipped files ({len(skipped):,})", expanded=False, icon=":material/block:"):
        if skipped:
            st.dataframe(pd.DataFrame(skipped), hide_index=True, key="status_skipped")
        else:
            st.write("None: every image in the catalog's manifest could be read.")


def _when(stamp: str | None) -> str:
    if not stamp:
        return "?"
    at = pd.Timestamp(stamp)
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _last_operation(op: dict | None) -> str:
    if not op:
        return "?"
    details = ", ".join(f"{k} {v}" for k, v in op.items() if k not in ("operation", "at"))
    return f"{op.get('operation')} at {_when(op.get('at'))}" + (f" ({details})" if details else "")


def run_operation(label: str, operation, *args, **kwargs) -> None:
    """Run a catalog change with a progress bar; keep its report for the next run, then reload."""
    try:
        with ui.catalog_progress(label) as progress:
            report: UpdateReport = operation(*args, progress=progress, **kwargs)
    except USER_ERRORS as exc:
        st.error(f"{label} failed: {exc}", icon=":material/error:")
        return
    st.session_state[REPORT_KEY] = report
    st.rerun()  # show the new status (the app now serves the new version)


def last_report() -> None:
    report: UpdateReport | None = st.session_state.get(REPORT_KEY)
    if report is None:
        return
    st.success(report.summary()[:1].upper() + report.summary()[1:], icon=":material/task_alt:")
    if report.skipped:
        st.warning(f"{len(report.skipped):,} files were skipped:", icon=":material/block:")
        st.dataframe(pd.DataFrame(report.skipped, columns=["path", "reason"]), hide_index=True, key="report_skipped")


def add_form(folder: Path, model: Path) -> None:
    with st.form("add_form"):
        source = st.text_input("Folder or manifest on the server", key="add_source",
                               placeholder="data/new-arrivals/  or  data/new-arrivals/manifest.csv",
                               help="A folder laid out as category/[product/]image files, or a .csv/.parquet "
                                    "manifest. Images must lie below the catalog's image folder.")
        submitted = st.form_submit_button("Add images", icon=":material/add_photo_alternate:", key="add_submit")
        if submitted and source.strip():
            path = confined(source.strip())
            if path is None:
                return
            where = {"images": path} if path.is_dir() else {"manifest": path}
            run_operation("Adding images", add_to_catalog, folder, model=model if model.is_file() else None, **where)


def remove_form(folder: Path, items: pd.DataFrame) -> None:
    with st.form("remove_form"):
        ids = []
        if len(items) <= ui.PICKER_MAX_ITEMS:
            labels = {i: f"{i} · {c} · {Path(str(p)).name}"
                      for i, c, p in zip(items["id"], items.get("category", [""] * len(items)), items["path"])}
            ids = st.multiselect("Items", list(labels), format_func=labels.get, key="remove_ids",
                                 placeholder="Type an id or a file name")
        lines = st.text_area("Item ids or image paths (relative to the image folder), one per line",
                             key="remove_lines")
        if st.form_submit_button("Remove items", icon=":material/delete:", key="remove_submit"):
            entries = [line.strip() for line in lines.splitlines() if line.strip()]
            ids += [int(e) for e in entries if e.isdigit()]
            paths = [e for e in entries if not e.isdigit()]
            if ids or paths:
                run_operation("Removing items", remove_from_catalog, folder, ids=ids, paths=paths)
            else:
                st.warning("Choose the items to remove first.")


def rebuild_form(folder: Path, model: Path, mismatch: bool) -> None:
    with st.form("rebuild_form"):
        st.caption("Re-creates the search index from the stored embeddings (index type chosen again for the "
                   "current size). Re-embedding runs the app's model over every image: needed after a model change.")
        reembed = st.checkbox(f"Re-embed every image with `{model.name}`", value=mismatch, key="rebuild_reembed")
        if st.form_submit_button("Rebuild", icon=":material/autorenew:", key="rebuild_submit"):
            run_operation("Rebuilding", rebuild_catalog, folder, model=model if reembed else None, reembed=reembed)


def build_form(folder: Path, model: Path, info: dict | None) -> None:
    with st.form("build_form"):
        manifest = st.text_input("Manifest on the server (.csv or .parquet)", value=(info or {}).get("manifest", ""),
                                 key="build_manifest")
        replace = info is None or st.checkbox("Replace the current catalog (item ids start again from 0)",
                                              key="build_replace")
        submitted = st.form_submit_button("Build catalog", icon=":material/construction:", key="build_submit")
        if submitted and manifest.strip():
            if not replace:
                st.warning("Tick *Replace the current catalog* to build over it.")
                return
            path = confined(manifest.strip())
            if path is not None:
                run_operation("Building", build_catalog, path, model, folder, overwrite=info is not None)


def confined(typed: str) -> Path | None:
    """The typed path if it lies inside the app's data root; None after saying why not (nothing read)."""
    try:
        return inside_data_root(typed, ui.settings().data_root)
    except OutsideDataRootError as exc:
        st.error(f"{exc}", icon=":material/block:")
        return None


def page() -> None:
    st.title("Catalog")
    if not catalog_manager_gate():  # shoppers: no status of server files, no way to change anything
        return
    cfg = ui.settings()
    st.caption(f"`{cfg.catalog}` · model `{cfg.model}`")
    last_report()
    try:
        info = read_info(cfg.catalog)
    except CatalogError as exc:
        st.info(f"{exc}", icon=":material/info:")
        st.subheader("Build the catalog")
        build_form(cfg.catalog, cfg.model, None)
        return
    status(info, cfg.model)
    mismatch = configured_fingerprint(cfg.model) != info["model_fingerprint"]
    st.subheader("Change the catalog")
    add_tab, remove_tab, rebuild_tab, build_tab = st.tabs(["Add images", "Remove items", "Rebuild", "Build anew"])
    with add_tab:
        add_form(cfg.catalog, cfg.model)
    with remove_tab:
        catalog = ui.load_catalog(cfg.catalog)
        remove_form(cfg.catalog, ui.catalog_items(catalog))
    with rebuild_tab:
        rebuild_form(cfg.catalog, cfg.model, mismatch)
    with build_tab:
        build_form(cfg.catalog, cfg.model, info)


page()
