"""Catalog hygiene for merchandisers: near-duplicate listings, likely mis-categorised items, and
products whose photos disagree with each other.

One k-nearest-neighbour pass over the catalog's stored vectors feeds all three reports
(index.quality.neighbours: exact up to EXACT_UP_TO items; beyond, candidates from the vectors'
leading principal axes, found through an inverted-file index and re-scored exactly).

- Near-duplicates (index.quality.near_duplicates): pairs proposed by the vectors and by the photos'
  descriptors (index.quality.photo_prints), confirmed by the aligned pixels
  (index.quality.duplicates), grouped.
- Mis-categorised: an item's k nearest neighbours vote for their categories, each with its
  similarity as weight. An item is flagged when the neighbours mostly (over half the weight)
  carry another category; flagged items are ranked by that category's share of the weight, then
  by how close its neighbours are. The category the neighbours carry is the suggestion.
- Disagreeing products: each photo of a product with several photos is compared with the mean of
  the product's other photos and with the mean photo of every product among its neighbours. A
  photo that looks more like another product than like its own is an odd one out; products are
  ranked by the share of their photos that are odd ones out.

The report, its Markdown and its files: index.quality.hygiene_report.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN
from index.catalog.store import ID_COLUMN, IMAGE_PATH_COLUMN
from index.quality.hygiene_report import HygieneError, HygieneReport
from index.quality.near_duplicates import CANDIDATE_NEIGHBOURS, duplicate_table, linked_pairs
from index.quality.neighbours import (DEFAULT_NEIGHBOURS, EXACT_UP_TO, INVERTED_PROBES, REDUCED_DIMS, Neighbours,
                                      neighbours_of, row_blocks)
from index.quality.photo_prints import PhotoPrints

# Chosen on Fashion-MNIST *training* photos with planted faults and store copies (python -m
# benchmarks.hygiene --calibrate), never on the test catalog the benchmark reports.
DEFAULT_DUPLICATE_THRESHOLD = 0.97  # vectors alone (no readable photos)
DEFAULT_CANDIDATE_THRESHOLD = 0.85  # vectors propose a pair ...
DEFAULT_PIXEL_THRESHOLD = 0.993  # ... the aligned photos' gradient correlation confirms it
PHOTO_BLOCK = 512  # photos compared with their candidate products at once (512 x k x d floats)


def category_votes(categories: np.ndarray, neighbours: Neighbours) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, own category index per row, similarity-weighted votes (n, C) normalised to shares)."""
    names, own = np.unique(np.asarray(categories).astype(str), return_inverse=True)
    n, k = neighbours.rows.shape
    weights = np.clip(np.nan_to_num(neighbours.scores, nan=0.0), 0.0, None).astype(np.float64)
    weights[neighbours.rows < 0] = 0.0
    votes = np.zeros((n, len(names)))
    np.add.at(votes, (np.repeat(np.arange(n), k), own[np.maximum(neighbours.rows, 0)].reshape(-1)), weights.reshape(-1))
    total = votes.sum(axis=1, keepdims=True)
    return names, own, np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def miscategorised_rows(categories: np.ndarray, neighbours: Neighbours) -> pd.DataFrame:
    """Rows whose neighbours mostly carry another category, most certain first.

    Columns: row, category, suggested_category, share (of the neighbours' weight), support (mean
    cosine of the neighbours carrying the suggested category), neighbours_agreeing (how many of
    the k carry it)."""
    names, own, shares = category_votes(categories, neighbours)
    suggested = shares.argmax(axis=1)
    share = shares[np.arange(len(own)), suggested]
    flagged = np.flatnonzero((suggested != own) & (share > 0.5))
    carries = own[np.maximum(neighbours.rows[flagged], 0)] == suggested[flagged, None]
    agreeing = carries.sum(axis=1)
    support = np.where(carries, neighbours.scores[flagged], 0.0).sum(axis=1) / np.maximum(agreeing, 1)
    table = pd.DataFrame({"row": flagged, "category": names[own[flagged]], "suggested_category": names[suggested[flagged]],
                          "share": share[flagged], "support": support, "neighbours_agreeing": agreeing})
    return table.sort_values(["share", "support"], ascending=False, kind="stable").reset_index(drop=True)



