"""Catalog hygiene for merchandisers: near-duplicate listings, likely mis-categorised items, and
products whose photos disagree with each other.

One k-nearest-neighbour pass over the catalog's stored vectors feeds all three reports (exact,
index.quality.evaluation.nearest_neighbours, up to EXACT_UP_TO items; beyond, candidates from the vectors'
leading principal axes, found through an inverted-file index and re-scored exactly: reduced_neighbours).

- Near-duplicates: pairs are proposed by the vectors (cosine at or above `candidate_threshold'
  among the CANDIDATE_NEIGHBOURS nearest) and by the photos themselves (each photo's nearest photos
  by each descriptor of index.quality.duplicates: the whole frame and the product centred and
  scaled by its spread, both mirror-symmetric, and four views with a corner of the product's box
  in place: a border, a shift, a mirror image or a watermark can move a vector far), and confirmed by the pixels (index.quality.duplicates.match_scores:
  frame onto frame and pixel onto pixel, aligned over shifts and mirror images, then the gradient
  fields of the overlapping regions compared, at `pixel_threshold` or more). Every photo is decoded
  once. Without image paths (or with pixel_threshold None), or where a photo cannot be read, a pair
  of vector neighbours is linked when its cosine reaches `duplicate_threshold`. Linked items form a
  group (connected components), so a photo listed three times is one group.
- Mis-categorised: an item's k nearest neighbours vote for their categories, each with its
  similarity as weight. An item is flagged when the neighbours mostly (over half the weight)
  carry another category; flagged items are ranked by that category's share of the weight, then
  by how close its neighbours are. The category the neighbours carry is the suggestion.
- Disagreeing products: each photo of a product with several photos is compared with the mean of
  the product's other photos and with the mean photo of every product among its neighbours. A
  photo that looks more like another product than like its own is an odd one out; products are
  ranked by the share of their photos that are odd ones out.

CLI: python -m index hygiene --catalog DIR --out reports/PREFIX  (PREFIX-*.csv, PREFIX.md, PREFIX.json)
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embedder.files import markdown_table
from index.quality.duplicates import DESCRIPTOR_FLOOR, PhotoPrints, connected_groups, match_scores
from index.quality.evaluation import nearest_neighbours
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN
from index.catalog.store import ID_COLUMN, IMAGE_PATH_COLUMN

# Chosen on Fashion-MNIST *training* photos with planted faults and store copies (python -m
# benchmarks.hygiene --calibrate), never on the test catalog the benchmark reports.
DEFAULT_NEIGHBOURS = 10
DEFAULT_DUPLICATE_THRESHOLD = 0.97  # vectors alone (no readable photos)
DEFAULT_CANDIDATE_THRESHOLD = 0.85  # vectors propose a pair ...
DEFAULT_PIXEL_THRESHOLD = 0.993  # ... the aligned photos' gradient correlation confirms it
CANDIDATE_NEIGHBOURS = 20  # nearest vectors a pair may be proposed from (the reports read the k nearest)
DESCRIPTOR_NEIGHBOURS = {"whole": 5, "moment": 10, "corner": 3}  # nearest photos by each descriptor (each corner)
CHECK_BLOCK = 32_768  # candidate pairs handed to the pixel check at once
EXACT_UP_TO = 20_000  # items searched exactly; larger catalogs through an inverted-file index
INVERTED_PROBES = 16  # lists searched of the inverted-file index (4 sqrt(n) lists)
REDUCED_DIMS = 128
RESCORE_EXTRA = 20  # candidates beyond k re-scored exactly
RESCORE_BLOCK = 1024  # rows whose candidates are re-scored at once (1024 x 40 x 2048 floats: 335 MB)
PCA_SAMPLE = 20_000
ROW_BLOCK = 16_384  # rows of vectors read at once
PHOTO_BLOCK = 512  # photos compared with their candidate products at once (512 x k x d floats)
MARKDOWN_ROWS = 50  # rows of each table in the Markdown report (the CSVs hold every row)


class HygieneError(ValueError):
    """A catalog the reports cannot be computed for (too few items, no categories)."""


@dataclass
class Neighbours:
    """Each row's k nearest other rows: scores (n, k) float32 cosine, descending; rows (n, k) int64."""
    scores: np.ndarray
    rows: np.ndarray


