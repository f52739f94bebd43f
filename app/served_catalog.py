"""The catalog and model the HTTP API serves: the pair its catalogs folder's serving.json names (a
catalog manager's "Serve this one" or undo on the Quality page, app.serving), followed while the
API runs, else the pair it was started with.

Every request asks for the current service; at most every `reload_interval` seconds that costs
one stat of serving.json (inode, modification time, size: the page replaces the file whole). When
the file has changed, the pair it names is loaded in a background thread (the model read, the
catalog loaded and warmed, as at start-up: app.live_catalog.LiveCatalog) and then swapped in with
one reference assignment; requests meanwhile are answered by the pair before, and each request
keeps the service it started with. A pair that cannot be served is refused and the pair before
keeps serving, with the reason in `reload_error` (/health): a model that is not the one the
catalog was built with (fingerprints differ: ModelMismatchError, as the page refuses it), a
missing or damaged catalog. A record that names a catalog or model no longer there is ignored,
as the pages ignore it (app.serving.served); a removed record serves the start-up pair again.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from app.live_catalog import DEFAULT_RELOAD_INTERVAL, LiveCatalog
from app.serving import SERVING_FILE, record_path, served
from app.settings import DEFAULT_DEVICE, Settings
from index.search.service import SearchService

log = logging.getLogger("app.api")  # the API's log


def file_stamp(path: Path) -> tuple | None:
    """Changes whenever the file is replaced or rewritten; None when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _pair(catalog: Path, model: Path) -> tuple[Path, Path]:
    return catalog.resolve(), model.resolve()


class ServedCatalog:
    """The LiveCatalog of the pair serving.json names, swapped when the record names another."""

    def __init__(self, catalog: str | os.PathLike, model: str | os.PathLike, catalogs_dir: str | os.PathLike | None = None,
                 *, device: str = DEFAULT_DEVICE, reload_interval: float = DEFAULT_RELOAD_INTERVAL):
        """`catalogs_dir`: the folder whose serving.json is followed (default: the one holding `catalog`)."""
        self.started = Settings(catalog=Path(catalog), model=Path(model), device=device,
                                catalogs_dir=Path(catalogs_dir) if catalogs_dir is not None else Path(catalog).parent)
        self.record = record_path(self.started.catalogs_dir)
        self.device, self.reload_interval = device, reload_interval
        self.switch_error: str | None = None
        self._seen = file_stamp(self.record)
        self._checked = time.monotonic()
        self._switching = threading.Lock()
        self._follower: threading.Thread | None = None
        chosen = served(self.started)
        try:
            self._live = self._open(chosen)
        except Exception as exc:  # the recorded pair: the start-up one serves instead, saying why
            if _pair(chosen.catalog, chosen.model) == _pair(self.started.catalog, self.started.model):
                raise  # the start-up pair itself (ModelMismatchError, CatalogError): refused at start-up
            self.switch_error = self._refusal(chosen, exc)
            self._live = self._open(self.started)

    def _open(self, pair: Settings) -> LiveCatalog:
        return LiveCatalog(pair.catalog, pair.model, device=self.device, reload_interval=self.reload_interval)

    @staticmethod
    def _refusal(pair: Settings, exc: Exception) -> str:
        return (f"{SERVING_FILE} names {pair.catalog.name} with {pair.model.name}: not served "
                f"({type(exc).__name__}: {exc})")

    @property
    def live(self) -> LiveCatalog:
        return self._live

    @property
    def folder(self) -> Path:
        return self._live.folder

    @property
    def model_path(self) -> Path:
        return self._live.model_path

    @property
    def loaded_at(self) -> float:
        return self._live.loaded_at

    @property
    def reload_error(self) -> str | None:
        """Why the last switch or the last catalog version was not served (None: all is served)."""
        return self.switch_error or self._live.reload_error

    @property
    def service(self) -> SearchService:
        """The served pair's current service; starts loading another pair if serving.json changed."""
        now = time.monotonic()
        if now - self._checked >= self.reload_interval:
            self._checked = now
            stamp = file_stamp(self.record)
            if stamp != self._seen and self._switching.acquire(blocking=False):
                self._follower = threading.Thread(target=self._follow, args=(stamp,), daemon=True,
                                                  name="serving-switch")
                self._follower.start()
        return self._live.service

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until a switch being loaded has ended (True), or `timeout` seconds (False)."""
        follower = self._follower
        if follower is not None:
            follower.join(timeout)
        return follower is None or not follower.is_alive()

    def _follow(self, stamp: tuple | None) -> None:
        pair = self.started
        try:
            pair = served(self.started)
            current = self._live
            if _pair(pair.catalog, pair.model) == _pair(current.folder, current.model_path):
                self.switch_error = None
                return
            fresh = self._open(pair)  # the model read and checked against the catalog, the catalog warmed
            self._live, self.switch_error = fresh, None  # the swap: one reference assignment
            log.info("serving %s with %s (%s)", pair.catalog, pair.model.name, SERVING_FILE)
        except Exception as exc:  # keep serving the pair before; say why in /health
            self.switch_error = self._refusal(pair, exc)
            log.warning("%s; still serving %s", self.switch_error, self._live.folder)
        finally:
            self._seen = stamp  # a refused record is not tried again until serving.json changes
            self._switching.release()

