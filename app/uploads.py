"""Photos uploaded on the Catalog page, saved as catalog images: each file (or zip entry) is checked
on its own, so one bad file is listed with its reason and never costs the good ones beside it.

In a zip, the folder a photo lies in is its product id when the form gives none (ZIP_LAYOUT):
shoe-123/front.jpg and shoe-123/side.jpg are two photos of product shoe-123.
The photos are checked in memory (stage_uploads), then saved in a new batch folder inside the catalog
folder itself, DIR/photos/<batch>/, under the catalog's lock and only then added (add_uploads), so a copy
of the catalog folder holds its photos and no other writer's clean-up can take them; those the add leaves
out (unreadable, refused while embedding), or all of them when it fails or is killed, are named by no
version and deleted by the clean-up under the lock (index.catalog.uploaded_files, index.catalog.store.collect_photos).

One upload is capped as a whole: MAX_UPLOAD_BYTES of photos, uncompressed, across all its files and zip
entries, so memory stays under one cap however many zips an upload holds (zip bombs: a zip is refused
whole, before anything of it is extracted, when its entries declare more than what is left of that cap, or
more than MAX_ZIP_ENTRIES entries; an entry that expands beyond what it declares stops the reading and
what was read of that zip is dropped). A file or zip refused so is listed with its reason like any other
bad file, and the good files beside it are kept. Entries whose names would land outside the upload folder
(`..`, absolute paths, drive letters) or that are links are refused one by one.
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
from index.catalog.add import add_to_catalog
from index.importers import IMAGE_EXTENSIONS
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, write_manifest
from index.catalog.operations import UpdateReport
from index.catalog.uploaded_files import BATCH_MANIFEST, new_batch

MAX_ZIP_ENTRIES = 5_000
MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB uncompressed for one whole upload: far above a batch of product photos
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
    """An upload's checked photos, in memory until save() writes them (under the catalog's lock)."""
    folder: Path  # the batch folder they are saved in, DIR/photos/<batch>/, with manifest.csv
    saved: list[str] = field(default_factory=list)  # names of the photos to save, as uploaded
    bad: list[tuple[str, str]] = field(default_factory=list)  # (uploaded name, reason)
    products: dict[str, str] = field(default_factory=dict)  # uploaded name -> product id, where there is one
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # file name in the batch -> bytes
    rows: list[dict] = field(default_factory=list, repr=False)  # the batch's manifest rows

    @property
    def manifest(self) -> Path:
        return self.folder / BATCH_MANIFEST

    def save(self) -> None:
        """Write the photos and the manifest into the batch folder (a new one)."""
        self.folder.mkdir(parents=True)
        for name, data in self.files.items():
            with atomic_path(self.folder / name) as tmp:
                Path(tmp).write_bytes(data)
        write_manifest(pd.DataFrame(self.rows), self.manifest)


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


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f}".removesuffix(".0")


def too_big(what: str, size: int, held: int) -> UploadError:
    """`what`, of `size` bytes uncompressed, refused since `held` bytes of the upload came before it."""
    return UploadError(f"{what}: {_mib(size)} MiB uncompressed would bring this upload to {_mib(held + size)} MiB, "
                       f"past the {_mib(MAX_UPLOAD_BYTES)} MiB one upload may hold (all its files and zip entries "
                       "together); upload the photos in smaller batches")


def zip_members(archive: str, data: bytes, budget: int | None = None
                ) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The image entries of a zip as (name, bytes), and the entries refused with their reason.

    `budget`: the uncompressed bytes the upload may still hold (default: a whole upload's).
    Raises UploadError (nothing extracted) for a file that is not a zip or one too big to be photos.
    """
    budget = MAX_UPLOAD_BYTES if budget is None else budget
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
        if declared > budget:
            raise too_big(archive, declared, MAX_UPLOAD_BYTES - budget)
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
            if len(content) > MAX_IMAGE_BYTES or read_total > budget:
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


def stage_uploads(files: list[tuple[str, bytes]], catalog: Path, category: str,
                  product_id: str = "") -> StagedUpload:
    """Check every uploaded file (zips expanded) and plan the readable photos' batch folder inside the
    catalog folder, DIR/photos/<batch>/, with a manifest (category, product id); list every file or entry
    left out, with why. Nothing is written: add_uploads saves them under the catalog's lock.

    The product id given is every photo's; without one, a zip entry's folder is its product id (ZIP_LAYOUT).
    A file or zip that would bring the upload past MAX_UPLOAD_BYTES (all its files and zip entries together,
    uncompressed), or a zip refused whole (not a zip, too many entries, expanding beyond what it declares),
    is listed in `bad` with its reason, nothing of it kept; the files before and after it are still checked.
    Raises UploadError when the labels are invalid or no photo at all could be used.
    """
    category = check_label(category, "category", required=True)
    product = check_label(product_id, "product id", required=False)
    candidates, bad, held = [], [], 0  # (uploaded name, bytes, product id or None); bytes held so far
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                good, refused = zip_members(name, data, MAX_UPLOAD_BYTES - held)
            except UploadError as exc:  # refused whole (nothing of it kept): listed, the other files go on
                bad.append((name, str(exc).removeprefix(f"{name}: ")))
                continue
            held += sum(len(content) for _, content in good)
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
            if held + len(data) > MAX_UPLOAD_BYTES:
                bad.append((name, str(too_big(name, len(data), held)).removeprefix(f"{name}: ")))
                continue
            held += len(data)
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
    staged, taken = StagedUpload(new_batch(catalog), bad=bad), set()
    for name, data, item_product in checked:
        file_name = _file_name(name, taken, item_product if item_product != product else None)
        staged.files[file_name] = data
        staged.saved.append(name)
        if item_product:
            staged.products[name] = item_product
        staged.rows.append({PATH_COLUMN: file_name, CATEGORY_COLUMN: category,
                            **({PRODUCT_COLUMN: item_product} if item_product else {})})
    return staged


def add_uploads(catalog: Path, staged: StagedUpload, *, model=None, progress=True) -> UpdateReport:
    """Save the staged photos in their batch folder inside the catalog and add them, all under the catalog's
    lock; the clean-up under that lock then deletes those no version names (the add left them out, failed,
    or was killed: then the next write does), with the batch folder when none was added."""
    return add_to_catalog(catalog, manifest=staged.manifest, model=model, progress=progress, prepare=staged.save)
