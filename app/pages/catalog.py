"""Catalog (catalog managers): what the served catalog holds, and changing it.

Every change goes through index.catalog.operations / index.catalog.add, which writes a complete new version before switching
to it: searches keep using the previous catalog until the change is complete, then the app
loads the new one (caches are keyed on the catalog's build time).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from app import components as ui
from app.browse import CATALOG_BROWSER, browse_grid, clear_selection, file_mtime, thumbnail_png
from app.item_actions import item_actions, last_outcome
from app.roles import catalog_manager_gate
from app.settings import OutsideDataRootError, inside_data_root, shown
from app.store_catalog import serving_story, store_trainable
from app.uploads import ZIP_LAYOUT, UploadError, add_uploads, stage_uploads
from embedder.checkpoint import CheckpointError, load_checkpoint
from embedder.images import ImageError
from index.catalog.add import add_to_catalog
from index.importers import IMAGE_EXTENSIONS
from index.catalog.operations import UpdateReport, build_catalog, rebuild_catalog, remove_from_catalog, restore_catalog
from index.catalog.description import CatalogInfo
from index.catalog.store import CatalogError, read_info
from index.manifest import ManifestError

USER_ERRORS = (CatalogError, ManifestError, CheckpointError, ImageError, FileNotFoundError, ValueError, OSError)
REPORT_KEY = "catalog_last_report"
REFUSED_KEY = "catalog_last_refused"  # uploaded files left out before the catalog was changed
CONFIRM_KEY = "catalog_pending"  # the change waiting for its confirmation: ("remove", ids, paths) or ("restore",)
SECTION_KEY = "catalog_section"
KEPT_SECTION_KEY = "catalog_section_kept"
SECTIONS = ("Browse and remove", "Add images", "Undo", "Rebuild", "Build anew")
BROWSE_KEY = CATALOG_BROWSER
UPLOAD_ROUND_KEY = "catalog_upload_round"  # part of the uploader's key: changed after a successful add


@st.cache_data(max_entries=4, show_spinner=False)
def model_record(path: str, mtime_ns: int) -> dict:
    """What the catalog page needs of a checkpoint: fingerprint, backbone, preprocessing, training config."""
    payload = load_checkpoint(path)
    return {k: payload.get(k) for k in ("fingerprint", "backbone", "preprocessing", "config")}


def configured_record(model: Path) -> dict | None:
    try:
        return model_record(str(model), model.stat().st_mtime_ns)
    except (OSError, CheckpointError):
        return None


def configured_fingerprint(model: Path) -> str | None:
    record = configured_record(model)
    return None if record is None else record["fingerprint"]


def status(info: CatalogInfo, model: Path) -> None:
    """The catalog's facts: size, categories, model, index (and why), when built, skipped files."""
    counts, index = info.counts, info.index
    categories = counts.get("categories", {})
    cols = st.columns(4)
    cols[0].metric("Items", f"{counts.get('items', 0):,}")
    cols[1].metric("Categories", f"{len(categories):,}")
    cols[2].metric("Index", index.get("factory", "?"))
    cols[3].metric("Skipped files", f"{len(info.skipped):,}")

    fingerprint = configured_fingerprint(model)
    if fingerprint == info.model_fingerprint:
        st.success(f"Model `{model.name}` matches this catalog (fingerprint `{fingerprint}`).",
                   icon=":material/check_circle:")
    else:
        found = f"has fingerprint `{fingerprint}`" if fingerprint else "can't be read"
        st.warning(f"The app's model `{model}` {found}, but this catalog was built with "
                   f"`{info.model_fingerprint}`: searches are refused until you **rebuild with re-embedding** "
                   "below (or start the app with the catalog's own model).", icon=":material/warning:")

    left, right = st.columns([3, 2], gap="large")
    with left:
        recall = index.get("recall_at_10")
        facts = {
            "Built": _when(info.built_at),
            "First created": _when(info.created_at),
            "Model checkpoint": info.model_path or "not recorded",
            "Model fingerprint": info.model_fingerprint,
            "Feature dimension": str(info.feature_dim),
            "Precision": info.precision or "?",
            "Manifest": info.manifest or "?",
            "Image folder": info.root or "?",
            "Index": index.get("factory", "?") + (f" · recall@10 vs exact {recall:.3f}" if recall is not None else ""),
            "Why this index": index_reason(index, counts.get("items", 0)),
            "Last change": _last_operation(info.last_operation),
        }
        st.table(pd.DataFrame({"fact": list(facts), "value": list(facts.values())}), hide_index=True,
                 hide_header=True, border="horizontal")
    with right:
        if categories:
            st.markdown("**Items per category**")
            st.bar_chart(pd.Series(categories, name="items"), horizontal=True, height=max(160, 28 * len(categories)))
    skipped = info.skipped
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


