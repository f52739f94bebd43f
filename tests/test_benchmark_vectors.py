"""Benchmark helpers whose verdicts the reports rest on: the Milvus/FAISS top-10 comparison (ties
counted only where the scores agree) and the PCA projection of benchmarks.vector_size."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.milvus_bench import TIE_EPS, compare_top
from benchmarks.vector_size import fit_pca, project


def frame(ids, scores):
    return pd.DataFrame({"id": np.asarray(ids, np.int64), "score": np.asarray(scores, np.float32)})


def test_same_ids_in_the_same_order_are_identical():
    assert compare_top(frame([3, 1, 2], [0.9, 0.8, 0.7]), frame([3, 1, 2], [0.9, 0.8, 0.7])) == "identical"


def test_equal_scores_listed_in_another_order_are_ties():
    a = frame([3, 1, 2], [0.9, 0.8, 0.8])
    b = frame([3, 2, 1], [0.9, 0.8, 0.8])
    assert compare_top(a, b) == "ties"


def test_another_item_of_equal_score_at_the_cut_is_a_tie():
    a = frame([3, 1, 5], [0.9, 0.8, 0.7])
    b = frame([3, 1, 6], [0.9, 0.8, 0.7 + TIE_EPS / 2])
    assert compare_top(a, b) == "ties"


def test_a_missed_better_item_is_a_difference():
    a = frame([3, 1, 2], [0.9, 0.85, 0.8])
    b = frame([3, 2, 4], [0.9, 0.8, 0.75])  # item 1 (0.85) missed: the scores from its place on are lower
    assert compare_top(a, b) == "different"


def test_different_lengths_are_a_difference():
    assert compare_top(frame([3, 1], [0.9, 0.8]), frame([3], [0.9])) == "different"


def test_pca_directions_are_orthonormal_by_falling_variance_and_projections_unit_length():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 16)) * np.linspace(3, 0.1, 16)).astype(np.float32)
    mean, directions = fit_pca(x)
    assert np.allclose(directions.T @ directions, np.eye(16), atol=1e-5)
    variances = ((x - mean) @ directions).var(axis=0)
    assert (np.diff(variances) <= 1e-4).all()
    out = project(x, mean, directions[:, :4])
    assert out.shape == (500, 4) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
