"""How a catalog is searched: query vectors in, the k best items out, re-scored exactly.

The index proposes candidates; every result is re-scored with the catalog's scoring vectors
(the stored embeddings, or an on-disk catalog's float16 copy or index codes), ranked by cosine
and filtered (excluded ids, near-duplicates). When the index gives too few (a strict category
filter, many exclusions), it is asked again for more, harder, and finally the pool is scanned
exactly. Used through Catalog.search_vectors / Catalog.search_frame.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from index.catalog.choose import RERANK_QUANTISED, index_kind, quantised
from index.catalog.store import CHUNK_ROWS
from index.catalog.view import CatalogView

EXACT_POOL_FLOATS = 16_000_000  # a filtered pool this small (rows x d) is searched exactly
SINGLE_THREAD_QUERIES = 4  # searches of this few queries run FAISS on one thread (see faiss_threads)


@dataclass
class SearchHits:
    """Per query: scores (cosine, descending), ids and their rows; fewer than k where the pool ran out."""
    scores: list[np.ndarray]
    ids: list[np.ndarray]
    rows: list[np.ndarray]

    def padded(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) arrays; missing places have score NaN and id -1."""
        scores = np.full((len(self.ids), k), np.nan, np.float32)
        ids = np.full((len(self.ids), k), -1, np.int64)
        for i, (s, j) in enumerate(zip(self.scores, self.ids)):
            scores[i, :len(s)], ids[i, :len(j)] = s[:k], j[:k]
        return scores, ids


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run FAISS with n OpenMP threads inside the block (None: leave as is).

    FAISS parallelises a search across queries, so one query uses one thread anyway; the other
    threads only wait at barriers, which costs several milliseconds on a busy CPU (measured:
    36 ms vs 5 ms for one exact query over 10k x 2048 with a training run beside it).
    OpenMP's thread count is per calling thread, so this does not reach other threads' searches.
    """
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def search_vectors(catalog: CatalogView, vectors, k: int = 10, *, category: str | None = None,
                   exclude_ids: Sequence[Iterable[int]] | None = None,
                   hide_duplicates_above: float | None = None, normalised: bool = False,
                   pool: tuple[np.ndarray, "faiss.IDSelector"] | None = None) -> SearchHits:
    """Top-k catalog items for each query vector (rows L2-normalised, or they are normalised).

    category: only items of that category, still k of them when it has at least k: a small
    category is searched exactly over its rows; a large one through the index with an
    IDSelector (FAISS filters while it searches, with search effort raised by 1/share), and
    exactly over its rows if the index still finds fewer than k.
    exclude_ids: per query, ids never to return (e.g. the query item itself).
    hide_duplicates_above: drop a result whose cosine to a better-ranked kept one is above it.
    normalised: the rows are L2-normalised already (the embedder's output, stored vectors).
    pool: (rows, FAISS selector) to search within, searched as a category is (index.search.filters).
    """
    queries = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, catalog.dim))
    if not normalised:
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = queries / np.where(norms > 0, norms, 1)
    if k < 1:
        raise ValueError("k must be at least 1")
    excludes = [set()] * len(queries) if exclude_ids is None else [set(int(i) for i in e) for e in exclude_ids]
    if len(excludes) != len(queries):
        raise ValueError("exclude_ids needs one entry per query")
    plan = _Plan(catalog, k, category, excludes, hide_duplicates_above, pool)
    with faiss_threads(1 if len(queries) <= SINGLE_THREAD_QUERIES else None):
        return plan.run(queries)


class _Plan:
    """One search's pool, candidate counts and index parameters, and the loop that fills k places."""

    def __init__(self, catalog: CatalogView, k: int, category: str | None, excludes: list[set],
                 hide_duplicates_above: float | None, pool: tuple | None = None):
        self.catalog, self.k, self.excludes, self.hide_above = catalog, k, excludes, hide_duplicates_above
        choice = catalog.choice
        self.kind = index_kind(choice.factory)
        self.rows, self.selector, self.effort, self.pool_size = None, None, 1.0, len(catalog.ids)
        if category is not None or pool is not None:
            self.rows, self.selector = pool if pool is not None else catalog.category_pool(category)
            self.pool_size = len(self.rows)
            self.effort = max(1.0, len(catalog.ids) / self.pool_size)
        self.pool_ids = catalog.ids if self.rows is None else catalog.ids[self.rows]
        # Another backend (index.scale.backends) filters while it searches, and oversamples its own codes.
        self.backend = getattr(catalog, "backend", None)
        # A small category of an approximate index: scanning its rows exactly is cheaper and sure.
        self.exact_pool = (self.rows is not None and self.kind != "flat" and self.backend is None
                           and self.pool_size * catalog.dim <= EXACT_POOL_FLOATS)
        # Compressed (SQ/PQ) scores blur near-ties: fetch more candidates, re-score them exactly.
        oversample = (int(choice.params.get("rerank", RERANK_QUANTISED))
                      if quantised(choice.factory) and self.backend is None else 1)
        dup_factor = 3 if hide_duplicates_above is not None else 1
        max_exclude = max((len(e) for e in excludes), default=0)
        self.fetch = max(1, min((k + max_exclude) * oversample * dup_factor, self.pool_size))
        self.max_fetch = (self.pool_size if hide_duplicates_above is None
                          else min(self.pool_size, max(64 * self.fetch, 10_000)))

    def run(self, queries: np.ndarray) -> SearchHits:
        first = self._fetch(queries, self.fetch, self.exact_pool, 1.0) if len(queries) else None
        out_scores, out_ids, out_rows = [], [], []
        for i, query in enumerate(queries):
            excluded = self.excludes[i]
            in_pool = _count_present(self.pool_ids, excluded) if excluded else 0
            want = max(0, min(self.k, self.pool_size - in_pool))
            exact, n_fetch, more_effort = self.exact_pool, self.fetch, 1.0
            candidates = first[i]
            while True:
                scores, ids, rows = self._finish(query, candidates, excluded)
                if len(ids) >= want:
                    break
                asked = min(n_fetch, self.pool_size)
                if not exact and int((candidates >= 0).sum()) < asked:
                    # The approximate index gave fewer than asked (a strict filter): search harder,
                    # then exactly over the pool.
                    if more_effort < 64:
                        more_effort *= 4
                    else:
                        exact = True
                elif n_fetch >= self.max_fetch:
                    break  # all there is: exclusions and near-duplicates took the rest
                else:
                    n_fetch = min(n_fetch * 4, self.max_fetch)
                    more_effort *= 2
                candidates = self._fetch(query[None], n_fetch, exact, more_effort)[0]
            out_scores.append(scores)
            out_ids.append(ids)
            out_rows.append(rows)
        return SearchHits(out_scores, out_ids, out_rows)

    def _fetch(self, queries: np.ndarray, n_fetch: int, exact: bool, more_effort: float) -> np.ndarray:
        """Candidate ids (n, n_fetch), -1 where the index found fewer."""
        if exact:
            return self._exact(queries, n_fetch)
        if self.backend is not None:
            return self.backend.candidates(self.catalog, queries, n_fetch, self.selector, self.effort * more_effort)
        index = self.catalog.index
        n_fetch = max(1, min(n_fetch, index.ntotal))
        _, ids = index.search(queries, n_fetch, params=self._params(n_fetch, self.effort * more_effort))
        return ids

    def _params(self, k: int, effort: float):
        kind, params = self.kind, self.catalog.choice.params
        if kind == "hnsw":
            ef = int(min(max(params.get("efSearch", 64) * effort, k), 4096))
            return faiss.SearchParametersHNSW(sel=self.selector, efSearch=ef)
        if kind == "ivf":
            nlist = faiss.extract_index_ivf(self.catalog.index).nlist
            nprobe = int(min(max(math.ceil(params.get("nprobe", 16) * effort), 1), nlist))
            return faiss.SearchParametersIVF(sel=self.selector, nprobe=nprobe)
        return faiss.SearchParameters(sel=self.selector) if self.selector is not None else None

    def _exact(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Ids of the exact top-k over the pool, its scoring vectors read a block at a time."""
        total, rows, vectors = self.pool_size, self.rows, self.catalog.scoring_vectors
        k = min(k, total)

        def blocks() -> Iterator[np.ndarray]:
            for start in range(0, total, CHUNK_ROWS):
                block_rows = np.arange(start, min(start + CHUNK_ROWS, total)) if rows is None \
                    else rows[start:start + CHUNK_ROWS]
                yield np.ascontiguousarray(vectors[block_rows], np.float32)
        _, positions = knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks(), k,
                                        faiss.METRIC_INNER_PRODUCT, ngpu=0)
        return self.pool_ids[positions]

    def _finish(self, query: np.ndarray, candidates: np.ndarray, exclude: set
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, ids, rows): exact cosine of candidates, best first, minus excluded ids and near-duplicates."""
        candidates = candidates[candidates >= 0]
        if len(candidates) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        candidates = np.unique(candidates)
        rows = self.catalog.rows_of(candidates)
        vectors = np.asarray(self.catalog.scoring_vectors[rows], np.float32)
        scores = vectors @ query
        order = np.lexsort((candidates, -scores))  # best score first, ties by id: deterministic
        kept: list[int] = []
        for j in order:
            if int(candidates[j]) in exclude:
                continue
            if self.hide_above is not None and kept and float((vectors[kept] @ vectors[j]).max()) > self.hide_above:
                continue
            kept.append(int(j))
            if len(kept) == self.k:
                break
        return scores[kept].astype(np.float32), candidates[kept], rows[kept]


def best_of_views(hits: SearchHits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ranking from the hits of several views of one query (a photo and its mirror image):
    (scores, ids, rows), each item once, scored by its best view, best first, ties by id.

    Exact for the top n when every view searched for its top n: an item in the merged top n beats
    the n-th merged score in its best view, where at most n - 1 items score higher."""
    scores, ids, rows = (np.concatenate(part) for part in (hits.scores, hits.ids, hits.rows))
    order = np.lexsort((ids, -scores))
    _, first = np.unique(ids[order], return_index=True)  # each id's best place
    keep = order[np.sort(first)]
    return scores[keep], ids[keep], rows[keep]


def _count_present(sorted_ids: np.ndarray, values: Iterable[int]) -> int:
    """How many of `values` are in `sorted_ids` (ascending), by binary search."""
    values = np.fromiter(values, np.int64)
    if len(sorted_ids) == 0 or len(values) == 0:
        return 0
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return int((sorted_ids[at] == values).sum())
