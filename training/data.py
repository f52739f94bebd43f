"""Training data: a catalog manifest decoded once (through the product's one decoding path)
into a uint8 tensor at the model's input size, cached on disk for the next run.

Only `category` is a training label. `product_id` is read for validation Recall@k and
for the Opt reference, never by the CoIns objectives.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embedder.images import ImageError, decode_image
from embedder.preprocess import Preprocessing
from embedder.files import atomic_path
from index.manifest import CATEGORY_COLUMN, PRODUCT_COLUMN, read_manifest, resolve_image_paths


@dataclass
class TrainingSet:
    images: torch.Tensor  # uint8 N x C x H x W
    categories: torch.Tensor  # int64 N, index into category_names
    category_names: list[str]
    products: torch.Tensor | None  # int64 N, index into product_names (evaluation / Opt only)
    product_names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def hold_out(data: TrainingSet, fraction: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
    """(training, validation): a seeded share `fraction` of every category's images held out (at least one
    image of each category with two or more), so the validation photos are never trained on."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be between 0 and 1, not {fraction}")
    generator = torch.Generator().manual_seed(seed)
    held = []
    for k in range(len(data.category_names)):
        members = torch.nonzero(data.categories == k)[:, 0]
        take = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
        held.append(members[torch.randperm(len(members), generator=generator)[:take]])
    is_held = torch.zeros(len(data), dtype=torch.bool)
    is_held[torch.cat(held)] = True

    def subset(mask: torch.Tensor) -> TrainingSet:
        return TrainingSet(data.images[mask], data.categories[mask], data.category_names,
                           data.products[mask] if data.products is not None else None, data.product_names)
    return subset(~is_held), subset(is_held)


def _codes(values, vocabulary: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    values = [str(v) for v in values]
    vocabulary = vocabulary or sorted(set(values))
    lookup = {v: i for i, v in enumerate(vocabulary)}
    missing = sorted(set(values) - set(lookup))
    if missing:
        raise ValueError(f"labels not in the model's vocabulary: {missing[:5]}")
    return torch.tensor([lookup[v] for v in values], dtype=torch.long), vocabulary


def load_training_set(manifest: str | Path, preprocessing: Preprocessing, *, cache_dir: str | Path = ".cache",
                      category_names: list[str] | None = None) -> TrainingSet:
    """Decode every image of the manifest; unreadable images are reported and left out."""
    manifest = Path(manifest)
    table = read_manifest(manifest)
    paths = resolve_image_paths(table, manifest.parent)
    # Mean and std do not change the decoded pixels: training finds the set that measuring them decoded.
    pixels = {k: v for k, v in preprocessing.to_dict().items() if k not in ("mean", "std")}
    key = hashlib.sha256(json.dumps([str(manifest.resolve()), manifest.stat().st_mtime_ns, pixels]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"images-{key}.npz"
    if cache.is_file():
        stored = np.load(cache)
        images, keep = stored["images"], stored["keep"]
    else:
        arrays, keep = [], []
        for i, path in enumerate(tqdm(paths, desc=f"decoding {manifest.name}", unit="img", mininterval=1.0,
                                      disable=not sys.stderr.isatty())):
            try:
                arrays.append(preprocessing.to_uint8(decode_image(path)))
                keep.append(i)
            except ImageError as exc:
                print(f"skipped {path}: {exc}")
        images, keep = np.stack(arrays), np.array(keep)
        # Atomic, and safe when several processes (torchrun ranks on another machine) write it at once.
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, keep=keep)
    table = table.iloc[keep]
    categories, category_names = _codes(table[CATEGORY_COLUMN], category_names)
    products, product_names = (None, [])
    if PRODUCT_COLUMN in table:
        products, product_names = _codes(table[PRODUCT_COLUMN])
    return TrainingSet(torch.from_numpy(images), categories, category_names, products, product_names)
