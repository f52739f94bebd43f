"""Building a catalog's FAISS index and tuning its search effort against exact search.

index.choose decides which index; this builds it (training where it needs to, adding the
vectors under their stable ids) and raises efSearch / nprobe (and, for compressed codes, the
candidates re-scored per result) until recall@10 against exact search reaches RECALL_TARGET.
"""
from __future__ import annotations

import time

import faiss
import numpy as np
import pandas as pd
from faiss.contrib.exhaustive_search import knn_ground_truth

from embedder.progress import ProgressCallback, no_progress
from index.catalog import Catalog
from index.choose import RERANK_QUANTISED, IndexChoice, index_kind, quantised
from index.description import CatalogInfo
from index.store import ID_COLUMN, CatalogError, add_vectors
from index.vectors import IndexCodes

RECALL_TARGET = 0.95  # recall@10 against exact search that tuning aims for
RECALL_K = 10
RERANK_MAX = 256  # tuning stops here: 2,560 rows re-scored for 10 results (8 ms at 10^7 x 512)
EXACT_BLOCK_FLOATS = 1 << 26  # gallery rows x d read per block by exact search (256 MB)


def _train_sample(embeddings: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    n = embeddings.shape[0]
    if size >= n:
        return np.ascontiguousarray(embeddings, np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(embeddings[rows], np.float32)


def new_index(choice: IndexChoice, d: int, embeddings: np.ndarray,
              progress: ProgressCallback = no_progress) -> faiss.Index:
    """An empty (trained) index for the choice, accepting add_with_ids."""
    index = faiss.index_factory(d, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        n = embeddings.shape[0]
        ivf = faiss.try_extract_index_ivf(index)
        needed = ivf.nlist if ivf is not None else 256
        if n < needed:
            raise CatalogError(f"index {choice.factory!r} needs at least {needed:,} vectors to train, "
                               f"the catalog has {n:,}; choose a smaller index (e.g. --index Flat)")
        if ivf is not None:
            ivf.cp.niter = 10
            size = min(n, max(ivf.nlist * 40, 20_000))
        else:
            size = min(n, 100_000)
        progress(f"training {choice.factory} on {size:,} vectors…", 0, 0)
        index.train(_train_sample(embeddings, size))
    try:
        index.add_with_ids(np.zeros((0, d), np.float32), np.zeros(0, np.int64))
    except RuntimeError:  # Flat, HNSW: stable ids through an id map
        index = faiss.IndexIDMap2(index)
    return index


def exact_top(queries: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top-k (inner product), the gallery read in blocks to bound memory."""
    block = max(1, EXACT_BLOCK_FLOATS // max(embeddings.shape[1], 1))
    blocks = (np.ascontiguousarray(embeddings[start:start + block], np.float32)
              for start in range(0, embeddings.shape[0], block))
    _, rows = knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks, k, faiss.METRIC_INNER_PRODUCT,
                               ngpu=0)
    return rows


def measure_recall(catalog: Catalog, queries: int = 1000, k: int = RECALL_K, seed: int = 0,
                   exact: tuple[np.ndarray, list[np.ndarray]] | None = None) -> tuple[float, int, float]:
    """Recall@k of what catalog.search_vectors returns against exact search, items as queries
    (each excluding itself). Returns (recall, number of queries, lower 95% confidence bound)."""
    n, d = catalog.embeddings.shape
    if n < 2:
        return 1.0, 0, 1.0
    if exact is None:
        exact = exact_reference(catalog, queries, k, seed)
    sample, truth = exact
    hits = catalog.search_vectors(np.asarray(catalog.embeddings[sample]), k,
                                  exclude_ids=[[i] for i in catalog.ids[sample]])
    found = np.array([len(set(h.tolist()) & set(t.tolist())) / max(len(t), 1) for h, t in zip(hits.ids, truth)])
    recall = float(found.mean())
    lower = recall - 1.96 * float(found.std(ddof=1)) / np.sqrt(len(found)) if len(found) > 1 else recall
    return recall, len(sample), float(lower)


def exact_reference(catalog: Catalog, queries: int, k: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
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


def tune_search(catalog: Catalog, progress: ProgressCallback = no_progress, stop_gain: float | None = None) -> dict:
    """Raise efSearch / nprobe until recall@10 vs exact search reaches the target with 95%
    confidence (its lower confidence bound, over the sampled queries); returns the quality record.

    stop_gain: also stop when a step gains less recall than this (compressed codes, not the
    lists searched, then limit recall: more effort only costs time)."""
    kind = index_kind(catalog.choice.factory)
    if kind == "flat":
        return {"recall_at_10": 1.0, "recall_queries": 0, "note": "exact search"}
    exact = exact_reference(catalog, 1000, RECALL_K, 0)
    if kind == "hnsw":
        knob, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    elif kind == "ivf":
        nlist = faiss.extract_index_ivf(catalog.index).nlist
        knob, values = "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if v < nlist] + [nlist]
    else:
        recall, q, lower = measure_recall(catalog, exact=exact)
        return {"recall_at_10": recall, "recall_at_10_lower95": lower, "recall_queries": q}
    tried, measured, reached, levelled, previous = {}, {}, None, None, 0.0
    for i, value in enumerate(values):
        catalog.choice.params[knob] = value
        recall, q, lower = measured[value] = measure_recall(catalog, exact=exact)
        tried[str(value)] = round(recall, 4)
        progress(f"  {knob}={value}: recall@10 {recall:.4f} (95% lower bound {lower:.4f}, {q} queries)", 0, 0)
        if reached is not None:
            break  # the margin step has been measured
        if stop_gain is not None and i > 0 and recall - previous < stop_gain:
            levelled = value
            break
        previous = recall
        if lower >= RECALL_TARGET:
            reached = value
            if i + 1 == len(values):
                break
    # One step of margin: catalog items as queries overestimate recall for new photos (measured
    # on 10^6 x 2048: nprobe=1 gave 0.988 on items, 0.897 on photos between near-duplicates).
    record = {"recall_at_10": recall, "recall_at_10_lower95": lower, "recall_queries": q, "tuned": knob,
              "target_reached_at": reached, "tried": tried}
    if levelled is not None:
        record["levelled_off_at"] = levelled
        record["note"] = (f"recall@10 stopped rising (less than {stop_gain} per step) at {knob}={levelled} "
                          f"before the {RECALL_TARGET} target: the compressed codes limit it")
        paid = values[values.index(levelled) - 1]  # the last step that still gained (never the first)
        catalog.choice.params[knob] = paid
        recall, q, lower = tune_rerank(catalog, exact, measured[paid], stop_gain, progress, record)
        record.update(recall_at_10=recall, recall_at_10_lower95=lower, recall_queries=q)
    elif reached is None:
        record["note"] = f"recall@10 target {RECALL_TARGET} not reached with confidence at the largest {knob}"
    return record


def tune_rerank(catalog: Catalog, exact, current: tuple[float, int, float], stop_gain: float,
                progress: ProgressCallback, record: dict) -> tuple[float, int, float]:
    """Where the codes limit recall and results are re-scored from real vectors, more candidates
    per result is what pays (measured at 10^7 x 512, PQ64: 16 -> 0.705, 64 -> 0.874 at the same
    p50); raise it by 4x steps while a step gains at least stop_gain, up to RERANK_MAX.
    `current`: (recall, queries, lower bound) measured with the present parameters."""
    params = catalog.choice.params
    if isinstance(catalog.scoring_vectors, IndexCodes) or not quantised(catalog.choice.factory):
        return current  # codes rank the same however many candidates
    best = int(params.get("rerank", RERANK_QUANTISED))
    recall, q, lower = current
    tried = {str(best): round(recall, 4)}
    while best * 4 <= RERANK_MAX and lower < RECALL_TARGET:
        params["rerank"] = best * 4
        more, more_q, more_lower = measure_recall(catalog, exact=exact)
        tried[str(best * 4)] = round(more, 4)
        progress(f"  rerank={best * 4}: recall@10 {more:.4f} (95% lower bound {more_lower:.4f}, {more_q} queries)",
                 0, 0)
        if more - recall < stop_gain:
            break
        best, recall, q, lower = best * 4, more, more_q, more_lower
    params["rerank"] = best
    record["rerank_tried"] = tried
    return recall, q, lower


def build_index(choice: IndexChoice, embeddings: np.ndarray, metadata: pd.DataFrame, info: CatalogInfo,
                progress: ProgressCallback = no_progress, tune: bool = True) -> tuple[faiss.Index, dict]:
    """The index of a catalog's vectors and its record for catalog.json (choice, tuned
    parameters, recall against exact search, seconds spent)."""
    started = time.perf_counter()
    d = embeddings.shape[1]
    index = new_index(choice, d, embeddings, progress)
    add_vectors(index, embeddings, metadata[ID_COLUMN].to_numpy(np.int64), progress, f"indexing ({choice.factory})")
    built = time.perf_counter() - started
    record = dict(choice.to_dict())
    record["params"] = dict(choice.params)
    quality = {}
    if tune:
        probe = Catalog(None, info.replace(index=record), embeddings, metadata, index)
        quality = tune_search(probe, progress)
        record["params"] = dict(probe.choice.params)
    record.update(quality, build_seconds=round(built, 3), tune_seconds=round(time.perf_counter() - started - built, 3))
    return index, record
