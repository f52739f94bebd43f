"""Every catalog row's nearest other rows by their stored vectors: the one k-nearest-neighbour pass
that feeds all three hygiene reports (index.quality.hygiene). Exact (index.quality.evaluation.
nearest_neighbours) up to EXACT_UP_TO items; beyond, candidates from the vectors' leading principal
axes, found through an inverted-file index and re-scored exactly (reduced_neighbours). similar_rows
also finds the photos' nearest descriptors for the near-duplicate candidates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.quality.evaluation import nearest_neighbours
from index.quality.hygiene_report import HygieneError

DEFAULT_NEIGHBOURS = 10  # chosen with the hygiene defaults (index.quality.hygiene)
EXACT_UP_TO = 20_000  # items searched exactly; larger catalogs through an inverted-file index
INVERTED_PROBES = 16  # lists searched of the inverted-file index (4 sqrt(n) lists)
REDUCED_DIMS = 128
RESCORE_EXTRA = 20  # candidates beyond k re-scored exactly
RESCORE_BLOCK = 1024  # rows whose candidates are re-scored at once (1024 x 40 x 2048 floats: 335 MB)
PCA_SAMPLE = 20_000
ROW_BLOCK = 16_384  # rows of vectors read at once


@dataclass
class Neighbours:
    """Each row's k nearest other rows: scores (n, k) float32 cosine, descending; rows (n, k) int64."""
    scores: np.ndarray
    rows: np.ndarray


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
    for start, block in row_blocks(vectors, n):
        projected[start:start + len(block)] = block @ basis
    wide = min(k + RESCORE_EXTRA, n - 1)
    _, candidates = similar_rows(projected, wide)
    scores = np.empty(candidates.shape, np.float32)
    for start, block in row_blocks(vectors, n):
        for at in range(0, len(block), RESCORE_BLOCK):  # the candidates' vectors of a few rows at a time
            part, rows_here = block[at:at + RESCORE_BLOCK], candidates[start + at:start + at + RESCORE_BLOCK]
            scores[start + at:start + at + len(part)] = np.einsum(
                "id,ijd->ij", part, np.asarray(vectors[np.maximum(rows_here, 0).reshape(-1)],
                                               np.float32).reshape(*rows_here.shape, d))
    scores[candidates < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return Neighbours(np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1))


def row_blocks(vectors, n: int):
    """(start, float32 rows) of the vectors, ROW_BLOCK rows at a time (a memory map read in order)."""
    for start in range(0, n, ROW_BLOCK):
        yield start, np.ascontiguousarray(vectors[start:start + ROW_BLOCK], dtype=np.float32)
