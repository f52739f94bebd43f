"""The Quality page's model choice, for catalog managers: a picked model file's catalog of the same
manifest built in the background with its progress (app.catalog_builds), then the compared
catalog served with its model, or the last switch undone (app.serving).

The build runs in the server process while the page keeps answering: its progress is redrawn
every PROGRESS_EVERY_S seconds by a fragment of the page (not the whole page), and when the build
ends the whole page runs once more, with the new catalog picked for the comparison.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import components as ui
from app.catalog_builds import BuildError, CatalogBuild, CatalogBuilds
from app.serving import ServingError, model_fingerprint_of, read_serving, switch_serving, undo_serving
from app.settings import DEFAULT_MODEL, Settings

PROGRESS_EVERY_S = 1.0
NEXT_COMPARED = "compare_next"  # the catalog the comparison picks at its next run (a finished build)
WATCHED_BUILD = "build_watched"  # the build this session saw running
SERVING_OUTCOME = "serving_outcome"


@st.cache_resource(max_entries=1)
def builds() -> CatalogBuilds:
    """The server's background builds, shared by every session."""
    return CatalogBuilds()


@st.cache_data(max_entries=64, show_spinner=False)
def _fingerprint(path: str, mtime_ns: int) -> str | None:
    try:
        return model_fingerprint_of(path)
    except Exception:  # not a search model of this product (e.g. the product mask)
        return None


def model_files(folder: Path, cfg: Settings) -> list[tuple[Path, str]]:
    """(model file, fingerprint) of the search models beside the served model, in the default
    models folder and beside the catalog's own model, except the catalog's own model."""
    info = ui.load_catalog(folder).info
    places = {cfg.model.absolute().parent, Path(DEFAULT_MODEL).absolute().parent}
    if info.model_path:
        places.add(Path(info.model_path).absolute().parent)
    files = sorted({p.absolute() for place in places if place.is_dir() for p in place.glob("*.pt") if p.is_file()})
    found = [(p, _fingerprint(str(p), p.stat().st_mtime_ns)) for p in files]
    return [(p, f) for p, f in found if f and f != info.model_fingerprint]


def compared_default(others: list[Path]) -> None:
    """Pick the catalog a build just made for the comparison (before its selectbox is drawn)."""
    picked = st.session_state.pop(NEXT_COMPARED, None)
    if picked is not None and Path(picked) in others:
        st.session_state["compare_other"] = Path(picked)


def build_status(folder: Path) -> None:
    """The latest build of this catalog's manifest: its progress while it runs, then its outcome."""
    job: CatalogBuild | None = builds().latest(folder)
    if job is None:
        return
    if job.running:
        st.session_state[WATCHED_BUILD] = str(job.folder)
        st.progress(min(job.done / job.total, 1.0) if job.total else 0.0, text=job.line())
    elif st.session_state.get(WATCHED_BUILD) == str(job.folder):
        del st.session_state[WATCHED_BUILD]
        if job.state == "done":
            st.session_state[NEXT_COMPARED] = str(job.folder)
        st.rerun()  # the whole page: the new catalog joins the comparison
    elif job.state == "done":
        st.success(f"{job.line()}. Compare with it above.", icon=":material/check_circle:")
    else:
        st.error(job.line(), icon=":material/error:")


def show_model_build(folder: Path, cfg: Settings) -> None:
    """Pick a model file; build this catalog's manifest with it in the background."""
    st.subheader("Build with another model")
    st.caption(f"Embeds the photos of the manifest **{folder.name}** was built from with the model picked, into a "
               "new catalog beside it, while the page stays usable; the comparison above then offers it. Items "
               "added or removed since the catalog was built are not in it.")
    job = builds().latest(folder)
    st.fragment(run_every=PROGRESS_EVERY_S if job is not None and job.running else None)(build_status)(folder)
    files = model_files(folder, cfg)
    if not files:
        st.info(f"No other search model file (`.pt`) is in `{cfg.model.absolute().parent}`: put one there to build "
                "and compare its catalog.", icon=":material/info:")
        return
    names = {path: f"{path.name} · fingerprint {fingerprint}" for path, fingerprint in files}
    left, right = st.columns([3, 1])
    model = left.selectbox("Model file", list(names), format_func=names.get, key="build_model")
    running = builds().running()
    if right.button("Build its catalog", icon=":material/construction:", key="build_start", disabled=running is not None,
                    help="Another build is running." if running is not None else None):
        try:
            builds().start(folder, model, cfg.catalogs_dir)
        except BuildError as exc:
            st.error(f"Not started: {exc}", icon=":material/error:")
        else:
            st.rerun()


def show_serving(other: Path, cfg: Settings) -> None:
    """Catalog managers: serve the compared catalog with its model, or undo the last switch."""
    st.subheader("Serve a model")
    if outcome := st.session_state.pop(SERVING_OUTCOME, None):
        st.success(outcome, icon=":material/check_circle:")
    st.caption(f"Serving now: **{cfg.catalog.name}** with `{cfg.model.name}`. A switch takes effect at the next "
               "run of every page, and in the HTTP API once it has loaded the pair (a few seconds).")
    info = ui.load_catalog(other).info
    if other.resolve() != cfg.catalog.resolve():
        if st.button(f"Serve {other.name}", icon=":material/published_with_changes:", key="serve_other",
                     help=f"Search serves {other.name} with the model it was built with ({info.model_path})."):
            try:
                switch_serving(cfg, other, info.model_path or "")
            except ServingError as exc:
                st.error(f"Not switched: {exc}", icon=":material/error:")
            else:
                st.session_state[SERVING_OUTCOME] = f"{other.name} is served now. Undo serves {cfg.catalog.name} again."
                st.rerun()
    previous = (read_serving(cfg.catalogs_dir) or {}).get("previous") or {}
    if previous.get("catalog"):
        name = Path(previous["catalog"]).name
        if st.button(f"Undo: serve {name} again", icon=":material/undo:", key="serve_undo"):
            try:
                undo_serving(cfg)
            except ServingError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.session_state[SERVING_OUTCOME] = f"{name} is served again."
                st.rerun()
