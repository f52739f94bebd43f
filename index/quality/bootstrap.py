"""How sure a Recall@k figure is, and a difference between two models: percentile intervals from the
bootstrap over queries (index.quality.evaluation.RecallReport.hits: each query found or not at each k).

Two models compared on one catalog's images answer the same queries, so the comparison is paired:
each bootstrap sample draws one set of queries (with replacement) and both models' figures and their
difference are read on it; the difference's interval is narrower than the two figures' intervals
suggest when the models fail on the same queries. Queries of one product are not independent (a
product with many photos weighs more), so the intervals are a little narrow where products have many
photos. Seeded: the same reports give the same intervals.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from index.quality.evaluation import RecallReport

BOOTSTRAP_SAMPLES = 1000
LEVEL = 0.95
SAMPLE_BLOCK = 100  # bootstrap samples drawn at once (100 x queries counts)


def _sample_means(hits: list[np.ndarray], samples: int, seed: int) -> list[np.ndarray]:
    """For each (n, K) hit table of the same n queries: (samples, K) means over one shared set of
    resampled queries per sample (multinomial counts: each query drawn some number of times)."""
    n = len(hits[0])
    rng = np.random.default_rng(seed)
    out = [np.empty((samples, h.shape[1])) for h in hits]
    for start in range(0, samples, SAMPLE_BLOCK):
        size = min(SAMPLE_BLOCK, samples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        for table, means in zip(hits, out):
            means[start:start + size] = counts @ table.astype(np.float64) / n
    return out


def _interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1.0 - level) / 2 * 100
    return np.percentile(values, tail, axis=0), np.percentile(values, 100 - tail, axis=0)


def recall_intervals(report: RecallReport, *, samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL,
                     seed: int = 0) -> pd.DataFrame:
    """One row per k: recall, low, high (the bootstrap's `level` percentile interval)."""
    (means,) = _sample_means([report.hits()], samples, seed)
    low, high = _interval(means, level)
    return pd.DataFrame({"k": list(report.overall), "recall": list(report.overall.values()), "low": low,
                         "high": high})


def paired_comparison(a: RecallReport, b: RecallReport, *, samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL,
                      seed: int = 0) -> pd.DataFrame:
    """Model a against model b on the same queries: one row per k with a, b and b - a, each with its
    interval (a_low, a_high, ...). ValueError when the reports do not hold the same queries and ks."""
    if a.num_queries != b.num_queries or list(a.overall) != list(b.overall):
        raise ValueError("the two reports must answer the same queries at the same ks")
    hits_a, hits_b = a.hits(), b.hits()
    means_a, means_b = _sample_means([hits_a, hits_b], samples, seed)
    frame = pd.DataFrame({"k": list(a.overall)})
    for name, report, means in (("a", a, means_a), ("b", b, means_b),
                                ("difference", None, means_b - means_a)):
        frame[name] = (list(report.overall.values()) if report is not None else
                       np.array(list(b.overall.values())) - np.array(list(a.overall.values())))
        frame[f"{name}_low"], frame[f"{name}_high"] = _interval(means, level)
    return frame


def difference_words(low: float, high: float) -> str:
    """What an interval on b - a says, in words."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no clear difference"
