"""Photos saved for uploads (the Catalog page's "Upload photos"), and when they are deleted.

Uploaded photos are saved below the catalog's image folder, one batch folder per upload:
IMAGE_ROOT/uploads/<batch>/, marked as saved by the upload (UPLOAD_MARK) the moment it is made.
Such a file belongs to the catalog alone, so it is deleted once no catalog version on disk names it:
when the version clean-up (index.store) drops the last version that held it, i.e. once the removal
of its item can no longer be undone. A file outside a marked batch folder (a store's own images,
even in a folder the store itself called uploads/) is never deleted.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
from pathlib import Path, PurePosixPath
from typing import Iterable

UPLOADS_FOLDER = "uploads"  # below the catalog's image folder
UPLOAD_MARK = ".saved-by-upload"  # in each batch folder: its photos were saved for an upload
BOOKKEEPING_FILES = (UPLOAD_MARK, "manifest.csv")  # what a batch holds besides photos


def new_upload_batch(image_root: str | os.PathLike) -> Path:
    """A new, marked batch folder IMAGE_ROOT/uploads/<UTC time>-<random>/ for one upload's photos."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    batch = Path(image_root) / UPLOADS_FOLDER / f"{stamp}-{secrets.token_hex(3)}"
    batch.mkdir(parents=True)  # never an existing folder: only folders made here carry the mark
    (batch / UPLOAD_MARK).write_text("Photos saved by a catalog upload; deleted when no catalog version names them.\n")
    return batch


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
