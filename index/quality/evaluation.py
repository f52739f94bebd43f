"""The one Recall@k of the product: training, the CLI, the benchmark and the app all use it.

Recall@k is the standard metric-learning definition: the fraction of queries that have at
least one gallery item with the same label among their k nearest neighbours. A query whose
label has no other item in the gallery can never be found and counts as a miss; the report
says how many such queries there were.

Vectors are float32 and L2-normalised, so cosine similarity is the inner product. Search is
exact (faiss.IndexFlatIP) and runs in blocks of queries, so memory stays bounded: no N x N
matrix is ever built. Among neighbours with equal scores FAISS's order decides the ranking.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth
import pandas as pd

from embedder.files import markdown_table

DEFAULT_KS = (1, 2, 4, 8, 10, 100)
DEFAULT_BLOCK_SIZE = 4096
# Rows of the gallery read at once. knn_ground_truth holds the block it searches and its copy in a
# flat index while the next block is read: three blocks, 768 MB at 2048-d.
DEFAULT_GALLERY_BLOCK = 32_768
STREAMED_QUERY_BLOCK = 32_768  # queries per pass over a streamed gallery


def _as_vectors(x, name: str):
    """Arrays pass as they are (a memory map stays on disk); anything else becomes float32."""
    vectors = x if hasattr(x, "shape") and hasattr(x, "__getitem__") else np.asarray(x, dtype=np.float32)
    if len(vectors.shape) != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {tuple(vectors.shape)}")
    return vectors


def _rows(vectors, start: int, stop: int) -> np.ndarray:
    """Rows start:stop as a contiguous float32 block in RAM (the only copy ever made)."""
    return np.ascontiguousarray(vectors[start:stop], dtype=np.float32)


class NpyRows:
    """Rows of a float32 .npy file read with plain file reads, for galleries larger than RAM.

    A memory map would do, but every page it touches counts in the process's resident memory
    until the map is dropped; reading block by block keeps the process at one block.
    """

    def __init__(self, path):
        self.path = str(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if len(shape) != 2 or fortran or dtype != np.float32:
            raise ValueError(f"{self.path}: expected a C-ordered float32 (n, d) array, got {dtype} {shape}")
        self.shape = tuple(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("NpyRows reads contiguous row ranges only")
        d = self.shape[1]
        return np.fromfile(self.path, dtype=np.float32, count=max(0, stop - start) * d,
                           offset=self.offset + start * d * 4).reshape(-1, d)


def _visible_gallery_size(queries, gallery, query_rows: np.ndarray | None) -> int:
    """How many gallery items one query can retrieve; checks that the two sets fit together."""
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, gallery {gallery.shape[1]}")
    if query_rows is not None:
        if len(query_rows) != len(queries):
            raise ValueError("query_gallery_rows needs one gallery row per query")
        if len(query_rows) and (query_rows.min() < 0 or query_rows.max() >= len(gallery)):
            raise ValueError("query_gallery_rows must be rows of the gallery")
    visible = len(gallery) - int(query_rows is not None)
    if visible < 1:
        raise ValueError("the gallery has no item a query could retrieve")
    return visible


def _top_k(queries: np.ndarray, gallery, k: int, gallery_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of a block of queries over the gallery, read gallery_block rows at a time."""
    if len(gallery) <= gallery_block:
        index = faiss.IndexFlatIP(gallery.shape[1])
        index.add(_rows(gallery, 0, len(gallery)))
        return index.search(queries, k)
    blocks = (_rows(gallery, start, start + gallery_block) for start in range(0, len(gallery), gallery_block))
    return knn_ground_truth(queries, blocks, k, faiss.METRIC_INNER_PRODUCT, ngpu=0)


