"""Recall@k and classification accuracy: the numbers every part of the product reports."""
import json

import numpy as np
import pytest
import torch

from index.quality.evaluation import NpyRows, classification_accuracy, nearest_neighbours, recall_at_k


def unit_vectors(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_recall(queries, query_labels, gallery, gallery_labels, ks, exclude_self):
    similarity = queries.astype(np.float64) @ gallery.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")
    visible = len(gallery) - int(exclude_self)
    return {k: float((gallery_labels[order[:, :min(k, visible)]] == query_labels[:, None]).any(axis=1).mean())
            for k in ks}


def on_a_circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# Angles chosen so that no two distances tie. Neighbours, leaving each point out:
#   0 deg (p): 12 (q), 20 (p)  -> first hit at rank 2
#  12 deg (q): no other q      -> never found
#  20 deg (p): 12 (q), 0 (p)   -> first hit at rank 2
# 100 deg (r): 110 (r)         -> rank 1; 110 deg likewise
# 200 deg (s): no other s      -> never found
CIRCLE = on_a_circle([0, 12, 20, 100, 110, 200])
CIRCLE_LABELS = np.array(["p", "q", "p", "r", "r", "s"])
CIRCLE_CATEGORIES = ["tops", "tops", "tops", "shoes", "shoes", "bags"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_leave_one_out_recall_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    vectors, labels = unit_vectors(rng, 300), rng.integers(0, 40, 300)
    ks = (1, 2, 4, 8, 10, 100)
    report = recall_at_k(vectors, labels, ks=ks)
    assert report.overall == pytest.approx(brute_force_recall(vectors, labels, vectors, labels, ks, True))
    assert (report.num_queries, report.num_gallery) == (300, 300)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_query_against_gallery_recall_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    queries, query_labels = unit_vectors(rng, 120), rng.integers(0, 30, 120)
    gallery, gallery_labels = unit_vectors(rng, 400), rng.integers(0, 30, 400)
    ks = (1, 5, 20)
    report = recall_at_k(queries, query_labels, gallery, gallery_labels, ks=ks)
    expected = brute_force_recall(queries, query_labels, gallery, gallery_labels, ks, False)
    assert report.overall == pytest.approx(expected)


def test_string_labels_work_like_integer_labels():
    rng = np.random.default_rng(7)
    vectors, labels = unit_vectors(rng, 100), rng.integers(0, 10, 100)
    as_text = np.array([f"product-{label}" for label in labels])
    assert recall_at_k(vectors, as_text, ks=(1, 4)).overall == recall_at_k(vectors, labels, ks=(1, 4)).overall


def test_smaller_blocks_give_identical_results():
    rng = np.random.default_rng(3)
    vectors, labels = unit_vectors(rng, 100), rng.integers(0, 10, 100)
    whole = recall_at_k(vectors, labels, ks=(1, 4, 16), query_categories=labels % 3)
    blocked = recall_at_k(vectors, labels, ks=(1, 4, 16), query_categories=labels % 3, block_size=7)
    assert blocked.overall == whole.overall
    assert blocked.per_category.equals(whole.per_category)
    for exclude_self in (True, False):
        scores, ids = nearest_neighbours(vectors, vectors, 9, exclude_self=exclude_self)
        blocked_scores, blocked_ids = nearest_neighbours(vectors, vectors, 9, exclude_self=exclude_self, block_size=7)
        np.testing.assert_array_equal(blocked_ids, ids)
        np.testing.assert_array_equal(blocked_scores, scores)


def test_a_gallery_larger_than_memory_streams_in_blocks_with_the_same_neighbours(tmp_path):
    rng = np.random.default_rng(4)
    vectors, labels = unit_vectors(rng, 250), rng.integers(0, 20, 250)
    np.save(tmp_path / "embeddings.npy", vectors)
    on_disk = NpyRows(tmp_path / "embeddings.npy")
    assert on_disk.shape == vectors.shape
    np.testing.assert_array_equal(on_disk[40:77], vectors[40:77])
    whole = recall_at_k(vectors, labels, ks=(1, 4, 16), query_categories=labels % 3)
    for gallery_block in (64, 249, 37):  # several blocks, one short last block of one row, uneven
        streamed = recall_at_k(on_disk, labels, ks=(1, 4, 16), query_categories=labels % 3, gallery_block=gallery_block)
        assert streamed.overall == whole.overall
        assert streamed.per_category.equals(whole.per_category)
        for exclude_self in (True, False):
            scores, ids = nearest_neighbours(vectors, vectors, 9, exclude_self=exclude_self)
            s_scores, s_ids = nearest_neighbours(vectors, on_disk, 9, exclude_self=exclude_self, gallery_block=gallery_block)
            np.testing.assert_allclose(s_scores, scores, atol=1e-6)
            np.testing.assert_array_equal(s_ids, ids)


def test_leave_one_out_on_a_sample_of_queries_equals_the_full_run_restricted_to_them():
    rng = np.random.default_rng(5)
    vectors, labels = unit_vectors(rng, 200), rng.integers(0, 25, 200)
    sample = np.sort(rng.choice(200, size=30, replace=False))
    sampled = recall_at_k(vectors[sample], labels[sample], vectors, labels, ks=(1, 2, 8), query_gallery_rows=sample)
    similarity = vectors[sample].astype(np.float64) @ vectors.T.astype(np.float64)
    similarity[np.arange(30), sample] = -np.inf
    order = np.argsort(-similarity, axis=1, kind="stable")
    expected = {k: float((labels[order[:, :k]] == labels[sample, None]).any(axis=1).mean()) for k in (1, 2, 8)}
    assert sampled.overall == pytest.approx(expected)
    assert sampled.num_queries == 30 and sampled.num_gallery == 200
    with pytest.raises(ValueError, match="rows of the gallery"):
        recall_at_k(vectors[:2], labels[:2], vectors, labels, ks=(1,), query_gallery_rows=[0, 200])


def test_a_query_never_retrieves_itself_but_does_retrieve_its_exact_duplicate():
    # 0 and 1 are the same vector; excluding by score instead of by index would drop both.
    vectors = on_a_circle([0, 0, 90])
    _, ids = nearest_neighbours(vectors, vectors, 2, exclude_self=True)
    assert ids[:2].tolist() == [[1, 2], [0, 2]]
    assert recall_at_k(vectors, ["a", "a", "b"], ks=(1,)).overall == pytest.approx({1: 2 / 3})
    # A duplicate with another label is a miss at k=1, and the further same-label item a hit at k=2.
    report = recall_at_k(vectors, ["a", "b", "a"], ks=(1, 2), query_categories=["first", "second", "third"])
    assert report.per_category.loc["first", ["R@1", "R@2"]].tolist() == [0.0, 1.0]


def test_self_is_excluded_even_when_it_ties_with_more_than_k_neighbours():
    identical = np.tile(on_a_circle([45]), (6, 1))
    scores, ids = nearest_neighbours(identical, identical, 2, exclude_self=True)
    assert ids.shape == (6, 2)
    assert not (ids == np.arange(6)[:, None]).any()
    assert (ids >= 0).all()
    assert recall_at_k(identical, np.zeros(6), ks=(1,)).overall == {1: 1.0}


def test_exact_duplicates_in_a_separate_gallery_count_as_matches():
    gallery = on_a_circle([0, 0, 90])
    report = recall_at_k(on_a_circle([0]), ["a"], gallery, ["b", "a", "c"], ks=(1, 2))
    # Which duplicate ranks first is FAISS's tie order; either way one of the two top items matches.
    assert report.overall[2] == 1.0


def test_per_category_breakdown_counts_queries_and_hits():
    report = recall_at_k(CIRCLE, CIRCLE_LABELS, ks=(1, 2), query_categories=CIRCLE_CATEGORIES)
    assert report.overall == pytest.approx({1: 2 / 6, 2: 4 / 6})
    table = report.per_category
    assert list(table.columns) == ["R@1", "R@2", "queries"]
    assert table.loc["tops"].tolist() == pytest.approx([0.0, 2 / 3, 3])
    assert table.loc["shoes"].tolist() == pytest.approx([1.0, 1.0, 2])
    assert table.loc["bags"].tolist() == pytest.approx([0.0, 0.0, 1])
    assert report.queries_without_match == 2


def test_without_categories_the_breakdown_is_empty():
    report = recall_at_k(CIRCLE, CIRCLE_LABELS, ks=(1,))
    assert report.per_category.empty
    assert report.to_frame().index.tolist() == ["all"]


def test_k_beyond_the_gallery_is_clamped_and_reported():
    report = recall_at_k(CIRCLE, CIRCLE_LABELS, ks=(1, 10, 100))
    # Leaving one out, each query sees 5 items: R@10 and R@100 are R@5 (every findable query).
    assert report.clamped_ks == {10: 5, 100: 5}
    assert report.overall[10] == report.overall[100] == pytest.approx(4 / 6)
    assert "R@10 uses k=5" in report.to_markdown()
    scores, ids = nearest_neighbours(CIRCLE, CIRCLE, 100, exclude_self=True)
    assert ids.shape == scores.shape == (6, 5)


def test_report_renders_as_markdown_and_json():
    report = recall_at_k(CIRCLE, CIRCLE_LABELS, ks=(1, 2), query_categories=CIRCLE_CATEGORIES)
    markdown = report.to_markdown()
    assert markdown.splitlines()[0] == "| category | R@1 | R@2 | queries |"
    assert "| all | 0.3333 | 0.6667 | 6 |" in markdown
    assert "| shoes | 1.0000 | 1.0000 | 2 |" in markdown
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["recall"] == pytest.approx({"R@1": 2 / 6, "R@2": 4 / 6})
    assert as_dict["per_category"]["tops"] == pytest.approx({"R@1": 0.0, "R@2": 2 / 3, "queries": 3})
    assert as_dict["num_queries"] == 6 and as_dict["queries_without_match"] == 2


def test_nearest_neighbours_are_ranked_by_cosine_similarity():
    gallery = on_a_circle([0, 90, 40, 180])
    scores, ids = nearest_neighbours(on_a_circle([30]), gallery, 3)
    assert ids.tolist() == [[2, 0, 1]]
    assert scores[0] == pytest.approx(np.cos(np.deg2rad([10, 30, 60])), abs=1e-6)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="dimensions"):
        recall_at_k(np.ones((3, 4)), [0, 1, 2], np.ones((3, 5)), [0, 1, 2])
    with pytest.raises(ValueError, match="one label"):
        recall_at_k(CIRCLE, CIRCLE_LABELS[:3])
    with pytest.raises(ValueError, match="gallery_labels"):
        recall_at_k(CIRCLE, CIRCLE_LABELS, CIRCLE)
    with pytest.raises(ValueError, match="no item"):
        recall_at_k(CIRCLE[:1], ["a"])


def test_classification_accuracy_top1_and_top5_clamped_to_the_classes():
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 2.0, 3.0], [2.0, 1.0, 0.0]])
    labels = np.array([0, 2, 1, 0])
    # Row 1: label 2 is second; row 2: label 1 is second.
    assert classification_accuracy(logits, labels, topk=(1, 2, 5)) == pytest.approx({1: 0.5, 2: 1.0, 5: 1.0})


def test_classification_accuracy_takes_torch_tensors():
    logits, labels = torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])
    assert classification_accuracy(logits, labels, topk=(1,)) == {1: 0.5}
