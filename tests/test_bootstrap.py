"""Confidence intervals on Recall@k and on two models' difference (index.quality.bootstrap)."""
from __future__ import annotations

import numpy as np
import pytest

from index.quality.bootstrap import difference_words, paired_comparison, recall_intervals
from index.quality.evaluation import recall_of_rankings

KS = (1, 2)


def report_of(first_hits: np.ndarray):
    """A report whose query i finds its product first at rank first_hits[i] (-1: not in its 2 results)."""
    n = len(first_hits)
    labels = np.array([f"p{i}" for i in range(n)])
    gallery = np.array([f"other{i}" for i in range(n)] + [f"p{i}" for i in range(n)])
    ranked = np.tile(np.arange(2), (n, 1))  # two rows of other products ...
    for i, rank in enumerate(first_hits):
        if rank >= 0:
            ranked[i, rank] = n + i  # ... or the query's own product at that rank
    return recall_of_rankings(ranked, labels, gallery, ks=KS)


def test_each_recall_gets_an_interval_around_it():
    rng = np.random.default_rng(0)
    report = report_of(np.where(rng.random(400) < 0.7, 0, -1))
    assert np.array_equal(report.hits()[:, 0], report.first_hit == 0)
    table = recall_intervals(report, samples=500)
    assert list(table["k"]) == list(KS)
    assert (table["low"] <= table["recall"]).all() and (table["recall"] <= table["high"]).all()
    assert (table["low"] >= 0).all() and (table["high"] <= 1).all()
    width = float(table["high"].iloc[0] - table["low"].iloc[0])
    assert width == pytest.approx(2 * 1.96 * np.sqrt(0.7 * 0.3 / 400), rel=0.25)  # the binomial's width
    assert table.equals(recall_intervals(report, samples=500))  # seeded


def test_the_same_model_twice_differs_by_nothing():
    report = report_of(np.array([0, 1, -1, 0] * 25))
    table = paired_comparison(report, report, samples=200)
    assert (table["difference"] == 0).all()
    assert (table["difference_low"] == 0).all() and (table["difference_high"] == 0).all()
    assert difference_words(0.0, 0.0) == "no clear difference"


def test_a_paired_difference_is_surer_than_the_two_intervals_suggest():
    rng = np.random.default_rng(1)
    a = np.where(rng.random(300) < 0.6, 0, -1)
    b = a.copy()
    b[np.flatnonzero(a < 0)[:30]] = 0  # b finds 30 more queries at rank 1, and loses none
    table = paired_comparison(report_of(a), report_of(b), samples=500)
    row = table.iloc[0]
    assert row["difference"] == pytest.approx(0.1)
    assert row["difference_low"] > 0 and difference_words(row["difference_low"], row["difference_high"]) == "better"
    assert row["a_high"] > row["b_low"]  # the two figures' own intervals overlap
    assert difference_words(-0.2, -0.1) == "worse"


def test_reports_of_other_queries_are_refused():
    with pytest.raises(ValueError, match="same queries"):
        paired_comparison(report_of(np.zeros(10, int)), report_of(np.zeros(11, int)))
