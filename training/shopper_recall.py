"""What shoppers' photos get from a catalog, beside what its own photos get: the Quality page's
shopper Recall@k.

A seeded sample of the catalog's items (SHOPPER_ITEMS) is photographed as a shopper would photograph
them: each item's own catalog photo made into an opaque product of some colour and material, on a
plain backdrop or on a textured one (training.composites.composite, the free labelled photos the
query path learns from), under a phone's light, blur, noise and JPEG. Each photo is searched as the
product searches an upload (the model's query path: the product found in the photo, brought into the
catalog's domain, searched facing either way with each item scored by the better facing:
index.search.grouping.rank_results), with the item it was made from held out of the results. A photo
counts as found at k when another photo of its product (`product_id`) is among its k results: the
product's one Recall@k (index.quality.evaluation.recall_of_rankings). The catalog's own photos of the
same items, searched the same way (leave-one-out, index.quality.evaluation.recall_at_k), give the
catalog-to-catalog figure beside it.

The rendering starts from the catalog photo brought into Fashion-MNIST's domain by the normalisation
every photo goes through (embedder.domain.normalise: trimmed to the product, square, in grey, a light
product on black at full scale): what a Fashion-MNIST item is. For catalogs of colour photos
the product's own colours are not kept (composite paints it), so the figure is a floor there.
The backdrops are the ones the query path was trained on, not held-out families
(benchmarks/shopper_families.py measures those): the figure says what shoppers get on familiar
surfaces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from PIL import Image

from embedder.domain import normalise
from embedder.images import ImageError, decode_image
from embedder.progress import ProgressOption, as_callback
from index.catalog.store import IMAGE_PATH_COLUMN
from index.manifest import CATEGORY_COLUMN, PRODUCT_COLUMN
from index.quality.evaluation import recall_at_k, recall_of_rankings
from index.search.grouping import rank_results
from training.composites import TEXTURED, composite

SHOPPER_ITEMS = 200  # items photographed per backdrop kind (plain, textured): 400 photos
SHOPPER_KS = (1, 10)
BACKDROP_KINDS = {"plain": ("plain",), "textured": tuple(sorted(TEXTURED))}
ITEM_SIDE = 64  # the catalog photo is shrunk to at most this before it is made a product
PHOTO_SIDES = (240, 640)  # the rendered photo's long side, pixels (a phone photo shrunk for upload)
BATCH = 32  # photos embedded at once


@dataclass
class ShopperRecall:
    """Recall@k of shopper photos per backdrop kind and of the catalog's own photos of the same items."""
    table: pd.DataFrame  # rows: "catalog photos", "shopper photos, plain", ...; columns R@k..., queries
    seed: int
    items: int  # items sampled
    unreadable: int = 0  # sampled items whose photo could not be read (left out)
    per_photo: pd.DataFrame = field(default_factory=pd.DataFrame)  # row, backdrop, first-hit rank (-1: missed)

    def to_markdown(self) -> str:
        from embedder.files import markdown_table
        rows = [[name, *(f"{row[c]:.3f}" if c.startswith("R@") else f"{int(row[c])}" for c in self.table.columns)]
                for name, row in self.table.iterrows()]
        return markdown_table(["queries", *self.table.columns], rows)


def item_of_photo(image: Image.Image, side: int = ITEM_SIDE) -> np.ndarray:
    """A catalog photo as composite's item: uint8 grey (H, W), square, at most `side` pixels a side and
    never more than the photo's long side. The normalisation's own light-on-dark view of the photo
    (embedder.domain.normalise): the background measured from the border and levelled to black, the
    product trimmed, centred and at full scale; a photo in which nothing stands out is only fitted."""
    size = max(1, min(side, max(image.size)))
    return normalise(image, size=size, channels=1, polarity="light-on-dark")[0]


