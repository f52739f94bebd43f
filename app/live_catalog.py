"""The catalog the API serves: a catalog folder's current version, followed as new ones are committed.

Several processes may serve one catalog folder: they only read it and never take its writer lock.
When `python -m index add/rebuild/remove` commits a new version (catalog.json replaced), each
process loads the new version in the background and then swaps it in; requests keep being
answered by the old version meanwhile (its files stay on disk one version longer by design, and
a loaded version no longer needs them: metadata and index are in memory, embeddings mapped).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from app.settings import DEFAULT_DEVICE
from index.catalog.loaded import Catalog
from index.catalog.store import INFO_FILE, read_info
from index.search.service import SearchService

log = logging.getLogger("app.api")  # the API's log

DEFAULT_RELOAD_INTERVAL = 0.5  # seconds between looks at catalog.json (a stat, no read)


def info_stamp(folder: Path) -> tuple | None:
    """Changes whenever catalog.json is replaced (os.replace gives it a new inode)."""
    try:
        stat = (folder / INFO_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class LiveCatalog:
    """The SearchService of a catalog folder's current version, swapped when a new one is committed.

    The model is loaded once; each new catalog version is loaded completely (index read, result
    columns built) in a background thread before the reference is swapped, so no request waits
    for a load or sees a half-loaded catalog. A version that cannot be served (another model,
    damaged) is reported in `reload_error` and the last good version keeps serving.
    """

    def __init__(self, catalog_folder: str | os.PathLike, model: str | os.PathLike, device: str = DEFAULT_DEVICE,
                 reload_interval: float = DEFAULT_RELOAD_INTERVAL):
        self.folder = Path(catalog_folder)
        self.model_path = Path(model)
        self.reload_interval = reload_interval
        stamp = info_stamp(self.folder)
        service = SearchService(self.folder, self.model_path, device=device)  # ModelMismatchError, CatalogError
        self._warm(service)
        self._service, self._seen_stamp = service, stamp
        self.loaded_at = time.time()
        self.reload_error: str | None = None
        self._checked = time.monotonic()
        self._loading = threading.Lock()

    @staticmethod
    def _warm(service: SearchService) -> None:
        catalog = service.catalog
        _ = catalog.index  # read on first use otherwise: do it before any request depends on it
        if len(catalog):
            catalog.search_frame(catalog.vectors_of(catalog.ids[:1])[0], 1)  # builds the result columns

    @property
    def service(self) -> SearchService:
        """The current version's service; starts loading a newer version if catalog.json changed."""
        now = time.monotonic()
        if now - self._checked >= self.reload_interval:
            self._checked = now
            stamp = info_stamp(self.folder)
            if stamp is not None and stamp != self._seen_stamp and self._loading.acquire(blocking=False):
                threading.Thread(target=self._reload, args=(stamp,), daemon=True, name="catalog-reload").start()
        return self._service

    def _reload(self, stamp: tuple) -> None:
        try:
            current = self._service
            if read_info(self.folder).version == current.catalog.info.version:
                return  # rewritten without a new version (e.g. skipped files listed)
            fresh = SearchService.from_parts(Catalog.load(self.folder), current.embedder, current.categories)
            self._warm(fresh)
            self._service = fresh  # the swap: one reference assignment
            self.loaded_at, self.reload_error = time.time(), None
            log.info("serving catalog version %s (%d items)", fresh.catalog.info.version, len(fresh.catalog))
        except Exception as exc:  # keep serving the last good version; say why in /health
            self.reload_error = f"{type(exc).__name__}: {exc}"
            log.warning("catalog %s: new version not loaded, still serving %s: %s", self.folder,
                        self._service.catalog.info.version, self.reload_error)
        finally:
            self._seen_stamp = stamp  # a failed version is not retried until catalog.json changes again
            self._loading.release()
