"""Importers: turn image collections and public data sets into catalog manifests.

Each importer writes its images (where it converts them) and a manifest, and returns the
manifest's path. The manifest is written last and atomically, so an existing manifest that
matches what the importer would write, with every image present, means the import is
done: running it again only checks and returns.
"""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from index.manifest import (CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, ManifestError, read_manifest,
                            resolve_image_paths, write_manifest)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp", ".gif", ".tif",
                              ".tiff"})

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Coarse categories a store would use; training sees only these, never the fine class.
FASHION_MNIST_GROUPINGS = {
    "store": {"apparel": (0, 1, 2, 3, 4, 6), "footwear": (5, 7, 9), "bags": (8,)},
    "five": {"tops": (0, 2, 4, 6), "bottoms": (1,), "dresses": (3,), "footwear": (5, 7, 9), "bags": (8,)},
}
_IDX_FILE_PREFIX = {"train": "train", "test": "t10k"}


def _is_complete(manifest: Path, expected: pd.DataFrame) -> bool:
    """True when `manifest` holds exactly `expected` and every image it names exists."""
    try:
        existing = read_manifest(manifest)
    except ManifestError:
        return False
    if list(existing.columns) != list(expected.columns) or len(existing) != len(expected):
        return False
    if not existing.astype(str).reset_index(drop=True).equals(expected.astype(str).reset_index(drop=True)):
        return False
    return all(path.is_file() for path in resolve_image_paths(existing, manifest.parent))


def _write_images(images: Sequence[np.ndarray] | np.ndarray, files: list[Path], desc: str) -> None:
    files[0].parent.mkdir(parents=True, exist_ok=True)
    for array, file in zip(tqdm(images, desc=desc, unit="img", mininterval=1.0), files):
        Image.fromarray(array).save(file, format="PNG")


def _import_arrays(images: np.ndarray, table: pd.DataFrame, out_dir: Path, desc: str,
                   manifest_name: str = "manifest.csv") -> Path:
    """Write images[i] as images/NNNNN.png beside the manifest; `table` holds the labels."""
    names = [f"images/{i:05d}.png" for i in range(len(images))]
    table = pd.concat([pd.DataFrame({PATH_COLUMN: names}), table.reset_index(drop=True)], axis=1)
    manifest = out_dir / manifest_name
    if _is_complete(manifest, table):
        return manifest
    _write_images(images, [out_dir / name for name in names], desc)
    return write_manifest(table, manifest)


# --- image folders -------------------------------------------------------------------------

def _is_hidden(parts: Sequence[str]) -> bool:
    return any(part.startswith(".") for part in parts)


def import_image_folder(root: str | os.PathLike) -> Path:
    """Manifest for a tree root/category/[product/...]/image; writes root/manifest.csv
    (image_folder_table without writing anything)."""
    table = image_folder_table(root)
    manifest = Path(root) / "manifest.csv"
    if _is_complete(manifest, table):  # leaves the file (and its timestamp) alone
        return manifest
    return write_manifest(table, manifest)


