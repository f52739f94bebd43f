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


def render_views(items: np.ndarray, rows: np.ndarray, pre: Preprocessing, seed: int,
                 takes: np.ndarray | None = None) -> np.ndarray:
    """One query view (C, size, size) uint8 per item, each from its own seeded photo: the item's
    take-th photo (takes: None is every item's first; a second take is another photo of it)."""
    out = np.zeros((len(rows), pre.channels, pre.size, pre.size), np.uint8)
    for i, row in enumerate(rows):
        take = 0 if takes is None else int(takes[i])
        rng = np.random.default_rng([seed, int(row)] if take == 0 else [seed, int(row), take])
        photo = composite(items[i], rng, long_side=(200, 640), kinds=BACKDROPS, others=items)
        box = loose_box(photo.box, *photo.image.size, rng) if rng.random() < BOX_SHARE else None
        try:
            out[i] = pre.to_uint8(photo.image, box)
        except ImageError:  # a photo the search would refuse: its catalog image stands in
            out[i] = pre.to_uint8(Image.fromarray(items[i]).convert("RGB"))
    return out


def _worker(args):
    items, rows, takes, pre_dict, seed = args
    torch.set_num_threads(1)  # one photo at a time per process: the processes are the parallelism
    return render_views(items, rows, Preprocessing.from_dict(pre_dict), seed, takes)


def make_views(out: str | Path, pre: Preprocessing, *, count: int, per_item: int = 1, seed: int = 0, workers: int = 2,
               log=print) -> Path:
    """`per_item` views (different photos) of each of `count` distinct training items (never the held-out
    ones), written atomically to `out`: views (N, C, H, W) uint8 and rows (N,) = the items' rows in the
    training manifest (an item's views side by side)."""
    if per_item < 1:
        raise ValueError(f"per_item must be at least 1, got {per_item}")
    images, _ = load_fashion_mnist_arrays("train")
    pool = training_items(len(images))
    items = np.sort(np.random.default_rng(seed).choice(pool, min(count, len(pool)), replace=False))
    rows, takes = np.repeat(items, per_item), np.tile(np.arange(per_item), len(items))
    started = time.perf_counter()
    chunks = np.array_split(np.arange(len(rows)), max(1, workers * 8 * per_item))
    jobs = [(images[rows[c]], rows[c], takes[c], pre.to_dict(), seed) for c in chunks if len(c)]
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
    """Query views by training row: `swap(images, idx, share, generator)` puts one of an item's views
    in place of its catalog image for about `share` of the rows that have one (an item with several
    views shows one of them, drawn each time)."""

    def __init__(self, path: str | Path, rows_in_set: int):
        stored = np.load(path)
        rows = stored["rows"]
        order = np.argsort(rows, kind="stable")
        self.views = stored["views"][order]
        self.mask_model = str(stored["mask_model"]) if "mask_model" in stored else "unknown"
        if rows.max(initial=-1) >= rows_in_set:
            raise ValueError(f"{path}: its views name training rows beyond the set's {rows_in_set}")
        self.count_of = np.bincount(rows, minlength=rows_in_set).astype(np.int64)
        self.row_of = np.full(rows_in_set, -1, np.int64)  # each row's first view in self.views
        starts = np.concatenate([[0], np.cumsum(self.count_of)[:-1]])
        self.row_of[self.count_of > 0] = starts[self.count_of > 0]

    def swap(self, batch: torch.Tensor, idx: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
        slot = torch.from_numpy(self.row_of)[idx]
        take = (slot >= 0) & (torch.rand(len(idx), generator=generator) < share)
        if take.any():
            chosen = slot[take]
            counts = torch.from_numpy(self.count_of)[idx][take]
            if int(counts.max()) > 1:  # one of the item's views (a file of one view per item draws nothing more)
                chosen = chosen + (torch.rand(len(chosen), generator=generator) * counts).long().clamp_max(counts - 1)
            batch = batch.clone()
            batch[take] = torch.from_numpy(self.views[chosen.numpy()]).to(batch.dtype)
        return batch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training views", description=__doc__)
    p.add_argument("--out", default=".cache/query-views.npz")
    p.add_argument("--model", default="models/coinsp-fmnist.pt", help="whose input settings the views take")
    p.add_argument("--count", type=int, default=20000, help="how many training items have views")
    p.add_argument("--per-item", type=int, default=1, help="views (different photos) of each item")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    pre = preprocessing_from_checkpoint(load_checkpoint(args.model))
    print(f"wrote {make_views(args.out, pre, count=args.count, per_item=args.per_item, seed=args.seed, workers=args.workers)}")


if __name__ == "__main__":
    main()
