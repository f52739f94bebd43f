"""Fix items in place: set a metadata column (a category, a colour, a product id) or add a tag to
chosen items, as a catalog operation like removing them: under the catalog's lock, committed as a
new version (index.catalog.store.commit_catalog), undone by restoring the previous one.

Only metadata changes: every vector is written again exactly as stored (no model runs), the
search index is kept (its ids are unchanged), and the commit recomputes the calibration from the
new metadata; category pools are read from the metadata when the catalog is loaded, so both
follow a re-categorised item.

CLI: python -m index edit --catalog DIR --id N [--id M ...] --set category=footwear [--tag review]
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from embedder.progress import ProgressOption
from index.catalog.loaded import Catalog
from index.manifest import PATH_COLUMN
from index.catalog.operations import UpdateReport, counts, kept_rows, refuse_on_disk
from index.catalog.store import (IMAGE_PATH_COLUMN, RESERVED_COLUMNS, CatalogError, catalog_lock, commit_catalog, now,
                                 stores_no_vectors)

TAGS_COLUMN = "tags"  # comma-separated labels a merchandiser gives items ("review", "sale")
FIXED_COLUMNS = (*RESERVED_COLUMNS, PATH_COLUMN)  # what identifies an item or its file: never edited


def parse_assignments(texts: Iterable[str]) -> dict[str, str]:
    """"column=value" strings as {column: value}; CatalogError naming the first bad one."""
    out: dict[str, str] = {}
    for text in texts:
        column, sep, value = str(text).partition("=")
        column = column.strip()
        if not sep or not column:
            raise CatalogError(f"--set takes column=value (e.g. category=footwear), got {text!r}")
        out[column] = value.strip()
    return out


def _typed(column: pd.Series, value: str, name: str):
    """value in the column's own type (a number column stays a number column)."""
    if pd.api.types.is_bool_dtype(column):
        if value.lower() not in ("true", "false"):
            raise CatalogError(f"column {name!r} holds true/false, got {value!r}")
        return value.lower() == "true"
    if pd.api.types.is_integer_dtype(column):
        try:
            return int(value)
        except ValueError:
            raise CatalogError(f"column {name!r} holds whole numbers, got {value!r}") from None
    if pd.api.types.is_float_dtype(column):
        try:
            return float(value)
        except ValueError:
            raise CatalogError(f"column {name!r} holds numbers, got {value!r}") from None
    return value


def with_tag(tags: str | None, tag: str) -> str:
    """The comma-separated tags with `tag` added once."""
    present = [t for t in str(tags or "").split(",") if t.strip()] if isinstance(tags, str) else []
    return ",".join(present if tag in present else [*present, tag])


def edited_metadata(metadata: pd.DataFrame, rows: np.ndarray, values: dict[str, str], tags: Iterable[str] = ()
                    ) -> pd.DataFrame:
    """A copy of the metadata with `values` set and `tags` added on the given rows."""
    out = metadata.copy()
    for column, value in values.items():
        if column in FIXED_COLUMNS:
            raise CatalogError(f"column {column!r} identifies an item or its file and cannot be edited")
        if column == TAGS_COLUMN:
            raise CatalogError(f"add tags with --tag; {TAGS_COLUMN!r} is kept by the catalog")
        if not value and column == "category":
            raise CatalogError("an item's category cannot be empty")
        if column in out:
            typed = _typed(out[column], value, column)
            if isinstance(typed, str) and not pd.api.types.is_object_dtype(out[column]):
                out[column] = out[column].astype(object)  # a categorical or string column takes any text
            out.loc[rows, column] = typed
        else:
            out[column] = pd.Series([None] * len(out), index=out.index, dtype=object)
            out.loc[rows, column] = value
    for tag in tags:
        tag = str(tag).strip()
        if not tag or "," in tag:
            raise CatalogError(f"a tag is a word without commas, got {tag!r}")
        if TAGS_COLUMN not in out:
            out[TAGS_COLUMN] = pd.Series([""] * len(out), index=out.index, dtype=object)
        out.loc[rows, TAGS_COLUMN] = [with_tag(t, tag) for t in out.loc[rows, TAGS_COLUMN]]
    return out


def edit_catalog(folder: str | os.PathLike, *, ids: Iterable[int], values: dict[str, str] | None = None,
                 tags: Iterable[str] = (), progress: ProgressOption = False, lock_timeout: float = 0.0
                 ) -> UpdateReport:
    """Set metadata `values` ({column: value}) and add `tags` on the items `ids`; a new version.
    `progress` is accepted so every catalog change can be called alike; an edit has no stages."""
    started = time.perf_counter()
    folder = Path(folder)
    ids, values, tags = sorted({int(i) for i in ids}), dict(values or {}), list(tags)
    if not ids:
        raise CatalogError("give the ids of the items to edit")
    if not values and not tags:
        raise CatalogError("give what to change: --set column=value and/or --tag TAG")
    with catalog_lock(folder, "edit", lock_timeout):
        catalog = Catalog.load(folder)
        refuse_on_disk(catalog, "edit")
        rows = catalog.rows_of(ids)  # raises on unknown ids
        info = catalog.info.replace()
        metadata = edited_metadata(catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN]), rows, values, tags)
        index = None if stores_no_vectors(info.index["factory"]) else catalog.index  # same ids: kept as it is
        info.counts = counts(metadata, info.skipped)
        info.last_operation = {"operation": "edit", "edited": len(ids),
                               "changed": ", ".join([*(f"{c}={v}" for c, v in values.items()),
                                                     *(f"tag {t}" for t in tags)]), "at": now()}
        commit_catalog(folder, kept_rows(catalog.embeddings, np.ones(len(catalog), bool)), metadata, index, info,
                       info.version)
    return UpdateReport("edit", folder, items=len(metadata), updated=len(ids), index=dict(info.index),
                        seconds=time.perf_counter() - started)
