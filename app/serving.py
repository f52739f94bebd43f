"""Which catalog and model the app serves after a catalog manager chose another on the Quality page
("Serve this one"), and undo.

The choice is one small record in the catalogs folder, SERVING_FILE (the catalog folder, its model
file, when, and the pair that served before), replaced atomically (embedder.files.atomic_path): a
reader sees the old record or the new one, never half of one. app.components.settings lays it over
the start-up settings at every run, so every session's Search, Catalog and Quality pages follow at
their next run; the HTTP API follows it too, without a restart (app.served_catalog: it loads the
new pair in the background and swaps it in). Undo writes the previous pair back (and keeps the
undone one as its own previous: undo again re-does it).

A switch is refused unless the model file is the one the catalog was built with (same fingerprint):
a catalog searched with another model's vectors would return noise.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from app.settings import Settings
from embedder.files import atomic_path

SERVING_FILE = "serving.json"


class ServingError(ValueError):
    """A switch that would serve something unusable (no catalog, no model, another model)."""


def record_path(catalogs_dir: str | Path) -> Path:
    return Path(catalogs_dir) / SERVING_FILE


def read_serving(catalogs_dir: str | Path) -> dict | None:
    """The record, or None when there is none or it cannot be read (the start-up settings serve)."""
    try:
        record = json.loads(record_path(catalogs_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("catalog"), str) or not isinstance(
            record.get("model"), str):
        return None
    return record


def served(cfg: Settings) -> Settings:
    """The settings with the recorded catalog and model, when there is a record whose catalog and
    model are still there; the settings as they are otherwise."""
    record = read_serving(cfg.catalogs_dir)
    if record is None:
        return cfg
    catalog, model = Path(record["catalog"]), Path(record["model"])
    if not (catalog / "catalog.json").is_file() or not model.is_file():
        return cfg
    return replace(cfg, catalog=catalog, model=model)


def model_fingerprint_of(model: str | Path) -> str:
    from embedder.checkpoint import load_checkpoint
    return str(load_checkpoint(model)["fingerprint"])


def catalog_fingerprint_of(catalog: str | Path) -> str:
    return str(json.loads((Path(catalog) / "catalog.json").read_text()).get("model_fingerprint", ""))


def _write(catalogs_dir: Path, record: dict) -> dict:
    with atomic_path(record_path(catalogs_dir)) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
    return record


def switch_serving(cfg: Settings, catalog: str | Path, model: str | Path) -> dict:
    """Serve `catalog` with `model` from now on (the pair serving now kept as `previous`).
    ServingError when the catalog or the model is missing, or the model is not the catalog's."""
    catalog, model = Path(catalog).absolute(), Path(model).absolute()
    if not (catalog / "catalog.json").is_file():
        raise ServingError(f"no catalog at {catalog}")
    if not model.is_file():
        raise ServingError(f"no model file at {model}")
    expected, actual = catalog_fingerprint_of(catalog), model_fingerprint_of(model)
    if expected != actual:
        raise ServingError(f"{model.name} (fingerprint {actual}) is not the model {catalog.name} was built with "
                           f"(fingerprint {expected})")
    now = served(cfg)
    return _write(cfg.catalogs_dir, {"catalog": str(catalog), "model": str(model), "switched_at": time.time(),
                                     "previous": {"catalog": str(now.catalog), "model": str(now.model)}})


def undo_serving(cfg: Settings) -> dict:
    """Serve the pair that served before the last switch again. ServingError when there is none."""
    record = read_serving(cfg.catalogs_dir)
    previous = (record or {}).get("previous")
    if not isinstance(previous, dict) or not previous.get("catalog") or not previous.get("model"):
        raise ServingError("nothing to undo: no switch was recorded")
    return _write(cfg.catalogs_dir, {"catalog": previous["catalog"], "model": previous["model"],
                                     "switched_at": time.time(),
                                     "previous": {"catalog": record["catalog"], "model": record["model"]}})
