"""The real query path as training data: training items photographed on the tuning backdrops
(training/composites.py), JPEG-encoded, decoded and normalised exactly as a search does
(`Preprocessing.to_uint8`: the learned mask, the crop, the levels), kept as the model's
uint8 input beside the item they show.

Training then shows the model, now and then, an item's query view instead of its catalog
image, under the same instance and category: the model learns that a shopper's photo of a
product and its catalog image are one thing (`TrainConfig.query_views`).

`python -m training views --out .cache/query-views.npz` makes them (both cores, a few minutes
per 10,000 views); the file records the mask model it was made with.
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from embedder.checkpoint import load_checkpoint, preprocessing_from_checkpoint
from embedder.files import atomic_path
from embedder.images import ImageError
from embedder.mask import default_mask
from embedder.preprocess import Preprocessing
from index.importers import load_fashion_mnist_arrays
from training.composites import BACKDROPS, composite, loose_box, training_items

BOX_SHARE = 0.25  # this share of the views is searched with a loose box drawn around the product


def render_views(items: np.ndarray, rows: np.ndarray, pre: Preprocessing, seed: int) -> np.ndarray:
    """One query view (C, size, size) uint8 per item, each from its own seeded photo."""
    out = np.zeros((len(rows), pre.channels, pre.size, pre.size), np.uint8)
    for i, row in enumerate(rows):
        rng = np.random.default_rng([seed, int(row)])
        photo = composite(items[i], rng, long_side=(200, 640), kinds=BACKDROPS, others=items)
        box = loose_box(photo.box, *photo.image.size, rng) if rng.random() < BOX_SHARE else None
        try:
            out[i] = pre.to_uint8(photo.image, box)
        except ImageError:  # a photo the search would refuse: its catalog image stands in
            out[i] = pre.to_uint8(Image.fromarray(items[i]).convert("RGB"))
    return out


def _worker(args):
    items, rows, pre_dict, seed = args
    torch.set_num_threads(1)  # one photo at a time per process: the processes are the parallelism
    return render_views(items, rows, Preprocessing.from_dict(pre_dict), seed)


def make_views(out: str | Path, pre: Preprocessing, *, count: int, seed: int = 0, workers: int = 2, log=print) -> Path:
    """`count` views of distinct training items (never the held-out ones), written atomically to `out`:
    views (count, C, H, W) uint8 and rows (count,) = the items' rows in the training manifest."""
    images, _ = load_fashion_mnist_arrays("train")
    pool = training_items(len(images))
    rows = np.sort(np.random.default_rng(seed).choice(pool, min(count, len(pool)), replace=False))
    started = time.perf_counter()
    chunks = np.array_split(np.arange(len(rows)), max(1, workers * 8))
    jobs = [(images[rows[c]], rows[c], pre.to_dict(), seed) for c in chunks if len(c)]
    # Fresh interpreters, not forks: a fork of a process whose OpenMP pool torch has started can hang.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as executor:
        parts = []
        for done, part in enumerate(executor.map(_worker, jobs), 1):
            parts.append(part)
            log(f"query views: {sum(len(p) for p in parts)}/{len(rows)} ({time.perf_counter() - started:.0f}s)")
    mask = default_mask()
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, views=np.concatenate(parts), rows=rows,
                 mask_model=np.array(mask.fingerprint if mask is not None else "none"))
    return Path(out)


class QueryViews:
    """Query views by training row: `swap(images, idx, share, generator)` puts an item's view in
    place of its catalog image for about `share` of the rows that have one."""

    def __init__(self, path: str | Path, rows_in_set: int):
        stored = np.load(path)
        self.views = stored["views"]
        self.mask_model = str(stored["mask_model"]) if "mask_model" in stored else "unknown"
        self.row_of = np.full(rows_in_set, -1, np.int64)
        rows = stored["rows"]
        if rows.max(initial=-1) >= rows_in_set:
            raise ValueError(f"{path}: its views name training rows beyond the set's {rows_in_set}")
        self.row_of[rows] = np.arange(len(rows))

    def swap(self, batch: torch.Tensor, idx: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
        slot = torch.from_numpy(self.row_of)[idx]
        take = (slot >= 0) & (torch.rand(len(idx), generator=generator) < share)
        if take.any():
            batch = batch.clone()
            batch[take] = torch.from_numpy(self.views[slot[take].numpy()]).to(batch.dtype)
        return batch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training views", description=__doc__)
    p.add_argument("--out", default=".cache/query-views.npz")
    p.add_argument("--model", default="models/coinsp-fmnist.pt", help="whose input settings the views take")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    pre = preprocessing_from_checkpoint(load_checkpoint(args.model))
    print(f"wrote {make_views(args.out, pre, count=args.count, seed=args.seed, workers=args.workers)}")


if __name__ == "__main__":
    main()
