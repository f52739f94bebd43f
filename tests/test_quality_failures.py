"""Failure analysis of nearest neighbours (index/quality/failures.py): which queries' best match shows
another product, most confidently wrong first, and the product pairs confused most."""
from __future__ import annotations

import numpy as np

from index.quality.failures import confused_pairs, failure_pairs, failure_rows, top1_correct

# Rows 0-1 product a, 2-3 b, 4-5 c, 6 d (alone: it cannot be found, so it is never a failure).
PRODUCTS = np.array(["a", "a", "b", "b", "c", "c", "d"])
QUERIES = np.arange(7)
FOUND = np.array([[2, 1], [0, 2], [0, 3], [2, 0], [0, 5], [2, 4], [0, 1]])  # best match first
SCORES = np.array([[0.9, 0.8], [0.7, 0.6], [0.5, 0.4], [0.95, 0.1], [0.75, 0.7], [0.5, 0.4], [0.99, 0.2]])


def test_a_query_is_right_when_its_best_match_shows_its_own_product():
    assert top1_correct(PRODUCTS, QUERIES, FOUND).tolist() == [False, True, False, True, False, False, False]


def test_failures_are_the_wrong_best_matches_of_products_with_another_image_most_confident_first():
    # row 6 is wrong too, but its product has no other image; rows 2 and 5 tie at 0.5 and keep their order
    assert failure_rows(PRODUCTS, QUERIES, SCORES, FOUND).tolist() == [0, 4, 2, 5]
    pairs = failure_pairs(PRODUCTS, QUERIES, SCORES, FOUND)
    assert pairs.to_dict("list") == {"row": [0, 4, 2, 5], "query_product": ["a", "c", "b", "c"],
                                     "matched_product": ["b", "a", "a", "b"], "score": [0.9, 0.75, 0.5, 0.5]}


def test_confused_pairs_count_failures_per_product_pair_and_their_share_of_the_products_queries():
    table = confused_pairs(PRODUCTS, QUERIES, SCORES, FOUND)
    assert table[["query_product", "matched_product", "failures"]].values.tolist() == [
        ["a", "b", 1], ["c", "a", 1], ["b", "a", 1], ["c", "b", 1]]  # equal counts: higher mean score first
    assert table["mean_score"].tolist() == [0.9, 0.75, 0.5, 0.5]
    assert table["share_of_queries"].tolist() == [0.5, 0.5, 0.5, 0.5]


def test_on_a_sample_of_queries_only_those_are_judged_and_counted():
    sample = np.array([0, 4, 5])
    rows = failure_rows(PRODUCTS, sample, SCORES[sample], FOUND[sample])
    assert rows.tolist() == [0, 4, 5]
    table = confused_pairs(PRODUCTS, sample, SCORES[sample], FOUND[sample])
    by_pair = {(q, m): (n, share) for q, m, n, share in
               table[["query_product", "matched_product", "failures", "share_of_queries"]].itertuples(index=False)}
    assert by_pair == {("a", "b"): (1, 1.0), ("c", "a"): (1, 0.5), ("c", "b"): (1, 0.5)}


def test_no_failures_give_empty_tables():
    right = np.array([[1, 2], [0, 2], [3, 0], [2, 0], [5, 0], [4, 0], [0, 1]])
    assert failure_rows(PRODUCTS, QUERIES, SCORES, right).tolist() == []
    assert confused_pairs(PRODUCTS, QUERIES, SCORES, right).empty