CHOSEN_SIZE = re.compile(r"([\d,]+) vectors")


def index_reason(index: dict, items: int) -> str:
    """Why this index, with the size it was chosen for when the catalog has changed size since."""
    reason = index.get("reason", "")
    chosen = CHOSEN_SIZE.search(reason)
    if chosen and int(chosen.group(1).replace(",", "")) != items:
        return (f"{reason} (chosen when the catalog held {chosen.group(1)} items; it now holds {items:,}: "
                "Rebuild chooses again for the current size)")
    return reason


OPERATION_WORDS = {"build": "built", "add": "added to", "remove": "items removed", "rebuild": "rebuilt",
                   "restore": "restored", "build-from-shards": "built from embedding shards", "edit": "items edited"}


def _last_operation(op: dict | None) -> str:
    """The last change in words: "rebuilt (re-embedded) at …", "items removed (2 removed) at …"."""
    if not op:
        return "?"
    details = []
    for name, value in op.items():
        if name in ("operation", "at") or value in (None, False, 0, ""):
            continue
        if value is True:
            details.append(name.replace("reembedded", "re-embedded").replace("_", " "))
        elif isinstance(value, (int, float)):
            details.append(f"{value:,} {name.replace('_', ' ')}")
        else:
            details.append(f"{name.replace('_', ' ')} {value}")
    words = OPERATION_WORDS.get(op.get("operation"), str(op.get("operation")))
    return words + (f" ({', '.join(details)})" if details else "") + f" at {_when(op.get('at'))}"


def run_operation(label: str, operation, *args, refused: list[tuple[str, str]] = (), **kwargs) -> None:
    """Run a catalog change with a progress bar; keep its report (and the files `refused` before it)
    for the next run, then reload."""
    try:
        with ui.catalog_progress(label) as progress:
            report: UpdateReport = operation(*args, progress=progress, **kwargs)
    except USER_ERRORS as exc:
        st.error(f"{label} failed: {exc}", icon=":material/error:")
        return
    st.session_state[REPORT_KEY], st.session_state[REFUSED_KEY] = report, list(refused)
    st.rerun()  # show the new status (the app now serves the new version); the chosen section stays


def last_report() -> None:
    report: UpdateReport | None = st.session_state.get(REPORT_KEY)
    refused: list[tuple[str, str]] = st.session_state.get(REFUSED_KEY, [])
    if report is None and not refused:
        return
    if report is not None:
        st.success(report.summary()[:1].upper() + report.summary()[1:], icon=":material/task_alt:")
    left_out = refused + list(report.skipped if report is not None else [])
    if left_out:
        st.warning(f"{len(left_out):,} files were left out (every one listed, with why):", icon=":material/block:")
        st.dataframe(pd.DataFrame(left_out, columns=["path", "reason"]), hide_index=True, key="report_skipped")


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


def uploader_key() -> str:
    """upload_files, then upload_files_1, _2, ... after each successful add."""
    added = st.session_state.get(UPLOAD_ROUND_KEY, 0)
    return "upload_files" if not added else f"upload_files_{added}"