def _search_blocks(queries, gallery, k: int, query_rows: np.ndarray | None, block_size: int,
                   gallery_block: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first query row, scores, ids) per block of queries; k must already fit the gallery.

    Memory is one block of queries, one block of the gallery (or the whole gallery when it is
    small) and their top-k lists. A gallery larger than one block is read once per block of
    queries, so those blocks are made large."""
    if len(gallery) > gallery_block:
        block_size = max(block_size, STREAMED_QUERY_BLOCK)
    for start in range(0, len(queries), block_size):
        block = _rows(queries, start, start + block_size)
        if query_rows is None:
            yield start, *_top_k(block, gallery, k, gallery_block)
            continue
        # Ask for one extra neighbour and drop the query's own gallery row by index, not by
        # score, so an exact duplicate elsewhere in the gallery still counts as a neighbour.
        scores, ids = _top_k(block, gallery, k + 1, gallery_block)
        is_self = ids == query_rows[start:start + len(block), None]
        # Self may rank below k+1 items that tie with it; then the extra (last) one goes.
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        yield start, scores[keep].reshape(len(block), k), ids[keep].reshape(len(block), k)


def nearest_neighbours(queries, gallery, k: int, exclude_self: bool = False,
                       block_size: int = DEFAULT_BLOCK_SIZE,
                       gallery_block: int = DEFAULT_GALLERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: (scores float32 (n, k'), gallery ids int64 (n, k')).

    With exclude_self, `gallery` is the query set itself and row i never returns item i.
    k' is k clamped to the number of gallery items a query can see.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    queries, gallery = _as_vectors(queries, "queries"), _as_vectors(gallery, "gallery")
    if exclude_self and len(queries) != len(gallery):
        raise ValueError("exclude_self needs the query set as the gallery (same rows)")
    query_rows = np.arange(len(queries)) if exclude_self else None
    k = min(k, _visible_gallery_size(queries, gallery, query_rows))
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start, block_scores, block_ids in _search_blocks(queries, gallery, k, query_rows, block_size, gallery_block):
        scores[start:start + len(block_ids)] = block_scores
        ids[start:start + len(block_ids)] = block_ids
    return scores, ids


@dataclass
class RecallReport:
    overall: dict[int, float]  # requested k -> Recall@k
    per_category: pd.DataFrame  # index: category; columns R@k..., queries (empty without categories)
    num_queries: int
    num_gallery: int
    clamped_ks: dict[int, int] = field(default_factory=dict)  # requested k -> k used (gallery too small)
    queries_without_match: int = 0  # queries whose label has no other gallery item
    # Each query's rank (0-based) of its first same-label item, len = num_queries; a query counts as
    # found at k when first_hit < the k used (clamped_ks). Misses hold the search's depth.
    first_hit: np.ndarray | None = field(default=None, compare=False, repr=False)

    def hits(self) -> np.ndarray:
        """(num_queries, len(overall)) bool: whether each query is found at each k of `overall`."""
        if self.first_hit is None:
            raise ValueError("this report keeps no per-query ranks")
        used = [self.clamped_ks.get(k, k) for k in self.overall]
        return self.first_hit[:, None] < np.asarray(used)[None, :]

    def to_frame(self) -> pd.DataFrame:
        """One row per category after an `all` row; columns R@k... and queries."""
        overall = pd.DataFrame([{**{f"R@{k}": v for k, v in self.overall.items()}, "queries": self.num_queries}],
                               index=pd.Index(["all"], name="category"))
        if self.per_category.empty:
            return overall
        return pd.concat([overall, self.per_category])

    def to_markdown(self) -> str:
        frame = self.to_frame()
        rows = [[str(category), *(f"{row[c]:.4f}" if c.startswith("R@") else f"{int(row[c])}" for c in frame.columns)]
                for category, row in frame.iterrows()]
        lines = [markdown_table(["category", *frame.columns], rows)]
        notes = [f"{self.num_queries} queries, {self.num_gallery} gallery items."]
        if self.clamped_ks:
            used = ", ".join(f"R@{k} uses k={used}" for k, used in self.clamped_ks.items())
            notes.append(f"The gallery is smaller than the largest k: {used}.")
        if self.queries_without_match:
            notes.append(f"{self.queries_without_match} queries have no same-label gallery item "
                         "and count as misses.")
        return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"

    def to_dict(self) -> dict:
        """JSON-ready: plain str keys, floats and ints."""
        return {
            "recall": {f"R@{k}": float(v) for k, v in self.overall.items()},
            "per_category": {
                str(category): {column: (int(v) if column == "queries" else float(v)) for column, v in row.items()}
                for category, row in self.per_category.iterrows()
            },
            "num_queries": int(self.num_queries),
            "num_gallery": int(self.num_gallery),
            "clamped_ks": {str(k): int(used) for k, used in self.clamped_ks.items()},
            "queries_without_match": int(self.queries_without_match),
        }


def _label_codes(query_labels, gallery_labels) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes shared by both label sets (labels may be ints or strings)."""
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    codes, _ = pd.factorize(np.concatenate([query_labels.astype(object), gallery_labels.astype(object)]))
    if (codes < 0).any():
        raise ValueError("labels must not be missing (NaN/None)")
    return codes[:len(query_labels)], codes[len(query_labels):]