def link_outside(root: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """Why an image path below `root` must not be read: through a symbolic link it leads outside the
    image folder (the check on the written path cannot see that). None when it stays inside."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, path))
    if real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    target = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in real)[:200]
    return f"a symbolic link leading outside the image folder (to {target}): refused"


REFUSED_ATTR = "refused"  # image_folder_table(...).attrs[REFUSED_ATTR]: [(path, reason)] of what it left out


def image_folder_table(root: str | os.PathLike) -> pd.DataFrame:
    """The manifest rows of a tree root/category/[product/...]/image (paths relative to root).

    When images sit in a folder below their category folder, that first subfolder is the
    product_id; when they sit directly in the category folder there is no product_id. A
    tree that mixes both is refused, since product ids would be missing for some images.
    A symbolic link leading outside root (to an image or a folder) is left out and listed with its
    reason in the table's attrs[REFUSED_ATTR]; links to folders are not followed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    relative, refused = [], []
    for path in root.rglob("*"):  # does not descend into linked folders
        rel = path.relative_to(root)
        if _is_hidden(rel.parts):  # hidden files and folders are tool clutter
            continue
        image_name = path.suffix.lower() in IMAGE_EXTENSIONS
        if path.is_symlink():
            why = link_outside(root, rel)
            if why is not None:
                if image_name or path.is_dir():
                    refused.append((rel.as_posix(), why))
                continue
        if image_name and path.is_file():
            relative.append(rel)
    # Images directly in root have no category folder.
    relative = sorted(path for path in relative if len(path.parts) >= 2)
    if not relative:
        raise ManifestError(f"no images in category folders below {root} "
                            f"(expected {root}/<category>/<image>, extensions {sorted(IMAGE_EXTENSIONS)})")
    table = pd.DataFrame({PATH_COLUMN: [path.as_posix() for path in relative],
                          CATEGORY_COLUMN: [path.parts[0] for path in relative]})
    in_product_folder = [len(path.parts) >= 3 for path in relative]
    if all(in_product_folder):
        table[PRODUCT_COLUMN] = [path.parts[1] for path in relative]
    elif any(in_product_folder):
        loose = next(path for path, nested in zip(relative, in_product_folder) if not nested)
        raise ManifestError(f"{root} mixes images in product folders with images directly in a category "
                            f"folder (e.g. {loose.as_posix()}); put every image in a product folder or none")
    table.attrs[REFUSED_ATTR] = sorted(refused)
    return table


# --- Fashion-MNIST -------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic 0x0000 08 <ndim>, ndim big-endian sizes, uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {values.size} values, its header says {shape}")
    return values.reshape(shape)


def _idx_files(source_dir: Path, split: str) -> tuple[Path, Path]:
    prefix = _IDX_FILE_PREFIX[split]
    return source_dir / f"{prefix}-images-idx3-ubyte.gz", source_dir / f"{prefix}-labels-idx1-ubyte.gz"


def _download_fashion_mnist(download_dir: Path) -> Path:
    """Fetch the IDX files with torchvision; returns the folder holding the .gz files."""
    from torchvision.datasets import FashionMNIST  # optional: only this path needs it

    for train in (True, False):
        FashionMNIST(str(download_dir), train=train, download=True)
    return download_dir / "FashionMNIST" / "raw"


def load_fashion_mnist_arrays(split: str = "train", source_dir: str | os.PathLike = FASHION_MNIST_DIR, *,
                              allow_download: bool = False,
                              download_dir: str | os.PathLike = ".cache/fashion-mnist") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 28 x 28, int64 fine labels N) of the "train" or "test" split."""
    if split not in _IDX_FILE_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    source_dir = Path(source_dir)
    files = _idx_files(source_dir, split)
    missing = [file.name for file in files if not file.is_file()]
    if missing and allow_download:
        try:
            source_dir = _download_fashion_mnist(Path(download_dir))
        except ImportError:
            pass  # no torchvision: fall through to the explanation below
        files = _idx_files(source_dir, split)
        missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {source_dir}. Install the Debian package "
            "(apt-get install dataset-fashion-mnist), or pass a --source folder holding the four .gz IDX "
            "files, or allow download where a network exists."
        )
    images, labels = (_read_idx(file) for file in files)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{files[0]} and {files[1]} do not describe the same images")
    return images, labels.astype(np.int64)


def import_fashion_mnist(out_dir: str | os.PathLike, split: str = "train",
                         source_dir: str | os.PathLike = FASHION_MNIST_DIR, grouping: str = "store", *,
                         allow_download: bool = False, limit: int | None = None) -> Path:
    """PNGs in out_dir/split/images and out_dir/split/manifest_<grouping>.csv.

    category is the grouping's coarse name, product_id the fine class name (e.g. "Sneaker"),
    fine_label its number. Groupings share the same images, each with its own manifest.
    `limit` keeps only the first images (quick trials).
    """
    if grouping not in FASHION_MNIST_GROUPINGS:
        raise ValueError(f"grouping must be one of {sorted(FASHION_MNIST_GROUPINGS)}, got {grouping!r}")
    out_dir = Path(out_dir)
    images, labels = load_fashion_mnist_arrays(split, source_dir, allow_download=allow_download,
                                               download_dir=out_dir / "download")
    images, labels = images[:limit], labels[:limit]
    coarse_of = {fine: name for name, fines in FASHION_MNIST_GROUPINGS[grouping].items() for fine in fines}
    table = pd.DataFrame({
        CATEGORY_COLUMN: [coarse_of[label] for label in labels],
        PRODUCT_COLUMN: [FASHION_MNIST_CLASSES[label] for label in labels],
        "fine_label": labels,
    })
    return _import_arrays(images, table, out_dir / split, f"Fashion-MNIST {split}",
                          manifest_name=f"manifest_{grouping}.csv")


# --- CIFAR-100 -----------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Pickles can run code; the CIFAR files need nothing beyond numpy arrays."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} from a data set file")
        return super().find_class(module, name)


def _load_cifar_pickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-100 file not found: {path} (expected the extracted cifar-100-python folder)")
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="bytes").load()


def import_cifar100(source_dir: str | os.PathLike, out_dir: str | os.PathLike, split: str = "train") -> Path:
    """PNGs in out_dir/split/images and out_dir/split/manifest.csv from the CIFAR-100 python pickles.

    category is the coarse (super-class) name, product_id the fine class name.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    source_dir = Path(source_dir)
    meta = _load_cifar_pickle(source_dir / "meta")
    batch = _load_cifar_pickle(source_dir / split)
    fine_names = [name.decode() for name in meta[b"fine_label_names"]]
    coarse_names = [name.decode() for name in meta[b"coarse_label_names"]]
    # Rows are 1024 red, then 1024 green, then 1024 blue values of a 32 x 32 image.
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    fine, coarse = np.asarray(batch[b"fine_labels"]), np.asarray(batch[b"coarse_labels"])
    table = pd.DataFrame({
        CATEGORY_COLUMN: [coarse_names[c] for c in coarse],
        PRODUCT_COLUMN: [fine_names[f] for f in fine],
        "fine_label": fine.astype(np.int64),
    })
    return _import_arrays(np.ascontiguousarray(images), table, Path(out_dir) / split, f"CIFAR-100 {split}")


