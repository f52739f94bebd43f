"""Photos uploaded on the Catalog page, saved as catalog images: each file (or zip entry) is checked
on its own, so one bad file is listed with its reason and never costs the good ones beside it.

In a zip, the folder a photo lies in is its product id when the form gives none (ZIP_LAYOUT):
shoe-123/front.jpg and shoe-123/side.jpg are two photos of product shoe-123.
The photos are saved in a new batch folder below the catalog's image folder, marked as the upload's
own (index.uploaded_files), so they are deleted once no catalog version names them any more; those the
add leaves out (unreadable, refused while embedding) are deleted right after it (add_uploads).

A zip is refused whole before anything is extracted when it is too big to be a batch of photos
(entry count, total uncompressed size): zip bombs. Entries whose names would land outside the
upload folder (`..`, absolute paths, drive letters) or that are links are refused one by one.
"""
from __future__ import annotations

import io
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from embedder.files import atomic_path
from embedder.images import ImageError, decode_image
from index.add import add_to_catalog
from index.importers import IMAGE_EXTENSIONS
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, write_manifest
from index.operations import UpdateReport
from index.store import discard_unadded_uploads
from index.uploaded_files import new_upload_batch

MAX_ZIP_ENTRIES = 5_000
MAX_ZIP_TOTAL_BYTES = 1 << 30  # 1 GiB uncompressed: far above a batch of product photos
MAX_IMAGE_BYTES = 50 << 20  # one photo; the decoder refuses more anyway
ZIP_LAYOUT = ("In a zip, the folder a photo lies in is its product id: `shoe-123/front.jpg` and "
              "`shoe-123/side.jpg` are two photos of product `shoe-123` (a folder of product folders works too). "
              "Photos at the zip's top level get no product id, so put every photo of an upload in a product "
              "folder or none. A product id given here is used for every photo instead.")
_CLUTTER = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")
_LABEL = re.compile(r"^[\w][\w .,&+()'-]{0,99}$")


class UploadError(ValueError):
    """The whole upload is refused (nothing was saved); the message says why."""


@dataclass
class StagedUpload:
    folder: Path  # where the good files were saved, with manifest.csv
    saved: list[str] = field(default_factory=list)  # names of the saved files, as uploaded
    bad: list[tuple[str, str]] = field(default_factory=list)  # (uploaded name, reason)
    products: dict[str, str] = field(default_factory=dict)  # uploaded name -> product id, where there is one

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


def folder_product(entry: str) -> str | None:
    """The product id a zip entry's folder gives (the folder the photo lies in), None at the top level."""
    parts = PurePosixPath(entry.replace("\\", "/")).parts
    return parts[-2] if len(parts) > 1 else None


def _file_name(uploaded: str, taken: set[str], product: str | None = None) -> str:
    """A plain, unique file name for an uploaded name (its folders dropped, its product id in front)."""
    stem = PurePosixPath(uploaded.replace("\\", "/")).stem or "photo"
    suffix = PurePosixPath(uploaded.replace("\\", "/")).suffix.lower()
    if product:
        stem = f"{product}-{stem}"
    stem = re.sub(r"[^\w.-]+", "-", stem).strip(".-")[:80] or "photo"
    name, n = f"{stem}{suffix}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return name


def stage_uploads(files: list[tuple[str, bytes]], image_root: Path, category: str,
                  product_id: str = "") -> StagedUpload:
    """Check every uploaded file (zips expanded), save the readable photos in a new batch folder below
    image_root/uploads/ with a manifest (category, product id); list every file or entry left out, with why.

    The product id given is every photo's; without one, a zip entry's folder is its product id (ZIP_LAYOUT).
    Raises UploadError, having saved nothing, when the labels are invalid, a zip is refused whole,
    or no photo at all could be used.
    """
    category = check_label(category, "category", required=True)
    product = check_label(product_id, "product id", required=False)
    candidates, bad = [], []  # (uploaded name, bytes, product id or None)
    for name, data in files:
        if name.lower().endswith(".zip"):
            good, refused = zip_members(name, data)
            bad += refused
            for entry_name, content in good:
                entry_product = product
                if entry_product is None:
                    try:
                        entry_product = check_label(folder_product(entry_name[len(name) + 1:]) or "",
                                                    "product id (its folder's name)", required=False)
                    except UploadError as exc:
                        bad.append((entry_name, str(exc)))
                        continue
                candidates.append((entry_name, content, entry_product))
        else:
            candidates.append((name, data, product))
    checked = []
    for name, data, item_product in candidates:
        try:
            decode_image(data)
        except ImageError as exc:
            bad.append((name, str(exc)))
            continue
        if PurePosixPath(name).suffix.lower() not in IMAGE_EXTENSIONS:
            bad.append((name, f"not an image file name (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"))
            continue
        checked.append((name, data, item_product))
    if any(item_product for _, _, item_product in checked):  # a manifest gives every row a product id or none
        loose = [name for name, _, item_product in checked if not item_product]
        bad += [(name, "not in a product folder, while the other photos are: put it in one (or upload it "
                       "separately)") for name in loose]
        checked = [entry for entry in checked if entry[2]]
    if not checked:
        reasons = "; ".join(f"{n}: {r}" for n, r in bad[:3])
        raise UploadError(f"none of the uploaded files is a usable photo ({reasons})")
    folder = new_upload_batch(image_root)
    staged, taken, rows = StagedUpload(folder, bad=bad), set(), []
    for name, data, item_product in checked:
        file_name = _file_name(name, taken, item_product if item_product != product else None)
        with atomic_path(folder / file_name) as tmp:
            Path(tmp).write_bytes(data)
        staged.saved.append(name)
        if item_product:
            staged.products[name] = item_product
        rows.append({PATH_COLUMN: file_name, CATEGORY_COLUMN: category,
                     **({PRODUCT_COLUMN: item_product} if item_product else {})})
    write_manifest(pd.DataFrame(rows), staged.manifest)
    return staged


def add_uploads(catalog: Path, staged: StagedUpload, *, model=None, progress=True) -> UpdateReport:
    """Add the staged photos to the catalog; then delete the saved ones that no version names (the add left
    them out, or failed), with the batch folder when none was added."""
    try:
        return add_to_catalog(catalog, manifest=staged.manifest, model=model, progress=progress)
    finally:
        discard_unadded_uploads(catalog, staged.folder)
