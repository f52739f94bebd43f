"""Re-ranking without labels: database-side augmentation, α-query expansion, k-reciprocal re-scoring.

All vectors are L2-normalised rows; s(a, b) = a·b is the cosine. N_k(x) is x's k nearest
catalog items (never x itself), best first.

    dba = database_augmentation(vectors, k=5, alpha=3.0)              # once, at build time
    expanded = alpha_query_expansion(queries, neighbour_vectors, neighbour_scores, alpha=3.0)
    scores = k_reciprocal_scores(query, candidates, candidate_scores, graph, vectors, k=20, lam=0.3)

`Whitening` (PCA whitening learned from a catalog's own vectors, Jégou & Chum, ECCV 2012) is the
label-free change of the vectors themselves. None of these is a catalog option: measured
(`python -m benchmarks.rerank`), the neighbour methods do not raise the default catalog's R@1, and
whitening raises it only by weighting the directions in which a shopper's photo or a re-encoded copy
differs from its catalog photo (`python -m benchmarks.whitening_tradeoff`). `leave_one_out_rankings` measures
each the way the catalog's Recall@k does, honestly: every item queries a catalog that does not hold it, so
nothing computed from the query item's own vector (its place in a neighbour's augmentation)
reaches the scores it is ranked by.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.quality.evaluation import nearest_neighbours

METHODS = ("aqe", "dba", "dba+aqe", "kreciprocal")
BLOCK_ROWS = 1024  # rows blended at once: k x BLOCK_ROWS x d floats in memory


@dataclass(frozen=True)
class Reranking:
    """A catalog's re-ranking: the method and its settings (chosen on held-out photos)."""
    method: str
    k: int
    alpha: float = 3.0  # αQE / αDBA weight exponent
    lam: float = 0.3  # k-reciprocal: weight of the Jaccard similarity against the cosine
    depth: int = 100  # k-reciprocal: candidates re-scored per query

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown re-ranking {self.method!r} (known: {', '.join(METHODS)})")
        if self.k < 1:
            raise ValueError("a re-ranking needs k >= 1 neighbours")

    @property
    def augments_catalog(self) -> bool:
        return self.method.startswith("dba")

    @property
    def expands_query(self) -> bool:
        return self.method.endswith("aqe")

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "alpha": self.alpha, "lam": self.lam, "depth": self.depth}

    @classmethod
    def from_dict(cls, data: dict) -> "Reranking":
        return cls(str(data["method"]), int(data["k"]), float(data.get("alpha", 3.0)),
                   float(data.get("lam", 0.3)), int(data.get("depth", 100)))


@dataclass(frozen=True)
class Whitening:
    """x -> normalise((x - mean) @ projection): the catalog's principal directions, each divided by
    its standard deviation to the power `power` (1: full whitening, 0: plain PCA), the first `dims`."""
    mean: np.ndarray  # (d,)
    projection: np.ndarray  # (d, dims)

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int | None = None, power: float = 0.5) -> "Whitening":
        x = np.asarray(vectors, np.float64)
        mean = x.mean(axis=0)
        variances, directions = np.linalg.eigh(np.cov(x - mean, rowvar=False))
        order = np.argsort(variances)[::-1][:dims]
        scale = np.power(np.maximum(variances[order], 1e-12), -power / 2)
        return cls(mean.astype(np.float32), (directions[:, order] * scale).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return normalise((np.asarray(x, np.float32) - self.mean) @ self.projection)


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32)


def blend(vectors: np.ndarray, neighbour_vectors: np.ndarray, neighbour_scores: np.ndarray,
          alpha: float) -> np.ndarray:
    """x' = normalise(x + Σ_j max(s(x, x_j), 0)^α · x_j) over the given neighbours x_j.

    vectors (n, d), neighbour_vectors (n, k, d), neighbour_scores (n, k). The shared step of αQE
    (Radenović et al., TPAMI 2018) and αDBA; α = 0 weighs every neighbour as the item itself."""
    weights = np.maximum(neighbour_scores, 0.0) ** alpha
    return normalise(vectors + np.einsum("nk,nkd->nd", weights, neighbour_vectors))


def database_augmentation(vectors, k: int, alpha: float, neighbours: tuple[np.ndarray, np.ndarray] | None = None
                          ) -> np.ndarray:
    """αDBA: every catalog vector replaced by x_i' = normalise(x_i + Σ_{j ∈ N_k(x_i)} s(x_i, x_j)^α x_j).

    `neighbours` (scores, ids), at least k per row, saves the search where the caller has them."""
    vectors = np.asarray(vectors, np.float32)
    scores, ids = neighbours if neighbours is not None else nearest_neighbours(vectors, vectors, k, exclude_self=True)
    scores, ids = scores[:, :k], ids[:, :k]
    out = np.empty_like(vectors)
    for start in range(0, len(vectors), BLOCK_ROWS):
        stop = start + BLOCK_ROWS
        out[start:stop] = blend(vectors[start:stop], vectors[ids[start:stop]], scores[start:stop], alpha)
    return out