@dataclass
class HygieneReport:
    duplicates: pd.DataFrame  # one row per item in a group: group, group_size, id, ..., closest_id, similarity
    miscategorised: pd.DataFrame  # flagged items, ranked: rank, id, ..., category, suggested_category, share
    products: pd.DataFrame  # products with several photos, ranked: product_id, photos, odd_photos, ...
    facts: dict = field(default_factory=dict)  # items, settings, seconds per step

    def summary(self) -> str:
        f = self.facts
        groups = self.duplicates["group"].nunique() if len(self.duplicates) else 0
        odd = int((self.products["odd_photos"] > 0).sum()) if len(self.products) else 0
        return (f"{f['items']:,} items: {groups:,} near-duplicate groups ({len(self.duplicates):,} items, "
                f"{duplicate_rule(f)}), {len(self.miscategorised):,} likely mis-categorised items, "
                f"{odd:,} of {len(self.products):,} products with photos that look like another product "
                f"({f['seconds']['total']:.1f} s)")

    def to_markdown(self, rows: int = MARKDOWN_ROWS) -> str:
        f = self.facts
        parts = [f"# Catalog hygiene: {f.get('catalog', '')}", "",
                 f"{self.summary()}.", "",
                 f"Model fingerprint `{f.get('model_fingerprint', '')}`; k = {f['k']} nearest neighbours (inner "
                 f"product on the stored vectors, {f.get('neighbour_search', 'exact')}). Similarities are cosines.", ""]
        for title, table, note in (
                ("Near-duplicate listings", self.duplicates,
                 f"Items linked ({duplicate_rule(f)}), grouped; `similarity` is the cosine to the item's closest "
                 "linked item (`closest_id`), `pixel_similarity` the correlation of their photos' gradients, "
                 "aligned (scale, shift, mirror image)."),
                ("Likely mis-categorised items", self.miscategorised,
                 "Items whose nearest neighbours mostly carry another category; `share` is the similarity-weighted "
                 "share of the neighbours carrying `suggested_category`."),
                ("Products whose photos disagree", self.products,
                 "Products with several photos; an odd photo looks more like another product (`looks_like`) than "
                 "like the rest of its own product.")):
            parts += [f"## {title}", "", note, ""]
            if len(table) == 0:
                parts += ["None found.", ""]
                continue
            shown = table.head(rows)
            parts += [frame_markdown(shown), ""]
            if len(table) > rows:
                parts += [f"… {len(table) - rows:,} more rows in the CSV.", ""]
        return "\n".join(parts)

    def write(self, prefix: str | Path) -> list[Path]:
        """PREFIX-duplicates.csv, PREFIX-miscategorised.csv, PREFIX-products.csv, PREFIX.md, PREFIX.json."""
        from embedder.files import atomic_path

        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in (("duplicates", self.duplicates), ("miscategorised", self.miscategorised),
                            ("products", self.products)):
            target = prefix.with_name(f"{prefix.name}-{name}.csv")
            with atomic_path(target) as tmp:
                table.to_csv(tmp, index=False, float_format="%.3f")
            written.append(target)
        for suffix, text in ((".md", self.to_markdown()), (".json", json.dumps(self.facts, indent=2) + "\n")):
            target = prefix.with_name(prefix.name + suffix)
            with atomic_path(target) as tmp:
                Path(tmp).write_text(text)
            written.append(target)
        return written


def duplicate_rule(facts: dict) -> str:
    """How two items were linked as duplicates, in words."""
    if facts.get("pixel_threshold") is None:
        return f"cosine >= {facts['duplicate_threshold']:.3f}"
    return (f"proposed by cosine >= {facts['candidate_threshold']:.3f} or by the photos' descriptors, confirmed by "
            f"the aligned photos' gradient correlation >= {facts['pixel_threshold']:.3f}; "
            f"{facts.get('pixel_unreadable', 0)} unreadable photos judged by cosine >= "
            f"{facts['duplicate_threshold']:.3f}")


