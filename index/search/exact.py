"""Exact search as the reference: the exact top-k of a catalog's items, and recall@k of the catalog's
search (its index, or the backend serving it) against it: what tuning raises (index.catalog.tune),
what a Milvus index is tuned to (index.scale.milvus) and what `python -m index evaluate --backend` reports.
"""
from __future__ import annotations

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from index.catalog.view import CatalogView
from index.search.algorithm import search_vectors

RECALL_TARGET = 0.95  # recall@10 against exact search that tuning aims for
RECALL_K = 10
EXACT_BLOCK_FLOATS = 1 << 26  # gallery rows x d read per block by exact search (256 MB)


def exact_top(queries: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top-k (inner product), the gallery read in blocks to bound memory."""
    block = max(1, EXACT_BLOCK_FLOATS // max(embeddings.shape[1], 1))
    blocks = (np.ascontiguousarray(embeddings[start:start + block], np.float32)
              for start in range(0, embeddings.shape[0], block))
    _, rows = knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks, k, faiss.METRIC_INNER_PRODUCT,
                               ngpu=0)
    return rows


def measure_recall(catalog: CatalogView, queries: int = 1000, k: int = RECALL_K, seed: int = 0,
                   exact: tuple[np.ndarray, list[np.ndarray]] | None = None) -> tuple[float, int, float]:
    """Recall@k of what the catalog's search returns against exact search, items as queries
    (each excluding itself). Returns (recall, number of queries, lower 95% confidence bound)."""
    n, d = catalog.embeddings.shape
    if n < 2:
        return 1.0, 0, 1.0
    if exact is None:
        exact = exact_reference(catalog, queries, k, seed)
    sample, truth = exact
    hits = search_vectors(catalog, np.asarray(catalog.embeddings[sample]), k,
                          exclude_ids=[[i] for i in catalog.ids[sample]])
    found = np.array([len(set(h.tolist()) & set(t.tolist())) / max(len(t), 1) for h, t in zip(hits.ids, truth)])
    recall = float(found.mean())
    lower = recall - 1.96 * float(found.std(ddof=1)) / np.sqrt(len(found)) if len(found) > 1 else recall
    return recall, len(sample), float(lower)


def exact_reference(catalog: CatalogView, queries: int, k: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(sampled item rows, their exact top-k ids without themselves): what tuning measures against."""
    n, d = catalog.embeddings.shape
    # Bound the exact work (queries x n x d multiply-adds) to about 1e12 (a minute on 2 cores)
    # on big catalogs, but keep at least 500 queries: fewer make the tuned recall too noisy.
    q = int(min(n, queries, max(500, 1e12 // max(n * d, 1))))
    sample = np.sort(np.random.default_rng(seed).choice(n, size=q, replace=False))
    rows = exact_top(np.ascontiguousarray(catalog.embeddings[sample], np.float32), catalog.embeddings,
                     min(k + 1, n))
    truth = [catalog.ids[r[r != s][:k]] for r, s in zip(rows, sample)]
    return sample, truth
