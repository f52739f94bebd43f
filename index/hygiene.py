"""Catalog hygiene for merchandisers: near-duplicate listings, likely mis-categorised items, and
products whose photos disagree with each other.

Everything works from a catalog's stored vectors and metadata (no model): one exact
k-nearest-neighbour pass (index.evaluation.nearest_neighbours: FAISS inner product on the
L2-normalised vectors, in blocks, so 10^5 items fit in memory) feeds all three reports.

- Near-duplicates: the vectors propose pairs (cosine at or above `candidate_threshold` among the
  k nearest) and the pixels confirm them: both photos are decoded (embedder.images.decode_image),
  made grey, shrunk to THUMBNAIL_SIDE pixels a side and blurred; a pair whose thumbnails correlate
  at `pixel_threshold` or more is linked. Resizing and re-encoding a small photo moves its vector
  further than many distinct items sit apart, but barely changes its blurred thumbnail. Only photos in candidate pairs are decoded, each once. Without image paths
  (or with pixel_threshold None), or where a photo cannot be read, a pair is linked when its
  cosine reaches `duplicate_threshold`. Linked items form a group (connected components), so a
  photo listed three times is one group.
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embedder.images import ImageError, decode_image
from index.evaluation import nearest_neighbours
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN
from index.store import IMAGE_PATH_COLUMN

# Chosen on 10,000 Fashion-MNIST *training* photos with planted faults (python -m benchmarks.hygiene
# --calibrate), never on the test catalog the benchmark reports.
DEFAULT_NEIGHBOURS = 10
DEFAULT_DUPLICATE_THRESHOLD = 0.97  # vectors alone (no readable photos)
DEFAULT_CANDIDATE_THRESHOLD = 0.90  # vectors propose a pair ...
DEFAULT_PIXEL_THRESHOLD = 0.995  # ... its thumbnails' correlation confirms it
THUMBNAIL_SIDE = 32
THUMBNAIL_BLUR = 1.0  # Gaussian radius in thumbnail pixels
ROW_BLOCK = 16_384  # rows of vectors read at once when summing products' photos
PHOTO_BLOCK = 512  # photos compared with their candidate products at once (512 x k x d floats)
ID_COLUMN = "id"
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
                 f"Model fingerprint `{f.get('model_fingerprint', '')}`; k = {f['k']} nearest neighbours (exact "
                 f"inner product on the stored vectors). Similarities are cosines.", ""]
        for title, table, note in (
                ("Near-duplicate listings", self.duplicates,
                 f"Items linked ({duplicate_rule(f)}), grouped; `similarity` is the cosine to the item's closest "
                 "linked item (`closest_id`), `pixel_similarity` the correlation of their thumbnails."),
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
            parts += [markdown_table(shown), ""]
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
    return (f"cosine >= {facts['candidate_threshold']:.3f} confirmed by thumbnail correlation >= "
            f"{facts['pixel_threshold']:.3f}; {facts.get('pixel_unreadable', 0)} unreadable photos judged by "
            f"cosine >= {facts['duplicate_threshold']:.3f}")


def markdown_table(table: pd.DataFrame) -> str:
    """A data frame as a Markdown table (embedder.files.markdown_table), floats with three decimals."""
    from embedder.files import markdown_table as write_table

    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{value:.3f}"
        return str(value).replace("|", "\\|")
    return write_table(list(table.columns), [[cell(v) for v in row] for row in table.itertuples(index=False)])


# ---------------------------------------------------------------- the three reports

def neighbours_of(vectors, k: int = DEFAULT_NEIGHBOURS) -> Neighbours:
    """Every row's k nearest other rows, exactly (blocks of queries; no n x n matrix)."""
    if len(vectors) < 2:
        raise HygieneError(f"hygiene needs at least 2 items, the catalog has {len(vectors)}")
    scores, rows = nearest_neighbours(vectors, vectors, k, exclude_self=True)
    return Neighbours(scores, rows)