def frame_markdown(table: pd.DataFrame) -> str:
    """A data frame as a Markdown table (embedder.files.markdown_table), floats with three decimals."""
    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{value:.3f}"
        return str(value).replace("|", "\\|")
    return markdown_table(list(table.columns), [[cell(v) for v in row] for row in table.itertuples(index=False)])


# ---------------------------------------------------------------- the three reports

def neighbours_of(vectors, k: int = DEFAULT_NEIGHBOURS) -> Neighbours:
    """Every row's k nearest other rows: exactly (blocks of queries; no n x n matrix) up to
    EXACT_UP_TO items, beyond through reduced_neighbours."""
    if len(vectors) < 2:
        raise HygieneError(f"hygiene needs at least 2 items, the catalog has {len(vectors)}")
    n, d = vectors.shape
    if n > EXACT_UP_TO and d > REDUCED_DIMS:
        return reduced_neighbours(vectors, k)
    scores, rows = nearest_neighbours(vectors, vectors, k, exclude_self=True)
    return Neighbours(scores, rows)


def similar_rows(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of each row's k nearest other rows of x (float32, n x d) by inner product:
    exactly up to EXACT_UP_TO rows; beyond, through a FAISS inverted-file index (4 sqrt(n) lists
    trained on a seeded sample, INVERTED_PROBES searched): close rows, the ones these reports look
    for, share a list far more often than not. Rows with fewer than k others found are padded
    with -1 (score -inf)."""
    n, d = x.shape
    k = min(k, n - 1)
    if n <= EXACT_UP_TO:
        return nearest_neighbours(x, x, k, exclude_self=True)
    import faiss

    x = np.ascontiguousarray(x, np.float32)
    lists = int(min(4 * np.sqrt(n), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(x[np.sort(rng.choice(n, min(n, 64 * lists), replace=False))])
    index.add(x)
    index.nprobe = INVERTED_PROBES
    scores, rows = index.search(x, k + 1)
    own = rows == np.arange(n)[:, None]
    own[:, -1] |= ~own.any(axis=1)  # a row missing from its own result loses its last neighbour instead
    keep = ~own
    return (scores[keep].reshape(n, k).astype(np.float32),
            np.where(rows[keep] >= 0, rows[keep], -1).reshape(n, k).astype(np.int64))


def reduced_neighbours(vectors, k: int) -> Neighbours:
    """k nearest neighbours of a large catalog: candidates found on the vectors projected on their
    REDUCED_DIMS leading principal axes (from a seeded sample of rows) through similar_rows, then
    re-scored exactly against the stored vectors and the best k kept. The exact search of 10^5 items
    in 2048 dimensions takes minutes; this keeps what the reports read of it (reports/hygiene/hygiene.md)."""
    n, d = vectors.shape
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(n, PCA_SAMPLE), replace=False))
    rows = np.asarray(vectors[sample], np.float32)
    mean = rows.mean(axis=0)
    _, _, axes = np.linalg.svd(rows - mean, full_matrices=False)
    basis = np.ascontiguousarray(axes[:REDUCED_DIMS].T, np.float32)
    projected = np.empty((n, REDUCED_DIMS), np.float32)
    for start, block in _row_blocks(vectors, n):
        projected[start:start + len(block)] = block @ basis
    wide = min(k + RESCORE_EXTRA, n - 1)
    _, candidates = similar_rows(projected, wide)
    scores = np.empty(candidates.shape, np.float32)
    for start, block in _row_blocks(vectors, n):
        for at in range(0, len(block), RESCORE_BLOCK):  # the candidates' vectors of a few rows at a time
            part, rows_here = block[at:at + RESCORE_BLOCK], candidates[start + at:start + at + RESCORE_BLOCK]
            scores[start + at:start + at + len(part)] = np.einsum(
                "id,ijd->ij", part, np.asarray(vectors[np.maximum(rows_here, 0).reshape(-1)],
                                               np.float32).reshape(*rows_here.shape, d))
    scores[candidates < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return Neighbours(np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1))


def candidate_pairs(neighbours: Neighbours, prints: PhotoPrints, rows: np.ndarray, *, candidate_threshold: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first < second) worth comparing: neighbours (every column given) at cosine >=
    candidate_threshold, and each photo's nearest photos by each descriptor (DESCRIPTOR_NEIGHBOURS,
    correlation >= DESCRIPTOR_FLOOR)."""
    n = len(neighbours.rows)
    close = (neighbours.scores >= candidate_threshold) & (neighbours.rows >= 0)
    a = [np.repeat(np.arange(n), close.sum(axis=1))]
    b = [neighbours.rows[close]]
    readable = np.asarray([r for r in rows if prints(int(r)) is not None], np.int64)
    if len(readable) > 1:
        views = [("whole", lambda p: p.whole), ("moment", lambda p: p.moment)]
        views += [("corner", lambda p, c=c: p.corners[c]) for c in range(4)]  # a corner against the same corner
        for name, of in views:
            descriptors = np.stack([of(prints(int(r))) for r in readable]).astype(np.float32)
            scores, near = similar_rows(descriptors, DESCRIPTOR_NEIGHBOURS[name])
            keep = (near >= 0) & (scores >= DESCRIPTOR_FLOOR)
            a.append(np.repeat(readable, keep.sum(axis=1)))
            b.append(readable[near[keep]])
    a, b = np.concatenate(a), np.concatenate(b)
    if len(a) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return pairs[:, 0], pairs[:, 1]


def confirmed_pairs(vectors, first: np.ndarray, second: np.ndarray, prints: PhotoPrints, *, pixel_threshold: float,
                    fallback_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(linked, cosine, pixel score; NaN where not compared) of each candidate pair: linked when
    the photos match at pixel_threshold or more (index.quality.duplicates.match_scores), or, when either
    photo is unreadable, when the cosine reaches fallback_threshold."""
    cosine = np.empty(len(first), np.float32)
    for at in range(0, len(first), CHECK_BLOCK):
        f, s = first[at:at + CHECK_BLOCK], second[at:at + CHECK_BLOCK]
        cosine[at:at + len(f)] = np.einsum("ij,ij->i", np.asarray(vectors[f], np.float32),
                                           np.asarray(vectors[s], np.float32))
    pixels = np.full(len(first), np.nan, np.float32)
    readable = np.array([prints(int(i)) is not None and prints(int(j)) is not None for i, j in zip(first, second)],
                        bool)
    compared = np.flatnonzero(readable)
    for at in range(0, len(compared), CHECK_BLOCK):
        block = compared[at:at + CHECK_BLOCK]
        pixels[block] = match_scores([prints(int(i)) for i in first[block]], [prints(int(j)) for j in second[block]])
    linked = np.where(readable, pixels >= pixel_threshold, cosine >= fallback_threshold)
    return linked, cosine, pixels


def duplicate_groups(n: int, first: np.ndarray, second: np.ndarray, strength: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group of each row, -1 when it has no duplicate; its closest duplicate's row; the strength
    of that link) from the linked pairs. Groups are connected components, numbered 0, 1, ... by
    their strongest link, most alike first."""
    closest = np.full(n, -1, np.int64)
    best = np.full(n, -np.inf, np.float32)
    for a, b in ((first, second), (second, first)):
        order = np.lexsort((b, -strength))  # strongest first, ties by row: the same on any machine
        for i, j, value in zip(a[order], b[order], strength[order]):
            if value > best[i]:
                best[i], closest[i] = value, j
    label = connected_groups(n, first, second)
    in_group = closest >= 0
    group = np.full(n, -1, np.int64)
    if in_group.any():
        members = np.flatnonzero(in_group)
        labels, member_group = np.unique(label[members], return_inverse=True)
        strongest = np.full(len(labels), -np.inf)
        np.maximum.at(strongest, member_group, best[members])
        order = np.lexsort((labels, -strongest))
        renumber = np.empty(len(labels), np.int64)
        renumber[order] = np.arange(len(labels))
        group[members] = renumber[member_group]
    return group, closest, np.where(in_group, best, np.nan).astype(np.float32)


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


def _row_blocks(vectors, n: int):
    for start in range(0, n, ROW_BLOCK):
        yield start, np.ascontiguousarray(vectors[start:start + ROW_BLOCK], dtype=np.float32)


def odd_photos(vectors, products: np.ndarray, neighbours: Neighbours) -> pd.DataFrame:
    """Per photo of a product with several photos: its cosine to the mean of the product's other
    photos (`own`), and to the closest mean photo among the other products of its neighbours
    (`other`, that product in `looks_like`). Columns: row, product_id, own, other, looks_like."""
    names, product = np.unique(np.asarray(products).astype(str), return_inverse=True)
    counts = np.bincount(product, minlength=len(names))
    n, d = len(product), vectors.shape[1]
    sums = np.zeros((len(names), d), np.float64)
    for start, block in _row_blocks(vectors, n):  # sums per product: sort the block, add runs
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
                                      "model_fingerprint": catalog.info.get("model_fingerprint", ""),
                                      "version": catalog.info.get("version", "")})


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
    n = len(metadata)
    pixel_facts = {"pixel_threshold": None}
    if pixel_check:
        if prints is None:
            prints = PhotoPrints(metadata[IMAGE_PATH_COLUMN].to_numpy())
        decoded, unreadable = len(prints), prints.unreadable
        prints.load(range(n))  # every photo: the descriptors propose pairs the vectors miss
        first, second = candidate_pairs(wide, prints, np.arange(n), candidate_threshold=candidate_threshold)
        linked, cosine, pixels = confirmed_pairs(vectors, first, second, prints, pixel_threshold=pixel_threshold,
                                                 fallback_threshold=duplicate_threshold)
        pixel_facts = {"candidate_threshold": float(candidate_threshold), "pixel_threshold": float(pixel_threshold),
                       "pixel_pairs": int(np.isfinite(pixels).sum()), "photos_decoded": len(prints) - decoded,
                       "pixel_unreadable": prints.unreadable - unreadable}
    else:
        close = (neighbours.scores >= duplicate_threshold) & (neighbours.rows >= 0)
        first, second = np.repeat(np.arange(n), close.sum(axis=1)), neighbours.rows[close]
        cosine = neighbours.scores[close]
        linked, pixels = np.ones(len(first), bool), np.full(len(first), np.nan, np.float32)
    first, second, cosine, pixels = first[linked], second[linked], cosine[linked], pixels[linked]
    group, closest, _ = duplicate_groups(n, first, second, np.where(np.isfinite(pixels), pixels, cosine))
    members = np.flatnonzero(group >= 0)
    link_cosine = {(int(i), int(j)): float(c) for i, j, c in zip(first, second, cosine)}
    link_pixels = {(int(i), int(j)): float(p) for i, j, p in zip(first, second, pixels)}

    def of_link(table: dict, i: int, j: int) -> float:
        return table.get((i, j), table.get((j, i), np.nan))
    duplicates = items.iloc[members].reset_index(drop=True)
    duplicates.insert(0, "group", group[members])
    duplicates.insert(1, "group_size", np.bincount(group[members])[group[members]] if len(members) else [])
    duplicates["closest_id"] = ids[closest[members]]
    duplicates["similarity"] = np.array([of_link(link_cosine, i, closest[i]) for i in members], np.float32)
    if pixel_check:
        duplicates["pixel_similarity"] = np.array([of_link(link_pixels, i, closest[i]) for i in members], np.float32)
    duplicates = duplicates.sort_values(["group", "similarity", "closest_id"], ascending=[True, False, True],
                                        kind="stable").reset_index(drop=True)
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