def odd_photos(vectors, products: np.ndarray, neighbours: Neighbours) -> pd.DataFrame:
    """Per photo of a product with several photos: its cosine to the mean of the product's other
    photos (`own`), and to the closest mean photo among the other products of its neighbours
    (`other`, that product in `looks_like`). Columns: row, product_id, own, other, looks_like."""
    names, product = np.unique(np.asarray(products).astype(str), return_inverse=True)
    counts = np.bincount(product, minlength=len(names))
    n, d = len(product), vectors.shape[1]
    sums = np.zeros((len(names), d), np.float64)
    for start, block in row_blocks(vectors, n):  # sums per product: sort the block, add runs
        labels = product[start:start + len(block)]
        order = np.argsort(labels, kind="stable")
        present, first = np.unique(labels[order], return_index=True)
        sums[present] += np.add.reduceat(block[order].astype(np.float64), first, axis=0)
    centroids = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    rows = np.flatnonzero(counts[product] > 1)
    own = np.empty(len(rows), np.float32)
    other = np.full(len(rows), np.nan, np.float32)
    looks_like = np.full(len(rows), -1, np.int64)
    candidates = product[np.maximum(neighbours.rows, 0)]
    for at in range(0, len(rows), PHOTO_BLOCK):
        chunk = rows[at:at + PHOTO_BLOCK]
        x = np.asarray(vectors[chunk], np.float32)  # rows are ascending: a memory map reads them in order
        rest = sums[product[chunk]] - x  # the product's other photos
        own[at:at + len(chunk)] = (x * rest).sum(axis=1) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
        cand = candidates[chunk]
        cand = np.where(cand == product[chunk, None], -1, cand)
        sims = np.matmul(centroids[np.maximum(cand, 0)], x[:, :, None])[:, :, 0]
        sims[cand < 0] = -np.inf
        best = sims.argmax(axis=1)
        found = np.isfinite(sims[np.arange(len(chunk)), best])
        other[at:at + len(chunk)][found] = sims[np.arange(len(chunk)), best][found]
        looks_like[at:at + len(chunk)][found] = cand[np.arange(len(chunk)), best][found]
    return pd.DataFrame({"row": rows, "product_id": names[product[rows]], "own": own, "other": other,
                         "looks_like": np.where(looks_like >= 0, names[np.maximum(looks_like, 0)], "")})


def product_table(photos: pd.DataFrame, ids: np.ndarray, categories: np.ndarray | None) -> pd.DataFrame:
    """Products ranked by the share of their photos that look like another product, then by the
    worst photo's margin (own - other)."""
    if len(photos) == 0:
        return pd.DataFrame(columns=["product_id", "photos", "odd_photos", "odd_share", "worst_id", "worst_own",
                                     "worst_other", "looks_like", "categories"])
    photos = photos.assign(margin=photos["own"] - photos["other"].fillna(-1.0), id=ids[photos["row"]],
                           odd=(photos["other"] > photos["own"]))
    if categories is not None:
        photos["category"] = np.asarray(categories).astype(str)[photos["row"]]
    worst = photos.sort_values("margin", kind="stable").groupby("product_id", sort=False).head(1).set_index("product_id")
    by_product = photos.groupby("product_id")
    table = pd.DataFrame({"photos": by_product.size(), "odd_photos": by_product["odd"].sum().astype(int)})
    table["odd_share"] = table["odd_photos"] / table["photos"]
    table["worst_id"] = worst["id"]
    table["worst_own"] = worst["own"]
    table["worst_other"] = worst["other"]
    table["looks_like"] = worst["looks_like"]
    table["categories"] = (by_product["category"].agg(lambda c: ", ".join(sorted(set(c))))
                           if categories is not None else "")
    table["worst_margin"] = worst["margin"]
    table = table.sort_values(["odd_share", "worst_margin"], ascending=[False, True], kind="stable")
    return table.drop(columns="worst_margin").reset_index()


# ---------------------------------------------------------------- the whole report

def _item_columns(metadata: pd.DataFrame) -> list[str]:
    return [c for c in (ID_COLUMN, PATH_COLUMN, CATEGORY_COLUMN, PRODUCT_COLUMN) if c in metadata]


def hygiene_report(catalog, *, k: int = DEFAULT_NEIGHBOURS,
                   duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                   candidate_threshold: float = DEFAULT_CANDIDATE_THRESHOLD,
                   pixel_threshold: float | None = DEFAULT_PIXEL_THRESHOLD) -> HygieneReport:
    """The three reports for a loaded catalog (index.catalog.loaded.Catalog: embeddings, metadata with
    image_path, info)."""
    return report_from_vectors(catalog.embeddings, catalog.metadata, k=k, duplicate_threshold=duplicate_threshold,
                               candidate_threshold=candidate_threshold, pixel_threshold=pixel_threshold,
                               facts={"catalog": str(getattr(catalog, "folder", "") or ""),
                                      "model_fingerprint": catalog.info.model_fingerprint,
                                      "version": catalog.info.version})


