"""Photos uploaded to a catalog (the Catalog page's "Upload photos"): kept inside the catalog folder itself,
and deleted once no version of the catalog on disk names them.

An upload's photos are saved in DIR/photos/<batch>/ and named in the catalog's metadata by paths relative to
the catalog folder, written with the CATALOG_PREFIX ("@catalog/photos/<batch>/front.jpg"), so a copy of the
folder (`cp -a DIR backup`) is a complete catalog of its own: its photos travel with it, and nothing the
original does afterwards touches them. The store's own images stay in the image folder (`root`), named by
paths relative to it; a manifest path never starts with the prefix (index.catalog.add refuses one).

Clean-up deletes only inside the catalog's own photos folder: every file there that no version on disk names
(unnamed_photos), at every write under the catalog's lock. That also removes what an add left out, what a
killed or failed add had saved, and photos whose last version was dropped; the previous version keeps its
photos, so a removal stays undoable.

Catalogs written before this kept uploads below the image folder, IMAGE_ROOT/uploads/<batch>/ (a batch folder
marked by LEGACY_MARK). Their next write copies those photos into the catalog folder and names the copies
(adopt_legacy_uploads); the originals are left where they are (other catalogs over the same image folder may
still name them), and the command says so.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
import pandas as pd

from embedder.files import atomic_path

CATALOG_PREFIX = "@catalog/"  # a metadata path starting so lies in the catalog folder, not in the image folder
PHOTOS_FOLDER = "photos"  # DIR/photos/<batch>/: uploaded photos, one batch folder per upload
BATCH_MANIFEST = "manifest.csv"  # what an upload's add reads, beside its photos
LEGACY_UPLOADS = "uploads"  # earlier layout: IMAGE_ROOT/uploads/<batch>/
LEGACY_MARK = ".saved-by-upload"  # in each earlier batch folder


def image_file(folder: str | os.PathLike, root: str | os.PathLike, path: str) -> str:
    """The file a catalog path names: below the catalog folder for CATALOG_PREFIX paths, else below root."""
    path = str(path)
    if path.startswith(CATALOG_PREFIX):
        return os.path.join(os.path.abspath(folder), path[len(CATALOG_PREFIX):])
    return os.path.join(root, path)


def image_files(folder: str | os.PathLike | None, root: str, paths: pd.Series) -> pd.Series:
    """image_file for a whole column of catalog paths (the metadata's image_path)."""
    paths = paths.astype(str)
    files = root.rstrip("/\\") + os.sep + paths
    inside = paths.str.startswith(CATALOG_PREFIX).to_numpy()
    if inside.any() and folder is not None:
        files[inside] = os.path.abspath(folder) + os.sep + paths[inside].str[len(CATALOG_PREFIX):]
    return files


def catalog_path(folder: str | os.PathLike, file: str | os.PathLike) -> str:
    """The catalog path of a file inside the catalog folder (CATALOG_PREFIX + its path relative to it)."""
    return CATALOG_PREFIX + Path(os.path.abspath(file)).relative_to(os.path.abspath(folder)).as_posix()


def inside_photos(folder: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Does this (absolute or relative to the working folder) path lie below DIR/photos/?"""
    photos = os.path.abspath(Path(folder) / PHOTOS_FOLDER)
    return os.path.abspath(path).startswith(photos + os.sep)


def new_batch(folder: str | os.PathLike) -> Path:
    """A name for a new batch folder DIR/photos/<UTC time>-<random>/ (not created here)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(folder) / PHOTOS_FOLDER / f"{stamp}-{secrets.token_hex(3)}"


def named_photos(paths: Iterable[str]) -> set[str]:
    """The files below the catalog folder that catalog paths name (relative to it, POSIX)."""
    return {p[len(CATALOG_PREFIX):] for p in map(str, paths) if p.startswith(CATALOG_PREFIX)}


def unnamed_photos(folder: str | os.PathLike, named: set[str]) -> list[Path]:
    """Every file below DIR/photos/ that `named` (paths relative to DIR) does not hold; links are not followed."""
    photos = Path(folder) / PHOTOS_FOLDER
    found = []
    for where, folders, files in os.walk(photos):
        for name in files:
            file = Path(where) / name
            if file.relative_to(folder).as_posix() not in named:
                found.append(file)
    return sorted(found)


def delete_photos(folder: str | os.PathLike, files: Iterable[Path]) -> None:
    """Delete the files (only below DIR/photos/), then the batch folders left empty."""
    photos = Path(folder) / PHOTOS_FOLDER
    for file in files:
        if inside_photos(folder, file):
            with contextlib.suppress(OSError):
                os.unlink(file)
    for where, folders, files in sorted(os.walk(photos), key=lambda entry: -len(entry[0])):  # deepest first
        if Path(where) != photos and not folders and not files:
            with contextlib.suppress(OSError):
                os.rmdir(where)


# ----------------------------------------------------------------------------- the earlier layout

def legacy_upload(root: str | os.PathLike, path: str) -> Path | None:
    """The file a catalog path names when it is a photo uploaded in the earlier layout (a marked batch folder
    IMAGE_ROOT/uploads/<batch>/), else None."""
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    if len(parts) < 3 or parts[0] != LEGACY_UPLOADS or ".." in parts or parts[1].startswith("."):
        return None
    batch = Path(root) / parts[0] / parts[1]
    return batch.joinpath(*parts[2:]) if (batch / LEGACY_MARK).is_file() else None


def adopt_legacy_uploads(folder: str | os.PathLike, root: str | None, paths: pd.Series) -> tuple[pd.Series, int]:
    """Catalog paths with every photo uploaded in the earlier layout copied into DIR/photos/<batch>/ and named
    there; (the paths, how many were copied). A photo that cannot be read keeps its old path."""
    paths = paths.astype(str)
    if not root or not (Path(root) / LEGACY_UPLOADS).is_dir():
        return paths, 0
    candidates = np.flatnonzero(paths.str.startswith(LEGACY_UPLOADS + "/").to_numpy())
    adopted, copied = paths.copy(), 0
    for row in candidates:
        source = legacy_upload(root, paths.iat[row])
        if source is None or not source.is_file() or source.is_symlink():
            continue
        relative = Path(paths.iat[row]).relative_to(LEGACY_UPLOADS)
        target = Path(folder) / PHOTOS_FOLDER / relative
        try:
            if not (target.is_file() and target.stat().st_size == source.stat().st_size):
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    shutil.copy2(source, tmp)  # keeps the mtime, so `add` still knows the file unchanged
                copied += 1
        except OSError:
            continue
        adopted.iat[row] = catalog_path(folder, target)
    return adopted, copied
