"""The one catalog format of the product: a manifest, one row per image.

Columns: `path` (image file relative to the manifest's folder), `category` (the coarse
label, the only label training may use), optional `product_id` (the fine identity, for
evaluation and the Opt reference only); any other column is kept as metadata.
A manifest is a .csv or .parquet file. In CSV only an empty field counts as missing, so
labels such as "NA" or "None" stay labels.
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path, PureWindowsPath

import pandas as pd

from embedder.files import atomic_path

PATH_COLUMN = "path"
CATEGORY_COLUMN = "category"
PRODUCT_COLUMN = "product_id"

REQUIRED_COLUMNS = (PATH_COLUMN, CATEGORY_COLUMN)
LABEL_COLUMNS = (PATH_COLUMN, CATEGORY_COLUMN, PRODUCT_COLUMN)  # always read as text
_SHOWN_ROWS = 5


class ManifestError(ValueError):
    """A manifest that cannot be used: missing file or column, blank labels, unsafe paths."""


def _describe_rows(table: pd.DataFrame, mask: pd.Series, column: str) -> str:
    offending = table.loc[mask, column]
    shown = ", ".join(f"row {row}: {value!r}" for row, value in offending.iloc[:_SHOWN_ROWS].items())
    more = f" and {len(offending) - _SHOWN_ROWS} more" if len(offending) > _SHOWN_ROWS else ""
    return shown + more


def validate_manifest(table: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check the columns and labels; return the table with label columns as text."""
    if len(table) == 0:
        raise ManifestError(f"{source} has no rows")
    for column in REQUIRED_COLUMNS:
        if column not in table.columns:
            raise ManifestError(f"{source} has no '{column}' column (columns: {list(table.columns)})")
    table = table.copy()
    for column in LABEL_COLUMNS:
        if column not in table.columns:
            continue
        blank = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if blank.any():
            raise ManifestError(f"{source} has blank '{column}' values in {blank.sum()} rows "
                                f"(first: rows {list(table.index[blank][:_SHOWN_ROWS])})")
        table[column] = table[column].astype(str)
    return table


def _manifest_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ManifestError(f"{path}: a manifest is a .csv or .parquet file")
    return suffix


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a .csv or .parquet manifest; raise ManifestError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    suffix = _manifest_suffix(path)
    try:
        if suffix == ".csv":
            table = pd.read_csv(path, dtype={c: str for c in LABEL_COLUMNS},
                                keep_default_na=False, na_values=[""])
        else:
            table = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ManifestError(f"manifest {path} is empty") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise ManifestError(f"manifest {path} is not readable: {exc}") from None
    return validate_manifest(table, f"manifest {path}")


def _outside_root(written: str, normalised: str) -> bool:
    absolute = written.startswith("/") or bool(PureWindowsPath(written).drive)  # /x, C:/x, C:x
    return absolute or normalised in (".", "..") or normalised.startswith("../")


def resolve_image_paths(table: pd.DataFrame, root: str | os.PathLike) -> list[Path]:
    """Absolute image paths below `root`; absolute paths and paths leaving `root` are refused.

    The check is on the written path (no `..` may climb above the root), so a catalog
    never points the product at files elsewhere on the machine. Backslashes count as
    folder separators, so manifests written on Windows work and are checked the same way.
    """
    root = Path(root).absolute()
    relative = [str(value).replace("\\", "/") for value in table[PATH_COLUMN]]
    normalised = [posixpath.normpath(value) for value in relative]
    unsafe = pd.Series([_outside_root(raw, norm) for raw, norm in zip(relative, normalised)], index=table.index)
    if unsafe.any():
        raise ManifestError(f"image paths must be relative and stay inside {root}; refused "
                            f"{_describe_rows(table, unsafe, PATH_COLUMN)}")
    return [root / norm for norm in normalised]


def write_manifest(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate and write atomically (.csv or .parquet by the file name); returns the path."""
    path = Path(path)
    suffix = _manifest_suffix(path)
    table = validate_manifest(table, f"manifest for {path}")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return path