def report_from_vectors(vectors, metadata: pd.DataFrame, *, k: int = DEFAULT_NEIGHBOURS,
                        duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                        candidate_threshold: float = DEFAULT_CANDIDATE_THRESHOLD,
                        pixel_threshold: float | None = DEFAULT_PIXEL_THRESHOLD,
                        neighbours: Neighbours | None = None, prints: PhotoPrints | None = None,
                        facts: dict | None = None) -> HygieneReport:
    """The three reports from vectors (n, d), L2-normalised, and their metadata rows (same order).

    The pixel check runs when the metadata has an image_path column and pixel_threshold is set.
    neighbours / prints: already computed for these vectors (several settings compared on one
    catalog); neighbours must hold at least k columns."""
    if len(metadata) != len(vectors):
        raise HygieneError(f"{len(metadata)} metadata rows for {len(vectors)} vectors")
    for name, value in (("duplicate", duplicate_threshold), ("candidate", candidate_threshold)):
        if not 0.0 < value <= 1.0:
            raise HygieneError(f"the {name} threshold is a cosine in (0, 1], got {value}")
    if pixel_threshold is not None and not -1.0 <= pixel_threshold <= 1.0:
        raise HygieneError(f"the pixel threshold is a correlation in [-1, 1], got {pixel_threshold}")
    if k < 1:
        raise HygieneError(f"k must be at least 1, got {k}")
    seconds = {}
    started = time.perf_counter()
    pixel_check = pixel_threshold is not None and IMAGE_PATH_COLUMN in metadata
    if neighbours is None:  # the pixel check's candidates come from further out than the reports read
        neighbours = neighbours_of(vectors, max(k, CANDIDATE_NEIGHBOURS) if pixel_check else k)
    elif neighbours.rows.shape[1] < k:
        raise HygieneError(f"{neighbours.rows.shape[1]} neighbours given for k = {k}")
    wide = Neighbours(neighbours.scores[:, :max(k, CANDIDATE_NEIGHBOURS)], neighbours.rows[:, :max(k, CANDIDATE_NEIGHBOURS)])
    neighbours = Neighbours(neighbours.scores[:, :k], neighbours.rows[:, :k])
    seconds["neighbours"] = time.perf_counter() - started
    search = ("exact" if len(vectors) <= EXACT_UP_TO or vectors.shape[1] <= REDUCED_DIMS else
              f"candidates on {REDUCED_DIMS} principal axes (inverted file, {INVERTED_PROBES} lists probed) "
              "re-scored exactly")
    metadata = metadata.reset_index(drop=True)
    items = metadata[_item_columns(metadata)]
    ids = metadata[ID_COLUMN].to_numpy() if ID_COLUMN in metadata else np.arange(len(metadata))

    step = time.perf_counter()
    if pixel_check and prints is None:
        prints = PhotoPrints(metadata[IMAGE_PATH_COLUMN].to_numpy())
    first, second, cosine, pixels, pixel_facts = linked_pairs(
        vectors, wide, neighbours, prints if pixel_check else None, duplicate_threshold=duplicate_threshold,
        candidate_threshold=candidate_threshold, pixel_threshold=pixel_threshold)
    duplicates = duplicate_table(items, ids, first, second, cosine, pixels, pixel_check=pixel_check)
    seconds["duplicates"] = time.perf_counter() - step

    step = time.perf_counter()
    if CATEGORY_COLUMN in metadata:
        flagged = miscategorised_rows(metadata[CATEGORY_COLUMN].to_numpy(), neighbours)
        miscategorised = items.iloc[flagged["row"]].reset_index(drop=True).drop(columns=CATEGORY_COLUMN)
        miscategorised = pd.concat([flagged.drop(columns="row"), miscategorised], axis=1)
        miscategorised = miscategorised[[*(c for c in miscategorised.columns if c in (ID_COLUMN, PATH_COLUMN)),
                                         "category", "suggested_category", "share", "support",
                                         "neighbours_agreeing", *([PRODUCT_COLUMN] if PRODUCT_COLUMN in items else [])]]
        miscategorised.insert(0, "rank", np.arange(1, len(miscategorised) + 1))
    else:
        miscategorised = pd.DataFrame(columns=["rank", ID_COLUMN, "category", "suggested_category", "share"])
    seconds["miscategorised"] = time.perf_counter() - step

    step = time.perf_counter()
    if PRODUCT_COLUMN in metadata:
        photos = odd_photos(vectors, metadata[PRODUCT_COLUMN].to_numpy(), neighbours)
        categories = metadata[CATEGORY_COLUMN].to_numpy() if CATEGORY_COLUMN in metadata else None
        products = product_table(photos, ids, categories)
    else:
        products = product_table(pd.DataFrame(), ids, None)
    seconds["products"] = time.perf_counter() - step
    seconds["total"] = time.perf_counter() - started
    return HygieneReport(duplicates, miscategorised, products,
                         {**(facts or {}), "items": len(metadata), "k": int(neighbours.rows.shape[1]),
                          "neighbour_search": search,
                          "duplicate_threshold": float(duplicate_threshold), **pixel_facts,
                          "seconds": {name: round(s, 3) for name, s in seconds.items()}})
