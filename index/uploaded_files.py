"""Photos saved for uploads (the Catalog page's "Upload photos"), and when they are deleted.

Uploaded photos are saved below the catalog's image folder, one batch folder per upload:
IMAGE_ROOT/uploads/<batch>/, marked as saved by the upload (UPLOAD_MARK) the moment it is made.
Such a file exists for catalogs only, so it is deleted once no catalog version on disk names it:
when the version clean-up (index.store) drops the last version that held it, i.e. once the removal
of its item can no longer be undone. A file outside a marked batch folder (a store's own images,
even in a folder the store itself called uploads/) is never deleted.

Catalogs may share an image folder (two models over one manifest), so the mark also lists every
catalog folder that has committed a version naming the batch's photos (claim_uploads); a photo is
deleted only when none of them still names it in a version on disk.

The photos an upload's own add leaves out (unreadable, refused while embedding) are named by no
version at all: they are deleted right after that add (unadded_uploads), and the batch folder with
them when the add took none.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

UPLOADS_FOLDER = "uploads"  # below the catalog's image folder
UPLOAD_MARK = ".saved-by-upload"  # in each batch folder: its photos were saved for an upload
BOOKKEEPING_FILES = (UPLOAD_MARK, "manifest.csv")  # what a batch holds besides photos
MARK_HEADER = "# Photos saved by a catalog upload; deleted when no version of these catalogs names them:\n"


def new_upload_batch(image_root: str | os.PathLike) -> Path:
    """A new, marked batch folder IMAGE_ROOT/uploads/<UTC time>-<random>/ for one upload's photos."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    batch = Path(image_root) / UPLOADS_FOLDER / f"{stamp}-{secrets.token_hex(3)}"
    batch.mkdir(parents=True)  # never an existing folder: only folders made here carry the mark
    (batch / UPLOAD_MARK).write_text(MARK_HEADER)
    return batch


def claim_uploads(catalog: str | os.PathLike, root: str | os.PathLike, paths: Iterable[str]) -> None:
    """Record in each marked batch folder that `catalog` names some of its photos."""
    if not (Path(root) / UPLOADS_FOLDER).is_dir():
        return
    me = os.path.abspath(catalog)
    files = (saved_upload(root, path) for path in paths if str(path).startswith(UPLOADS_FOLDER))
    for batch in {file.parent for file in files if file is not None}:
        with contextlib.suppress(OSError):
            if me not in claimants(batch):
                with open(batch / UPLOAD_MARK, "a", encoding="utf-8") as mark:
                    mark.write(me + "\n")


def claimants(batch: Path) -> list[str]:
    """The catalog folders recorded as naming photos of a batch."""
    try:
        lines = (batch / UPLOAD_MARK).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [line for line in lines if line and not line.startswith("#")]


def saved_upload(root: str | os.PathLike, path: str) -> Path | None:
    """The file a catalog path names when it is an uploaded photo in a marked batch folder, else None."""
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    if len(parts) < 3 or parts[0] != UPLOADS_FOLDER or ".." in parts or parts[1].startswith("."):
        return None
    batch = Path(root) / parts[0] / parts[1]
    return batch.joinpath(*parts[2:]) if (batch / UPLOAD_MARK).is_file() else None


def uploads_to_delete(dropped: Iterable[tuple[str, Iterable[str]]],
                      kept: Iterable[tuple[str, Iterable[str]]]) -> list[Path]:
    """The uploaded photos named by dropped versions and by none of the kept ones.

    Each version is given as (its image root, its catalog paths).
    """
    candidates = {}
    for root, paths in dropped:
        for path in paths:
            if str(path).startswith(UPLOADS_FOLDER):  # cheap test first: most paths are a store's own
                file = saved_upload(root, path)
                if file is not None:
                    candidates[os.path.abspath(file)] = file
    if not candidates:
        return []
    for root, paths in kept:
        for path in paths:
            candidates.pop(os.path.abspath(Path(root) / str(path)), None)
    return list(candidates.values())


