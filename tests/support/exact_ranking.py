"""Comparing a ranking with an exact reference so the comparison holds on any machine: scores agree to a
rounding, and the items are right as a set where scores tie (exact copies score the same on one machine and
a rounding apart on another, so their order is the BLAS's, not the product's)."""
from __future__ import annotations

import numpy as np

TIE = 1e-5  # scores closer than this are a tie: far above float32 rounding, far below real differences


def assert_exact_top_k(found_ids, found_scores, ids, scores, allowed, k: int) -> None:
    """found_ids / found_scores: a ranking the product returned; ids, scores, allowed: every candidate's id,
    exact score and whether it may be returned. Passes when the ranking is a correct top-k whatever the
    order of ties: the right length, each score the item's exact score, in descending order, and no
    candidate left out that scores above the last one shown."""
    found_ids, found_scores = np.asarray(found_ids), np.asarray(found_scores, np.float64)
    ids, scores, allowed = np.asarray(ids), np.asarray(scores, np.float64), np.asarray(allowed, bool)
    assert len(found_ids) == min(k, int(allowed.sum())), (len(found_ids), k, int(allowed.sum()))
    assert len(set(found_ids.tolist())) == len(found_ids), "an item shown twice"
    row_of = {item: r for r, item in enumerate(ids.tolist())}
    rows = np.asarray([row_of[item] for item in found_ids.tolist()], np.int64)
    assert allowed[rows].all(), "an item outside the pool"
    np.testing.assert_allclose(found_scores, scores[rows], atol=TIE)
    assert (np.diff(found_scores) <= TIE).all(), "not in descending order"
    if len(found_ids):
        left_out = allowed.copy()
        left_out[rows] = False
        assert not (scores[left_out] > found_scores[-1] + TIE).any(), "a better item was left out"