# --- Stanford Online Products --------------------------------------------------------------

def _sop_category(path: str) -> str:
    folder = path.split("/", 1)[0]
    return folder.removesuffix("_final")


def import_sop(source_dir: str | os.PathLike, split: str = "train") -> Path:
    """source_dir/manifest_<split>.csv from Ebay_<split>.txt of Stanford Online Products.

    The images stay where they are; category is the super-class folder name without its
    "_final" suffix (bicycle_final -> bicycle), product_id the class_id.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    source_dir = Path(source_dir)
    listing = source_dir / f"Ebay_{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"Stanford Online Products listing not found: {listing}")
    rows = pd.read_csv(listing, sep=r"\s+", dtype=str)
    missing = {"image_id", "class_id", "super_class_id", "path"} - set(rows.columns)
    if missing:
        raise ManifestError(f"{listing} lacks the columns {sorted(missing)}")
    table = pd.DataFrame({
        PATH_COLUMN: rows["path"],
        CATEGORY_COLUMN: rows["path"].map(_sop_category),
        PRODUCT_COLUMN: rows["class_id"],
        "image_id": rows["image_id"],
        "super_class_id": rows["super_class_id"],
    })
    manifest = source_dir / f"manifest_{split}.csv"
    if _is_complete(manifest, table):
        return manifest
    absent = [str(path) for path in resolve_image_paths(table, source_dir) if not path.is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} images listed in {listing} are missing, e.g. {absent[:3]}")
    return write_manifest(table, manifest)