def pixel_thumbnail(path) -> np.ndarray:
    """A photo's grey thumbnail: the whole frame shrunk to THUMBNAIL_SIDE pixels a side and blurred
    (Gaussian, THUMBNAIL_BLUR pixels), flattened, zero-mean and unit-norm, so the dot product of two
    thumbnails is their correlation (a plain photo: zeros). The blur takes out what resampling and
    JPEG re-encoding add; the whole frame is kept because a resized copy keeps its framing, while
    trimming to the product at a fixed contrast moved with the JPEG noise (reports/hygiene/thumbnails.md)."""
    from PIL import Image, ImageFilter

    image = decode_image(path, max_side=8 * THUMBNAIL_SIDE).convert("L")
    small = image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.array(small.filter(ImageFilter.GaussianBlur(THUMBNAIL_BLUR)), np.float32).reshape(-1)
    pixels -= pixels.mean()
    norm = np.linalg.norm(pixels)
    return pixels / norm if norm > 1e-6 else np.zeros_like(pixels)


class Thumbnails:
    """Thumbnails of catalog rows, decoded on first use and kept; rows whose photo cannot be read
    are remembered (None) and counted, never retried."""

    def __init__(self, paths):
        self.paths = paths
        self._cache: dict[int, np.ndarray | None] = {}
        self.unreadable = 0

    def __call__(self, row: int) -> np.ndarray | None:
        if row not in self._cache:
            try:
                self._cache[row] = pixel_thumbnail(self.paths[row])
            except (ImageError, OSError):
                self._cache[row] = None
                self.unreadable += 1
        return self._cache[row]

    def __len__(self) -> int:
        return len(self._cache)


def confirmed_links(neighbours: Neighbours, thumbnails: Thumbnails, *, candidate_threshold: float,
                    pixel_threshold: float, fallback_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(linked (n, k) bool, pixel correlation (n, k), NaN where not compared): each neighbour at
    cosine >= candidate_threshold is linked when the two thumbnails correlate at pixel_threshold or
    more, or, when either photo is unreadable, when the cosine reaches fallback_threshold."""
    candidate = (neighbours.scores >= candidate_threshold) & (neighbours.rows >= 0)
    linked = np.zeros(candidate.shape, bool)
    pixels = np.full(candidate.shape, np.nan, np.float32)
    for i, j in zip(*np.nonzero(candidate)):
        a, b = thumbnails(int(i)), thumbnails(int(neighbours.rows[i, j]))
        if a is None or b is None:
            linked[i, j] = neighbours.scores[i, j] >= fallback_threshold
        else:
            pixels[i, j] = float(a @ b)
            linked[i, j] = pixels[i, j] >= pixel_threshold
    return linked, pixels


def duplicate_groups(neighbours: Neighbours, threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                     linked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group of each row, -1 when it has no duplicate; its closest duplicate's row; that cosine).

    linked: (n, k) which neighbours are duplicates (confirmed_links); by default those at cosine
    >= threshold. Groups are numbered 0, 1, ... by their highest similarity, most alike first."""
    n = len(neighbours.rows)
    close = (neighbours.scores >= threshold) if linked is None else linked.copy()
    close &= neighbours.rows >= 0
    a = np.repeat(np.arange(n), close.sum(axis=1))
    b = neighbours.rows[close]
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist()):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(n)]) if len(a) else parent
    # The first linked neighbour is the closest duplicate (scores are descending).
    has_duplicate = close.any(axis=1)
    first = close.argmax(axis=1)
    closest = np.where(has_duplicate, neighbours.rows[np.arange(n), first], -1)
    similarity = np.where(has_duplicate, neighbours.scores[np.arange(n), first], np.nan).astype(np.float32)
    in_group = np.zeros(n, bool)
    in_group[a], in_group[b] = True, True
    group = np.full(n, -1, np.int64)
    if in_group.any():
        members = np.flatnonzero(in_group)
        labels, member_group = np.unique(roots[members], return_inverse=True)
        best = np.full(len(labels), -np.inf)
        np.maximum.at(best, member_group, np.nan_to_num(similarity[members], nan=-np.inf))
        order = np.argsort(-best, kind="stable")
        renumber = np.empty(len(labels), np.int64)
        renumber[order] = np.arange(len(labels))
        group[members] = renumber[member_group]
    return group, closest, similarity


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
    """The three reports for a loaded catalog (index.catalog.Catalog: embeddings, metadata with
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
                        neighbours: Neighbours | None = None, thumbnails: Thumbnails | None = None,
                        facts: dict | None = None) -> HygieneReport:
    """The three reports from vectors (n, d), L2-normalised, and their metadata rows (same order).

    The pixel check runs when the metadata has an image_path column and pixel_threshold is set.
    neighbours / thumbnails: already computed for these vectors (several settings compared on one
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
    if neighbours is None:
        neighbours = neighbours_of(vectors, k)
    elif neighbours.rows.shape[1] < k:
        raise HygieneError(f"{neighbours.rows.shape[1]} neighbours given for k = {k}")
    neighbours = Neighbours(neighbours.scores[:, :k], neighbours.rows[:, :k])
    seconds["neighbours"] = time.perf_counter() - started
    metadata = metadata.reset_index(drop=True)
    items = metadata[_item_columns(metadata)]
    ids = metadata[ID_COLUMN].to_numpy() if ID_COLUMN in metadata else np.arange(len(metadata))

    step = time.perf_counter()
    pixel_check = pixel_threshold is not None and IMAGE_PATH_COLUMN in metadata
    pixel_facts = {"pixel_threshold": None}
    linked = pixels = None
    if pixel_check:
        if thumbnails is None:
            thumbnails = Thumbnails(metadata[IMAGE_PATH_COLUMN].to_numpy())
        decoded, unreadable = len(thumbnails), thumbnails.unreadable
        linked, pixels = confirmed_links(neighbours, thumbnails, candidate_threshold=candidate_threshold,
                                         pixel_threshold=pixel_threshold, fallback_threshold=duplicate_threshold)
        pixel_facts = {"candidate_threshold": float(candidate_threshold), "pixel_threshold": float(pixel_threshold),
                       "pixel_pairs": int(np.isfinite(pixels).sum()), "photos_decoded": len(thumbnails) - decoded,
                       "pixel_unreadable": thumbnails.unreadable - unreadable}
    group, closest, similarity = duplicate_groups(neighbours, duplicate_threshold, linked)
    members = np.flatnonzero(group >= 0)
    duplicates = items.iloc[members].reset_index(drop=True)
    duplicates.insert(0, "group", group[members])
    duplicates.insert(1, "group_size", np.bincount(group[members])[group[members]] if len(members) else [])
    duplicates["closest_id"] = ids[closest[members]]
    duplicates["similarity"] = similarity[members]
    if pixels is not None:
        first = linked[members].argmax(axis=1)
        duplicates["pixel_similarity"] = pixels[members, first]
    duplicates = duplicates.sort_values(["group", "similarity"], ascending=[True, False], kind="stable")
    duplicates = duplicates.reset_index(drop=True)
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
                          "duplicate_threshold": float(duplicate_threshold), **pixel_facts,
                          "seconds": {name: round(s, 3) for name, s in seconds.items()}})