def sample_rows(n: int, count: int, seed: int) -> np.ndarray:
    """A seeded sample of `count` rows of n (all of them when n <= count), ascending."""
    if n <= count:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def shopper_photo(item: np.ndarray, kind: str, seed: int, row: int) -> Image.Image:
    """The shopper photo of one item on a backdrop of `kind` (BACKDROP_KINDS): the same photo for
    the same seed, row and kind on every machine."""
    rng = np.random.default_rng([seed, row, list(BACKDROP_KINDS).index(kind)])
    return composite(item, rng, long_side=PHOTO_SIDES, kinds=BACKDROP_KINDS[kind]).image


def shopper_recall(catalog, embedder, *, items: int = SHOPPER_ITEMS, ks=SHOPPER_KS, seed: int = 0,
                   progress: ProgressOption = None) -> ShopperRecall:
    """Recall@k of shopper photos of a seeded sample of the catalog's items (each photographed on a
    plain and on a textured backdrop), searched through `embedder` (the catalog's model: an
    embedder.embed.Embedder) with the item itself held out, beside the catalog photos' own
    leave-one-out Recall@k of the same items. Needs a product_id column."""
    metadata = catalog.metadata
    if PRODUCT_COLUMN not in metadata or IMAGE_PATH_COLUMN not in metadata:
        raise ValueError("shopper Recall@k needs the catalog's product_id and image paths")
    report = as_callback(progress)
    ks = sorted({int(k) for k in ks})
    labels = metadata[PRODUCT_COLUMN].astype(str).to_numpy()
    categories = metadata[CATEGORY_COLUMN].astype(str).to_numpy() if CATEGORY_COLUMN in metadata else None
    rows = sample_rows(len(catalog), items, seed)
    paths = metadata[IMAGE_PATH_COLUMN].to_numpy()
    made: dict[int, np.ndarray] = {}
    for at, row in enumerate(rows):
        try:
            made[int(row)] = item_of_photo(decode_image(paths[row]))
        except (ImageError, OSError):
            pass
        report("Reading the items' photos", at + 1, len(rows))
    kept = np.array(sorted(made), np.int64)
    ids = np.asarray(catalog.ids)
    depth = max(ks)
    frames, table = [], {}
    own = recall_at_k(np.asarray(catalog.embeddings[kept], np.float32), labels[kept], catalog.embeddings, labels,
                      ks=ks, query_gallery_rows=kept)
    table["catalog photos"] = {**{f"R@{k}": own.overall[k] for k in ks}, "queries": own.num_queries}
    total, done = len(kept) * len(BACKDROP_KINDS), 0
    for kind in BACKDROP_KINDS:
        ranked = np.full((len(kept), depth), -1, np.int64)
        for start in range(0, len(kept), BATCH):
            block = kept[start:start + BATCH]
            views = np.stack([embedder.preprocessing.to_uint8(shopper_photo(made[int(r)], kind, seed, int(r)))
                              for r in block])
            both = np.concatenate([views, np.ascontiguousarray(views[..., ::-1])])
            vectors = embedder.embed_uint8(torch.from_numpy(both))
            for i, row in enumerate(block):
                found = rank_results(catalog, vectors[[i, len(block) + i]], depth, exclude={int(ids[row])}).frame
                ranked[start + i, :len(found)] = catalog.rows_of(found["id"].to_numpy())
            done += len(block)
            report(f"Searching shopper photos ({kind} backdrops)", done, total)
        result = recall_of_rankings(ranked, labels[kept], labels, ks=ks, query_gallery_rows=kept,
                                    query_categories=None if categories is None else categories[kept])
        table[f"shopper photos, {kind}"] = {**{f"R@{k}": result.overall[k] for k in ks}, "queries": result.num_queries}
        hits = (ranked >= 0) & (labels[np.maximum(ranked, 0)] == labels[kept][:, None])
        frames.append(pd.DataFrame({"row": kept, "backdrop": kind,
                                    "first_hit": np.where(hits.any(axis=1), hits.argmax(axis=1), -1)}))
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame["queries"] = frame["queries"].astype(int)
    return ShopperRecall(frame, seed, len(rows), len(rows) - len(kept), pd.concat(frames, ignore_index=True))