def upload_form(folder: Path, model: Path, categories: list[str]) -> None:
    """Photos or zips from the browser, saved inside the catalog folder (DIR/photos/), then added."""
    with st.form("upload_form", clear_on_submit=False):
        # A new key after each successful add: a fresh, empty uploader (the added files are not offered again).
        files = st.file_uploader("Photos, or zips of photos", accept_multiple_files=True,
                                 key=uploader_key(),
                                 type=[*sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS), "zip"])
        left, right = st.columns(2)
        category = left.text_input("Category", key="upload_category",
                                   placeholder=", ".join(categories[:4]) or "e.g. shoes",
                                   help="Every uploaded photo gets this category.")
        product = right.text_input("Product id (optional)", key="upload_product",
                                   help="Several photos of one product: give them the same product id. "
                                        "Without one, a zip's folders are the product ids.")
        st.caption(ZIP_LAYOUT)
        if not st.form_submit_button("Upload and add", icon=":material/upload:", key="upload_submit"):
            return
        if not files:
            st.warning("Choose the photos to upload first.")
            return
        try:
            staged = stage_uploads([(f.name, f.getvalue()) for f in files], folder, category, product)
        except UploadError as exc:
            st.error(f"Nothing was added: {exc}", icon=":material/error:")
            return
        def add_then_clear(*args, **kwargs):
            report = add_uploads(*args, **kwargs)
            st.session_state[UPLOAD_ROUND_KEY] = st.session_state.get(UPLOAD_ROUND_KEY, 0) + 1
            return report
        # Saved and added under the catalog's lock; those the add leaves out (all, when it fails) are deleted.
        run_operation(f"Adding {len(staged.saved):,} uploaded photos", add_then_clear, folder, staged,
                      refused=staged.bad, model=model if model.is_file() else None)


def ask_to_confirm(what: tuple) -> None:
    st.session_state[CONFIRM_KEY] = what
    st.rerun()


def removal_preview(folder: Path, ids: list[int], shown: int = 12) -> None:
    """The first photos that a removal would take out, so the confirmation shows what it confirms."""
    catalog = ui.load_catalog(folder)
    if catalog is None or not ids:
        return
    rows = catalog.metadata[catalog.metadata["id"].isin(ids[:shown])]
    thumbs = [(thumbnail_png(str(path), file_mtime(str(path)), 96), f"id {item}")
              for item, path in zip(rows["id"], rows["image_path"])]
    thumbs = [(png, caption) for png, caption in thumbs if png is not None]
    if thumbs:
        st.image([png for png, _ in thumbs], width=96, caption=[caption for _, caption in thumbs])


def pending_change(folder: Path, info: CatalogInfo) -> bool:
    """The change waiting for confirmation, with Confirm and Cancel; True while one waits."""
    pending = st.session_state.get(CONFIRM_KEY)
    if not pending:
        return False
    with st.container(border=True):
        if pending[0] == "remove":
            ids, paths = pending[1], pending[2]
            count = len(ids) + len(paths)
            st.warning(f"Remove {count:,} item{'s' * (count != 1)} from the catalog? Searches stop finding "
                       f"{'them' if count != 1 else 'it'}; **Undo** restores the version before this change.",
                       icon=":material/delete:")
            removal_preview(folder, ids)
            st.caption("Ids: " + ", ".join(map(str, ids[:40])) + (" …" if len(ids) > 40 else "")
                       + ("  \nPaths: " + ", ".join(paths[:20]) if paths else ""))
        else:
            st.warning(f"Restore the previous version `{info.previous_version}`? The current version "
                       f"`{info.version}` ({info.counts.get('items', 0):,} items) is replaced.",
                       icon=":material/undo:")
        yes, no, _ = st.columns([2, 2, 6])
        if yes.button("Confirm", type="primary", key="confirm_change", icon=":material/check:"):
            st.session_state.pop(CONFIRM_KEY, None)
            if pending[0] == "remove":
                clear_selection(BROWSE_KEY)
                run_operation("Removing items", remove_from_catalog, folder, ids=pending[1], paths=pending[2])
            else:
                run_operation("Restoring the previous version", restore_catalog, folder)
        if no.button("Cancel", key="cancel_change", icon=":material/close:"):
            st.session_state.pop(CONFIRM_KEY, None)
            st.rerun()
    return True