# ---------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    """The `hygiene` subcommand's options (python -m index hygiene)."""
    parser.add_argument("--catalog", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=None,
                        help="prefix of the reports (default reports/<catalog>-hygiene): PREFIX-duplicates.csv, "
                             "PREFIX-miscategorised.csv, PREFIX-products.csv, PREFIX.md, PREFIX.json")
    parser.add_argument("--k", type=int, default=DEFAULT_NEIGHBOURS, help="nearest neighbours that vote "
                        f"(default {DEFAULT_NEIGHBOURS})")
    parser.add_argument("--duplicate-threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD,
                        help="cosine at which two items count as duplicates when their photos are not compared "
                             f"(--no-pixel-check, unreadable photos; default {DEFAULT_DUPLICATE_THRESHOLD})")
    parser.add_argument("--candidate-threshold", type=float, default=DEFAULT_CANDIDATE_THRESHOLD,
                        help=f"cosine at which a pair's photos are compared (default {DEFAULT_CANDIDATE_THRESHOLD})")
    parser.add_argument("--pixel-threshold", type=float, default=DEFAULT_PIXEL_THRESHOLD,
                        help="correlation of the two photos' blurred grey thumbnails that confirms a duplicate "
                             f"(default {DEFAULT_PIXEL_THRESHOLD})")
    parser.add_argument("--no-pixel-check", action="store_true", help="judge duplicates by the vectors alone")


def run_command(args) -> int:
    """python -m index hygiene: compute the reports, write them, print the summary."""
    from index.catalog import Catalog

    try:
        report = hygiene_report(Catalog.load(args.catalog), k=args.k, duplicate_threshold=args.duplicate_threshold,
                                candidate_threshold=args.candidate_threshold,
                                pixel_threshold=None if args.no_pixel_check else args.pixel_threshold)
    except HygieneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prefix = args.out or Path("reports") / f"{args.catalog.absolute().name}-hygiene"
    written = report.write(prefix)
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