def recall_at_k(queries, query_labels, gallery=None, gallery_labels=None, ks: Sequence[int] = DEFAULT_KS,
                query_categories=None, block_size: int = DEFAULT_BLOCK_SIZE, *, query_gallery_rows=None,
                gallery_block: int = DEFAULT_GALLERY_BLOCK) -> RecallReport:
    """Recall@k of `queries` against `gallery`; without a gallery, leave-one-out on the queries.

    `query_gallery_rows` gives each query's own row in the gallery, never counted as its
    neighbour: leave-one-out for a sample of the gallery's items. Queries and gallery may be
    arrays, memory maps or NpyRows; a gallery larger than `gallery_block` rows is streamed.
    """
    query_rows = None if query_gallery_rows is None else np.asarray(query_gallery_rows, dtype=np.int64)
    if gallery is None:
        if query_rows is not None:
            raise ValueError("query_gallery_rows needs a gallery")
        gallery, gallery_labels = queries, query_labels
        query_rows = np.arange(len(queries))
    elif gallery_labels is None:
        raise ValueError("a gallery needs gallery_labels")
    queries, gallery = _as_vectors(queries, "queries"), _as_vectors(gallery, "gallery")
    query_codes, gallery_codes = _label_codes(query_labels, gallery_labels)
    if len(query_codes) != len(queries) or len(gallery_codes) != len(gallery):
        raise ValueError("every vector needs exactly one label")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")

    visible = _visible_gallery_size(queries, gallery, query_rows)
    used_ks = {k: min(k, visible) for k in ks}
    depth = used_ks[ks[-1]]
    # Rank of the first same-label neighbour per query (depth = not found); one int per query.
    first_hit = np.full(len(queries), depth, dtype=np.int64)
    # Neighbours are turned into a first-hit rank block by block and then dropped.
    for start, _, block_ids in _search_blocks(queries, gallery, depth, query_rows, block_size, gallery_block):
        hits = gallery_codes[block_ids] == query_codes[start:start + len(block_ids), None]
        first_hit[start:start + len(block_ids)] = np.where(hits.any(axis=1), hits.argmax(axis=1), depth)

    return _report(first_hit, used_ks, query_codes, gallery_codes, query_rows, query_categories, len(gallery))


def recall_of_rankings(ranked_ids, query_labels, gallery_labels, ks: Sequence[int] = DEFAULT_KS,
                       query_categories=None, *, query_gallery_rows=None) -> RecallReport:
    """Recall@k of rankings made some other way (a re-ranking): row i of `ranked_ids` holds the
    gallery rows query i retrieved, best first, -1 where it retrieved fewer. `query_gallery_rows`
    gives each query's own gallery row (leave-one-out: the rankings must not hold it)."""
    ranked = np.asarray(ranked_ids, np.int64)
    query_codes, gallery_codes = _label_codes(query_labels, gallery_labels)
    query_rows = None if query_gallery_rows is None else np.asarray(query_gallery_rows, dtype=np.int64)
    if ranked.ndim != 2 or len(ranked) != len(query_codes):
        raise ValueError("ranked_ids needs one row of gallery rows per query")
    if query_rows is not None and (ranked == query_rows[:, None]).any():
        raise ValueError("a leave-one-out ranking holds the query's own row")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    visible = len(gallery_codes) - int(query_rows is not None)
    used_ks = {k: min(k, visible, ranked.shape[1]) for k in ks}
    depth = ranked.shape[1]
    hits = (ranked >= 0) & (gallery_codes[np.maximum(ranked, 0)] == query_codes[:, None])
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), depth)
    return _report(first_hit, used_ks, query_codes, gallery_codes, query_rows, query_categories, len(gallery_codes))


def _report(first_hit: np.ndarray, used_ks: dict, query_codes: np.ndarray, gallery_codes: np.ndarray,
            query_rows: np.ndarray | None, query_categories, num_gallery: int) -> RecallReport:
    """The report from each query's rank of its first same-label neighbour."""
    ks = sorted(used_ks)
    found = {k: first_hit < used for k, used in used_ks.items()}
    overall = {k: float(hit.mean()) for k, hit in found.items()}
    per_category = pd.DataFrame(columns=[*(f"R@{k}" for k in ks), "queries"])
    if query_categories is not None:
        categories = pd.Series(np.asarray(query_categories, dtype=object), name="category")
        if len(categories) != len(query_codes):
            raise ValueError("query_categories needs one category per query")
        per_category = pd.DataFrame({f"R@{k}": hit for k, hit in found.items()}).groupby(categories.astype(str)).mean()
        per_category["queries"] = categories.astype(str).value_counts().reindex(per_category.index).astype(int)

    gallery_counts = np.bincount(gallery_codes, minlength=query_codes.max() + 1)
    others = gallery_counts[query_codes] - (0 if query_rows is None else 1)
    return RecallReport(
        overall=overall,
        per_category=per_category,
        num_queries=len(query_codes),
        num_gallery=num_gallery,
        clamped_ks={k: used for k, used in used_ks.items() if used < k},
        queries_without_match=int((others <= 0).sum()),
        first_hit=first_hit,
    )


def classification_accuracy(logits, labels, topk: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy per requested k; k is clamped to the number of classes."""
    logits, labels = np.asarray(logits, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits must be (n, classes) with one label per row; got {logits.shape} and {labels.shape}")
    num_classes = logits.shape[1]
    result = {}
    for k in topk:
        if k < 1:
            raise ValueError(f"top-k must be positive, got {k}")
        used = min(int(k), num_classes)
        # argpartition finds the top `used` classes without sorting all of them.
        top = np.argpartition(-logits, used - 1, axis=1)[:, :used]
        result[int(k)] = float((top == labels[:, None]).any(axis=1).mean())
    return result