def alpha_query_expansion(queries: np.ndarray, neighbour_vectors: np.ndarray, neighbour_scores: np.ndarray,
                          alpha: float) -> np.ndarray:
    """αQE: q' = normalise(q + Σ_{j ∈ N_k(q)} s(q, x_j)^α x_j), then the catalog is searched with q'."""
    return blend(np.asarray(queries, np.float32), neighbour_vectors, neighbour_scores, alpha)


@dataclass
class NeighbourGraph:
    """Each catalog row's k nearest other rows (ids = rows, best first) and their cosines."""
    ids: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32

    @classmethod
    def of(cls, vectors, k: int) -> "NeighbourGraph":
        scores, ids = nearest_neighbours(vectors, vectors, k, exclude_self=True)
        return cls(ids.astype(np.int64), scores.astype(np.float32))


def k_reciprocal_scores(query: np.ndarray, candidates: np.ndarray, candidate_scores: np.ndarray,
                        graph: NeighbourGraph, vectors, k: int, lam: float, query_row: int | None = None
                        ) -> np.ndarray:
    """Re-scored candidates: s*(q, g) = (1 - λ) s(q, g) + λ J(q, g) (after Zhong et al., CVPR 2017).

    R(x) = {x} ∪ {y ∈ N_k(x) : x ∈ N_k(y)} is x's k-reciprocal set, taken in the graph of the
    catalog and the query together (a new query enters an item's N_k where it beats the item's
    k-th neighbour); V_x(y) = exp(-|x - y|²) = exp(2 s(x, y) - 2) on R(x), 0 elsewhere; and
    J(q, g) = Σ_y min(V_q(y), V_g(y)) / Σ_y max(V_q(y), V_g(y)) is their weighted Jaccard
    similarity. The cheap variant: no R* expansion, no local query expansion, only the
    candidates are re-scored.

    candidates: catalog rows, best first, at least k of them, the query's own row not among them;
    query_row: the query's own row when it is a catalog item (the graph holds it already).
    """
    n = len(graph.ids)
    node = n if query_row is None else int(query_row)  # the query's node in the joint graph
    candidates = np.asarray(candidates, np.int64)
    query_ids, query_scores = candidates[:k], np.asarray(candidate_scores[:k], np.float32)

    def lists(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N_k of catalog rows in the joint graph (a new query merged in where it ranks)."""
        ids, scores = graph.ids[rows, :k], graph.scores[rows, :k]
        if query_row is not None:
            return ids, scores
        to_query = np.asarray(vectors[rows], np.float32) @ query
        ids = np.concatenate([ids, np.full((len(rows), 1), node)], axis=1)
        scores = np.concatenate([scores, to_query[:, None]], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)

    cand_ids, cand_scores = lists(candidates)  # (K, k)
    # The query's reciprocal set: its neighbours that hold it among theirs.
    query_recip = (cand_ids[:k] == node).any(axis=1)
    q_keys = np.concatenate([[node], query_ids[query_recip]])
    q_weights = np.concatenate([[1.0], np.exp(2 * query_scores[query_recip] - 2)])
    key_order = np.argsort(q_keys)
    q_keys, q_weights = q_keys[key_order], q_weights[key_order]
    # Each candidate's reciprocal set: its neighbours y (catalog rows or the query) with it in N_k(y).
    flat = cand_ids.reshape(-1)
    others = np.unique(flat[flat != node])
    other_ids, _ = lists(others) if len(others) else (np.zeros((0, k), np.int64), None)
    at = np.searchsorted(others, np.where(flat == node, others[0] if len(others) else 0, flat))
    their_lists = other_ids[np.minimum(at, max(len(others) - 1, 0))] if len(others) else np.zeros((len(flat), k), np.int64)
    their_lists = np.where((flat == node)[:, None], np.resize(query_ids, (len(flat), k)), their_lists)
    recip = (their_lists.reshape(len(candidates), k, k) == candidates[:, None, None]).any(axis=2)
    keys = np.concatenate([candidates[:, None], cand_ids], axis=1)  # (K, k+1)
    weights = np.concatenate([np.ones((len(candidates), 1)), np.exp(2 * cand_scores - 2) * recip], axis=1)
    pos = np.minimum(np.searchsorted(q_keys, keys), len(q_keys) - 1)
    shared = np.where(q_keys[pos] == keys, q_weights[pos], 0.0)
    min_sum = np.minimum(shared, weights).sum(axis=1)
    jaccard = min_sum / (q_weights.sum() + weights.sum(axis=1) - min_sum)
    return ((1 - lam) * np.asarray(candidate_scores, np.float32) + lam * jaccard).astype(np.float32)


# ----------------------------------------------------------------------------- leave-one-out measurement

def leave_one_out_rankings(vectors, reranking: Reranking | None, depth: int = 10) -> np.ndarray:
    """Rows (n, depth), best first, that each catalog item retrieves from all the others with the
    re-ranking applied, as a query the catalog does not hold would.

    αQE and k-reciprocal need nothing more: the item is left out of its own neighbours and
    results, and the joint graph of catalog and query is the catalog's own graph. DBA does:
    an item's neighbours were blended with the query item's own vector at build time, which a
    new photo never is. So each query ranks its reverse neighbours (the items whose N_k holds it)
    by their augmentation without it, N_k taken from their k + 1 nearest minus the query:
    exactly the catalog that would have been built without the query item."""
    vectors = np.ascontiguousarray(np.asarray(vectors, np.float32))
    n = len(vectors)
    depth = min(depth, n - 1)
    if reranking is None:
        return nearest_neighbours(vectors, vectors, depth, exclude_self=True)[1]
    if reranking.method == "aqe":
        scores, ids = nearest_neighbours(vectors, vectors, reranking.k, exclude_self=True)
        expanded = alpha_query_expansion(vectors, vectors[ids], scores, reranking.alpha)
        return _search_without_own_row(expanded, vectors, depth)[1]
    if reranking.method == "kreciprocal":
        k, pool = reranking.k, max(reranking.depth, depth, reranking.k)
        graph = NeighbourGraph.of(vectors, k)
        scores, ids = nearest_neighbours(vectors, vectors, pool, exclude_self=True)
        out = np.empty((n, depth), np.int64)
        for i in range(n):
            rescored = k_reciprocal_scores(vectors[i], ids[i], scores[i], graph, vectors, k, reranking.lam, query_row=i)
            out[i] = ids[i][np.argsort(-rescored, kind="stable")[:depth]]
        return out
    return _dba_leave_one_out(vectors, reranking, depth)


def _search_without_own_row(queries: np.ndarray, gallery: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-depth of query i over the gallery without gallery row i."""
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    scores, ids = index.search(np.ascontiguousarray(queries, np.float32), depth + 1)
    own = ids == np.arange(len(queries))[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    return scores[keep].reshape(len(queries), depth), ids[keep].reshape(len(queries), depth)


def _dba_leave_one_out(vectors: np.ndarray, reranking: Reranking, depth: int) -> np.ndarray:
    import faiss

    n, k, alpha = len(vectors), reranking.k, reranking.alpha
    scores, ids = nearest_neighbours(vectors, vectors, k + 1, exclude_self=True)
    augmented = database_augmentation(vectors, k, alpha, neighbours=(scores, ids))
    # Reverse neighbours: item r is in N_k(g) for g in reverse[starts[r]:starts[r + 1]].
    holders = np.repeat(np.arange(n), k)
    held = ids[:, :k].reshape(-1)
    order = np.argsort(held, kind="stable")
    reverse, starts = holders[order], np.searchsorted(held[order], np.arange(n + 1))
    pool = min(n, depth + int(np.diff(starts).max()) + 1 + k)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(augmented)

    def without(r: int) -> tuple[np.ndarray, np.ndarray]:
        """The reverse neighbours of r (ascending) and their augmentation in the catalog without r."""
        rows = reverse[starts[r]:starts[r + 1]]
        if len(rows) == 0:
            return rows, np.zeros((0, vectors.shape[1]), np.float32)
        keep = ids[rows] != r
        keep[keep.all(axis=1), -1] = False  # r not among them: the first k stand
        nb = ids[rows][keep].reshape(len(rows), k)
        return rows, blend(vectors[rows], vectors[nb], scores[rows][keep].reshape(len(rows), k), alpha)

    def ranked(query, r, found_scores, found, rows, fixed, count):
        """Top `count` for one query: the index's scores, the reverse neighbours' replaced."""
        drop = (found == r) | np.isin(found, rows)
        all_ids = np.concatenate([found[~drop], rows])
        all_scores = np.concatenate([found_scores[~drop], fixed @ query])
        best = np.lexsort((all_ids, -all_scores))[:count]
        return all_ids[best], all_scores[best]

    count = max(depth, k) if reranking.expands_query else depth
    first_scores, first = index.search(vectors, pool)
    out = np.empty((n, count), np.int64)
    expanded = np.empty_like(vectors) if reranking.expands_query else None
    for r in range(n):
        rows, fixed = without(r)
        top, top_scores = ranked(vectors[r], r, first_scores[r], first[r], rows, fixed, count)
        out[r] = top
        if expanded is not None:
            seen = augmented[top[:k]].copy()
            corrected = np.isin(top[:k], rows)
            seen[corrected] = fixed[np.searchsorted(rows, top[:k][corrected])]
            expanded[r] = alpha_query_expansion(vectors[r][None], seen[None], top_scores[None, :k], alpha)[0]
    if expanded is None:
        return out[:, :depth]
    second_scores, second = index.search(expanded, pool)
    for r in range(n):
        rows, fixed = without(r)
        out[r, :depth] = ranked(expanded[r], r, second_scores[r], second[r], rows, fixed, depth)[0]
    return out[:, :depth]