def remove_section(items: pd.DataFrame, skipped: list[dict]) -> None:
    view = st.radio("Show", ["Catalog items", f"Skipped files ({len(skipped):,})"], horizontal=True,
                    key="browse_view", label_visibility="collapsed")
    if view != "Catalog items":
        if skipped:
            st.dataframe(pd.DataFrame(skipped), hide_index=True, key="browse_skipped")
        else:
            st.write("None: every image in the catalog's manifest could be read.")
        return
    chosen = browse_grid(items, key=BROWSE_KEY)
    if st.button(f"Remove {len(chosen):,} selected", icon=":material/delete:", key="browse_remove",
                 disabled=not chosen):
        ask_to_confirm(("remove", chosen, []))
    item_actions(ui.settings().catalog, chosen, key="browse_fix", remove=False)  # re-categorise or tag the selection
    with st.expander("Remove by id or path", icon=":material/edit_note:"):
        with st.form("remove_form"):
            lines = st.text_area("Item ids or image paths (relative to the image folder), one per line",
                                 key="remove_lines")
            if st.form_submit_button("Remove items", icon=":material/delete:", key="remove_submit"):
                entries = [line.strip() for line in lines.splitlines() if line.strip()]
                ids, problem = typed_ids([e for e in entries if e.isdigit()])
                if problem:
                    st.error(problem, icon=":material/error:")
                    return
                paths = [e for e in entries if not e.isdigit()]
                if ids or paths:
                    ask_to_confirm(("remove", ids, paths))
                st.warning("Give the items to remove first.")


MAX_ITEM_ID = 2**63 - 1  # catalog ids are int64


def typed_ids(entries: list[str]) -> tuple[list[int], str | None]:
    """The ids typed (lines of digits), or the one-line reason one of them is not an id."""
    ids = []
    for entry in entries:
        if not (entry.isascii() and entry.isdecimal()):  # e.g. '²': a digit, but not a number
            return [], f"{shown(entry)} is not an item id: ids are written with the digits 0-9"
        if int(entry) > MAX_ITEM_ID:
            return [], f"{shown(entry)} is not an item id of this catalog: ids go up to {MAX_ITEM_ID}"
        ids.append(int(entry))
    return ids, None


def undo_section(folder: Path, info: CatalogInfo) -> None:
    previous = info.previous_version
    on_disk = bool(previous) and (folder / "versions" / str(previous)).is_dir()
    st.caption(f"Current version `{info.version}` · {_last_operation(info.last_operation)}")
    if not on_disk:
        st.info("There is no previous version to restore (it is kept for one change).", icon=":material/info:")
        return
    st.write(f"The previous version `{previous}` is kept on disk. The CLI does the same: "
             f"`python -m index restore --catalog {folder}`.")
    if st.button("Restore previous version", icon=":material/undo:", key="restore_submit"):
        ask_to_confirm(("restore",))


def rebuild_form(folder: Path, model: Path, mismatch: bool) -> None:
    with st.form("rebuild_form"):
        st.caption("Re-creates the search index from the stored embeddings (index type chosen again for the "
                   "current size). Re-embedding runs the app's model over every image: needed after a model change.")
        reembed = st.checkbox(f"Re-embed every image with `{model.name}`", value=mismatch, key="rebuild_reembed")
        if st.form_submit_button("Rebuild", icon=":material/autorenew:", key="rebuild_submit"):
            run_operation("Rebuilding", rebuild_catalog, folder, model=model if reembed else None, reembed=reembed)