VersionReader = Callable[[Path], "tuple[str, list[str]] | None"]  # version folder -> (image root, paths)


def uploads_only_in(catalog: Path, dropped: list[Path], kept: list[Path], read_root: Callable[[Path], "str | None"],
                    read_version: VersionReader, versions_dir: str) -> list[Path]:
    """The uploaded photos that versions being dropped name, and no kept version of this catalog nor any
    version on disk of another catalog claiming them. Whatever cannot be read keeps its photos."""
    dropped = [version for version in dropped if not version.name.startswith(".")]  # unfinished writes
    if not any((Path(root) / UPLOADS_FOLDER).is_dir() for root in map(read_root, dropped) if root):
        return []  # the usual case: no upload folder at all, no metadata is read
    named = [found for found in map(read_version, dropped) if found]
    kept_named = [read_version(version) for version in kept if version.is_dir()]
    if any(found is None for found in kept_named):
        return []
    files = uploads_to_delete(named, kept_named)
    others: dict[str, set[str] | None] = {}
    me = os.path.abspath(catalog)

    def named_elsewhere(file: Path) -> bool:
        for other in claimants(file.parent):
            if other != me:
                if other not in others:
                    others[other] = _named_uploads(Path(other) / versions_dir, read_version)
                if others[other] is None or os.path.abspath(file) in others[other]:
                    return True
        return False
    return [file for file in files if not named_elsewhere(file)]


def _named_uploads(versions: Path, read_version: VersionReader,
                   resolve: Callable[[Path], str] = os.path.abspath) -> set[str] | None:
    """The uploaded photos any finished version of a catalog on disk names, as `resolve` spells their
    paths (None: a version cannot be read)."""
    names: set[str] = set()
    for version in (versions.iterdir() if versions.is_dir() else []):
        if version.name.startswith(".") or not version.is_dir():
            continue
        found = read_version(version)
        if found is None:
            return None
        root, paths = found
        names.update(resolve(Path(root) / p) for p in paths if p.startswith(UPLOADS_FOLDER))
    return names


def unadded_uploads(batch: Path, catalog: Path, read_version: VersionReader, versions_dir: str) -> list[Path]:
    """The photos saved in an upload's batch folder that no version of `catalog` on disk names: those the
    add left out (unreadable, refused while embedding), or all of them when it added none or failed.

    None at all when the folder is not a marked batch, another catalog claims it (its own clean-up
    decides), or a version of `catalog` is being written or cannot be read.
    """
    if batch.parent.name != UPLOADS_FOLDER or not (batch / UPLOAD_MARK).is_file():
        return []
    me = os.path.abspath(catalog)
    if any(other != me for other in claimants(batch)):
        return []
    versions = catalog / versions_dir
    try:
        if versions.is_dir() and any(entry.name.startswith(".") for entry in versions.iterdir()):
            return []  # a version being written may name them
        named = _named_uploads(versions, read_version, os.path.realpath)
        if named is None:
            return []
        return [file for file in sorted(batch.iterdir()) if file.name not in BOOKKEEPING_FILES and file.is_file()
                and not file.is_symlink() and os.path.realpath(file) not in named]
    except OSError:  # what cannot be read keeps its photos
        return []


def delete_uploads(files: Iterable[Path]) -> None:
    """Delete the files, then each batch folder left with nothing but its bookkeeping."""
    batches = set()
    for file in files:
        with contextlib.suppress(OSError):
            file.unlink(missing_ok=True)
        if file.parent.parent.name == UPLOADS_FOLDER:  # photos lie directly in their batch folder
            batches.add(file.parent)
    for batch in batches:
        with contextlib.suppress(OSError):
            if all(p.name in BOOKKEEPING_FILES for p in batch.iterdir()):
                for name in BOOKKEEPING_FILES:
                    (batch / name).unlink(missing_ok=True)
                batch.rmdir()
