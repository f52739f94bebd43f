"""A picked model's catalog of the same manifest, built in the background: what the Quality page's
"Compare models" runs when a catalog manager picks a model file.

The new catalog is built from the manifest the compared catalog records (so both hold the same
images in the same order, which the query-by-query comparison needs) into a new folder of the
catalogs folder, named after the catalog and the model (`tiny-a-tiny-b`, then `-2`, `-3` …), by
index.catalog.operations.build_catalog in a thread of the server process: the page keeps
answering and reads the job's progress (stage, done, total) at each of its runs. A catalog folder
is complete only once its catalog.json is written (the commit), so the catalog lists never show a
half-built one; a build that fails leaves nothing behind (its own new folder is removed).

One build runs at a time per server (each embeds every photo of the manifest on the server's
CPU); the jobs are kept in memory: a restart forgets them, and a build running then is lost,
its folder left without a catalog.json (never listed as a catalog; the next build takes another name).
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from index.catalog import operations
from index.catalog.store import INFO_FILE, read_info

log = logging.getLogger("app.catalog_builds")


class BuildError(ValueError):
    """A build that cannot start (no manifest, the catalog's own model, another build running)."""


@dataclass
class CatalogBuild:
    """One background build and how far it is; `state`: running, done or failed (with `error`)."""
    source: Path  # the catalog whose manifest is built again
    model: Path
    folder: Path  # the new catalog
    manifest: Path
    state: str = "running"
    stage: str = "starting"
    done: int = 0
    total: int = 0
    error: str | None = None
    items: int | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def progress(self, stage: str, done: int, total: int) -> None:
        """The operation's progress callback (embedder.progress): read by the page at its next run."""
        self.stage, self.done, self.total = stage, int(done), int(total)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build has ended (True) or `timeout` seconds have passed (False)."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running

    def line(self) -> str:
        """How far it is, in words."""
        if self.state == "done":
            return f"Built {self.folder.name} with {self.model.name}: {self.items:,} items"
        if self.state == "failed":
            return f"Building {self.folder.name} with {self.model.name} failed: {self.error}"
        count = f" {self.done:,} / {self.total:,}" if self.total else ""
        return f"Building {self.folder.name} with {self.model.name}: {self.stage}{count}"


def new_folder_name(catalogs_dir: Path, source: Path, model: Path) -> Path:
    """catalogs_dir/<catalog>-<model>, or with -2, -3 … when that is taken."""
    base = f"{source.name}-{model.stem}"
    folder, n = catalogs_dir / base, 1
    while folder.exists():
        n += 1
        folder = catalogs_dir / f"{base}-{n}"
    return folder


def built_with(catalogs_dir: Path, manifest: Path, fingerprint: str) -> Path | None:
    """A catalog of the catalogs folder built from `manifest` with the model `fingerprint`, if any."""
    if not catalogs_dir.is_dir():
        return None
    for folder in sorted(catalogs_dir.iterdir()):
        try:
            info = read_info(folder)
        except Exception:  # not a catalog (or an unreadable one): not this one
            continue
        if info.model_fingerprint == fingerprint and info.manifest and Path(info.manifest) == manifest:
            return folder
    return None


def build_plan(source: Path, model: Path, catalogs_dir: Path) -> tuple[Path, Path]:
    """(manifest, new folder) for building `source`'s manifest with `model`; BuildError when that
    cannot or need not be done."""
    from app.serving import model_fingerprint_of

    info = read_info(source)
    manifest = Path(info.manifest) if info.manifest else None
    if manifest is None or not manifest.is_file():
        raise BuildError(f"{source.name} names no manifest that is still there ({info.manifest or 'none recorded'}), "
                         "so its photos can't be listed again: build the second catalog with the CLI "
                         "(`python -m index build --manifest CSV --model CKPT --out DIR`)")
    if not model.is_file():
        raise BuildError(f"no model file at {model}")
    try:
        fingerprint = model_fingerprint_of(model)
    except Exception as exc:  # not a checkpoint of this product
        raise BuildError(f"{model.name} can't be read as a search model: {str(exc).strip() or type(exc).__name__}") \
            from None
    if fingerprint == info.model_fingerprint:
        raise BuildError(f"{model.name} is the model {source.name} was built with (fingerprint {fingerprint}): "
                         "pick another model to compare")
    existing = built_with(catalogs_dir, manifest, fingerprint)
    if existing is not None:
        raise BuildError(f"{existing.name} is already built from this manifest with {model.name}: compare with it")
    return manifest, new_folder_name(catalogs_dir, source, model)


class CatalogBuilds:
    """The server's background builds: at most one running; the latest job per source catalog."""

    def __init__(self):
        self._lock = threading.Lock()
        self._latest: dict[str, CatalogBuild] = {}

    def latest(self, source: Path) -> CatalogBuild | None:
        return self._latest.get(str(Path(source).absolute()))

    def running(self) -> CatalogBuild | None:
        return next((job for job in list(self._latest.values()) if job.running), None)

    def start(self, source: Path, model: Path, catalogs_dir: Path) -> CatalogBuild:
        """Start building `source`'s manifest with `model` into a new folder of `catalogs_dir`;
        BuildError when it cannot start (build_plan's reasons, or another build running)."""
        source, model, catalogs_dir = Path(source).absolute(), Path(model).absolute(), Path(catalogs_dir).absolute()
        with self._lock:
            if (other := self.running()) is not None:
                raise BuildError(f"another build is running: {other.line()}. Start this one when it is done")
            manifest, folder = build_plan(source, model, catalogs_dir)
            folder.mkdir(parents=True)  # the name is taken from now on
            job = CatalogBuild(source=source, model=model, folder=folder, manifest=manifest)
            job.thread = threading.Thread(target=_run, args=(job,), daemon=True, name=f"catalog-build-{folder.name}")
            self._latest[str(source)] = job
            job.thread.start()
        return job


def _run(job: CatalogBuild) -> None:
    try:
        report = operations.build_catalog(job.manifest, job.model, job.folder, progress=job.progress)
        job.items, job.state = report.items, "done"
        log.info("%s", job.line())
    except Exception as exc:  # any failure is the job's outcome, shown on the page
        job.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        job.state = "failed"
        log.warning("%s", job.line())
        if not (job.folder / INFO_FILE).exists():  # its own new folder, never committed
            shutil.rmtree(job.folder, ignore_errors=True)
    finally:
        job.finished_at = time.time()