def build_form(folder: Path, model: Path, info: CatalogInfo | None) -> None:
    with st.form("build_form"):
        manifest = st.text_input("Manifest on the server (.csv or .parquet)", value=(info.manifest if info else None) or "",
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
        path = inside_data_root(typed, ui.settings().data_root)
        path.exists()  # a name the system cannot look up at all (too long) is refused here, not mid-change
        return path
    except OutsideDataRootError as exc:
        st.error(f"{exc}", icon=":material/block:")
    except (ValueError, OSError) as exc:  # a NUL character; a name longer than the file system allows
        reason = "it holds a NUL character" if isinstance(exc, ValueError) else (exc.strerror or str(exc))
        st.error(f"{shown(typed)} is not a usable path ({reason})", icon=":material/block:")
    return None


def serving_model(info: CatalogInfo, model: Path, catalog: Path) -> None:
    """Which model serves, why, and the one command that trains a better one on these categories
    (for a store serving its own frozen or trained model: a button that runs it in the background)."""
    record = configured_record(model)
    if record is None:
        return
    trainable = store_trainable(record, model)
    story = serving_story(record, info.manifest, int(info.counts.get("items", 0)),
                          catalog=catalog if trainable else None)
    with st.container(border=True):
        st.markdown(f"**Serving model:** {story.model} — `{model.name}`")
        st.caption(f"Why: {story.why}")
        if story.train_command:
            st.caption("A model trained on these categories finds the same product better. One command trains it "
                       f"({story.expected_time or 'its time on this machine is not measured yet'}):")
            st.code(story.train_command, language="bash")
            if trainable:
                store_training(catalog, model)
            else:
                st.caption("Then serve it: `./run.sh --images` picks it up from its run folder.")


def store_training(catalog: Path, model: Path) -> None:
    """The store's head training (training.store) as a background job: its progress, estimate and verdict."""
    from training.store import background_state, start_in_background

    state = background_state(catalog)
    running = state is not None and state.get("state") == "running"
    if st.button("Train this store's model", key="store_train", disabled=running, icon=":material/model_training:",
                 help="Trains a CoInsP head on the frozen features of these photos in the background, measures it "
                      "against the frozen model on held-out products, and switches the catalog to it only if it wins."):
        start_in_background(catalog, model)
        state = background_state(catalog)
        running = True
    if state is None:
        return
    if running:
        total, done = int(state.get("total") or 0), int(state.get("done") or 0)
        left = state.get("seconds_left")
        text = f"{state.get('stage', 'starting')}: {done:,} / {total:,}" if total else state.get("stage", "starting")
        st.progress(done / total if total else 0.0,
                    text=text + (f" · about {left:,} s left" if left is not None else "") + " (reload to update)")
    elif state.get("state") == "done":
        (st.success if state.get("result", {}).get("switched") else st.info)(state.get("summary", ""),
                                                                              icon=":material/insights:")
    else:
        st.error(f"Training the store's model stopped: {state.get('error', 'no reason recorded')}", icon=":material/error:")


def page() -> None:
    st.title("Catalog")
    if not catalog_manager_gate():  # shoppers: no status of server files, no way to change anything
        return
    cfg = ui.settings()
    st.caption(f"`{cfg.catalog}` · model `{cfg.model}`")
    last_report()
    last_outcome()
    try:
        info = read_info(cfg.catalog)
    except CatalogError as exc:
        st.info(f"{exc}", icon=":material/info:")
        st.subheader("Build the catalog")
        build_form(cfg.catalog, cfg.model, None)
        return
    status(info, cfg.model)
    serving_model(info, cfg.model, cfg.catalog)
    mismatch = configured_fingerprint(cfg.model) != info.model_fingerprint
    st.subheader("Change the catalog")
    if pending_change(cfg.catalog, info):
        return
    # Tabs with a key track the chosen tab in session state, so it stays after an action's rerun.
    # The tab is also kept under a key of its own: a run that asks for a confirmation draws no tabs,
    # and Streamlit forgets the state of a widget that a run does not draw.
    kept = st.session_state.get(KEPT_SECTION_KEY, SECTIONS[0])
    browse_tab, add_tab, undo_tab, rebuild_tab, build_tab = st.tabs(SECTIONS, key=SECTION_KEY, on_change="rerun",
                                                                     default=kept)
    st.session_state[KEPT_SECTION_KEY] = st.session_state.get(SECTION_KEY) or kept
    catalog = ui.load_catalog(cfg.catalog)
    with browse_tab:
        remove_section(ui.catalog_items(catalog), info.skipped)
    with add_tab:
        st.markdown("**Upload photos**")
        upload_form(cfg.catalog, cfg.model, sorted(info.counts.get("categories", {})))
        st.markdown("**Or add a folder or manifest already on the server**")
        add_form(cfg.catalog, cfg.model)
    with undo_tab:
        undo_section(cfg.catalog, info)
    with rebuild_tab:
        rebuild_form(cfg.catalog, cfg.model, mismatch)
    with build_tab:
        build_form(cfg.catalog, cfg.model, info)

page()
