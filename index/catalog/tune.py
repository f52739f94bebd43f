"""Building a catalog's FAISS index and tuning its search effort against exact search.

index.catalog.choose decides which index; this builds it (training where it needs to, adding the
vectors under their stable ids) and raises efSearch / nprobe (and, for compressed codes, the
candidates re-scored per result) until recall@10 against exact search (index.search.exact) reaches
RECALL_TARGET.
"""
from __future__ import annotations

import time

import faiss
import numpy as np
import pandas as pd

from embedder.progress import ProgressCallback, no_progress
from index.catalog.choose import RERANK_QUANTISED, IndexChoice, index_kind, quantised
from index.catalog.description import CatalogInfo
from index.catalog.loaded import Catalog
from index.catalog.store import ID_COLUMN, CatalogError, add_vectors
from index.catalog.vectors import IndexCodes
from index.search.exact import RECALL_K, RECALL_TARGET, exact_reference, measure_recall

RERANK_MAX = 256  # tuning stops here: 2,560 rows re-scored for 10 results (8 ms at 10^7 x 512)


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
