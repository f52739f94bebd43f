"""Photos uploaded on the Catalog page, saved as catalog images: each file (or zip entry) is checked
on its own, so one bad file is listed with its reason and never costs the good ones beside it.

A zip is refused whole before anything is extracted when it is too big to be a batch of photos
(entry count, total uncompressed size): zip bombs. Entries whose names would land outside the
upload folder (`..`, absolute paths, drive letters) or that are links are refused one by one.
"""
from __future__ import annotations

import datetime as _dt
import io
import re
import secrets
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from embedder.files import atomic_path
from embedder.images import ImageError, decode_image
from index.importers import IMAGE_EXTENSIONS
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, write_manifest

MAX_ZIP_ENTRIES = 5_000
MAX_ZIP_TOTAL_BYTES = 1 << 30  # 1 GiB uncompressed: far above a batch of product photos
MAX_IMAGE_BYTES = 50 << 20  # one photo; the decoder refuses more anyway
UPLOADS_FOLDER = "uploads"  # below the catalog's image folder
_CLUTTER = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")
_LABEL = re.compile(r"^[\w][\w .,&+()'-]{0,99}$")


class UploadError(ValueError):
    """The whole upload is refused (nothing was saved); the message says why."""


@dataclass
class StagedUpload:
    folder: Path  # where the good files were saved, with manifest.csv
    saved: list[str] = field(default_factory=list)  # names of the saved files, as uploaded
    bad: list[tuple[str, str]] = field(default_factory=list)  # (uploaded name, reason)

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.csv"


def check_label(value: str, what: str, required: bool) -> str | None:
    value = value.strip()
    if not value:
        if required:
            raise UploadError(f"give a {what}")
        return None
    if not _LABEL.match(value) or ".." in value:
        raise UploadError(f"the {what} {value[:60]!r} may hold letters, digits, spaces and . , & + ( ) ' - "
                          "(no slashes), up to 100 characters")
    return value


def unsafe_name(name: str) -> str | None:
    """Why a zip entry's name must not be used (None: safe)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path in the zip: refused"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path with '..' in the zip: refused"
    if "\x00" in name:
        return "name with a NUL character: refused"
    return None


def zip_members(archive: str, data: bytes) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The image entries of a zip as (name, bytes), and the entries refused with their reason.

    Raises UploadError (nothing extracted) for a file that is not a zip or one too big to be photos.
    """
    try:
        bundle = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UploadError(f"{archive}: not a readable zip ({exc})") from None
    with bundle:
        entries = [e for e in bundle.infolist() if not e.is_dir() and not e.filename.startswith(_CLUTTER)
                   and PurePosixPath(e.filename).name not in _CLUTTER]
        if len(entries) > MAX_ZIP_ENTRIES:
            raise UploadError(f"{archive}: {len(entries):,} entries, more than the {MAX_ZIP_ENTRIES:,} a batch may "
                              "hold; split it")
        declared = sum(e.file_size for e in entries)
        if declared > MAX_ZIP_TOTAL_BYTES:
            raise UploadError(f"{archive}: {declared / 2**20:,.0f} MiB uncompressed, more than the "
                              f"{MAX_ZIP_TOTAL_BYTES / 2**20:,.0f} MiB a batch may hold; split it")
        good, bad, read_total = [], [], 0
        for entry in entries:
            name = f"{archive}/{entry.filename}"
            reason = unsafe_name(entry.filename)
            if reason is None and stat.S_ISLNK(entry.external_attr >> 16):
                reason = "link in the zip: refused"
            if reason is None and PurePosixPath(entry.filename).suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"not an image file (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
            if reason is None and entry.file_size > MAX_IMAGE_BYTES:
                reason = f"larger than {MAX_IMAGE_BYTES >> 20} MB"
            if reason is not None:
                bad.append((name, reason))
                continue
            try:
                with bundle.open(entry) as stream:  # read no more than declared: a lying header is cut off
                    content = stream.read(MAX_IMAGE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                bad.append((name, f"cannot be extracted: {exc}"))
                continue
            read_total += len(content)
            if len(content) > MAX_IMAGE_BYTES or read_total > MAX_ZIP_TOTAL_BYTES:
                raise UploadError(f"{archive}: expands beyond what its entries declare; refused")
            good.append((name, content))
    return good, bad


def _file_name(uploaded: str, taken: set[str]) -> str:
    """A plain, unique file name for an uploaded name (its folders dropped)."""
    stem = PurePosixPath(uploaded.replace("\\", "/")).stem or "photo"
    suffix = PurePosixPath(uploaded.replace("\\", "/")).suffix.lower()
    stem = re.sub(r"[^\w.-]+", "-", stem).strip(".-")[:80] or "photo"
    name, n = f"{stem}{suffix}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return name


def stage_uploads(files: list[tuple[str, bytes]], image_root: Path, category: str,
                  product_id: str = "") -> StagedUpload:
    """Check every uploaded file (zips expanded), save the readable photos below image_root/uploads/
    with a manifest (category, optional product id); list every file or entry left out, with why.

    Raises UploadError, having saved nothing, when the labels are invalid, a zip is refused whole,
    or no photo at all could be used.
    """
    category = check_label(category, "category", required=True)
    product = check_label(product_id, "product id", required=False)
    candidates, bad = [], []
    for name, data in files:
        if name.lower().endswith(".zip"):
            good, refused = zip_members(name, data)
            candidates += good
            bad += refused
        else:
            candidates.append((name, data))
    checked = []
    for name, data in candidates:
        try:
            decode_image(data)
        except ImageError as exc:
            bad.append((name, str(exc)))
            continue
        if PurePosixPath(name).suffix.lower() not in IMAGE_EXTENSIONS:
            bad.append((name, f"not an image file name (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"))
            continue
        checked.append((name, data))
    if not checked:
        reasons = "; ".join(f"{n}: {r}" for n, r in bad[:3])
        raise UploadError(f"none of the uploaded files is a usable photo ({reasons})")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(image_root) / UPLOADS_FOLDER / f"{stamp}-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    staged, taken, rows = StagedUpload(folder, bad=bad), set(), []
    for name, data in checked:
        file_name = _file_name(name, taken)
        with atomic_path(folder / file_name) as tmp:
            Path(tmp).write_bytes(data)
        staged.saved.append(name)
        rows.append({PATH_COLUMN: file_name, CATEGORY_COLUMN: category,
                     **({PRODUCT_COLUMN: product} if product else {})})
    write_manifest(pd.DataFrame(rows), staged.manifest)
    return staged
