"""Re-ranking (index.quality.rerank) against brute-force numpy references on small random data."""
import numpy as np
import pytest

from index.quality.evaluation import recall_of_rankings
from index.quality.rerank import (NeighbourGraph, Reranking, alpha_query_expansion, database_augmentation,
                                  k_reciprocal_scores, leave_one_out_rankings)


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def knn(sims, i, k, without=()):
    """Brute force: the k best other rows of row i of a similarity matrix, best first."""
    order = [int(j) for j in np.argsort(-sims[i], kind="stable") if j != i and j not in without]
    return order[:k]


def blend_reference(x, neighbours, sims_to, alpha):
    v = x + sum(max(s, 0) ** alpha * y for y, s in zip(neighbours, sims_to))
    return v / np.linalg.norm(v)


def test_database_augmentation_blends_each_vector_with_its_neighbours():
    x = unit_rows(40, 8)
    sims = x @ x.T
    got = database_augmentation(x, k=3, alpha=2.0)
    for i in range(len(x)):
        nb = knn(sims, i, 3)
        np.testing.assert_allclose(got[i], blend_reference(x[i], x[nb], sims[i, nb], 2.0), atol=1e-5)


def test_alpha_query_expansion_adds_the_weighted_neighbours():
    x, q = unit_rows(30, 6), unit_rows(1, 6, seed=1)[0]
    s = x @ q
    nb = np.argsort(-s)[:4]
    got = alpha_query_expansion(q[None], x[nb][None], s[nb][None], alpha=3.0)[0]
    np.testing.assert_allclose(got, blend_reference(q, x[nb], s[nb], 3.0), atol=1e-5)


def k_reciprocal_reference(points, q, k, lam):
    """Brute force over the joint set: points (catalog) and q as node n, dense vectors and sets."""
    joint = np.vstack([points, q[None]])
    sims = joint @ joint.T
    n = len(joint)
    neighbours = [set(knn(sims, i, k)) for i in range(n)]
    recip = [{i} | {j for j in neighbours[i] if i in neighbours[j]} for i in range(n)]
    weights = np.zeros((n, n))
    for i in range(n):
        for j in recip[i]:
            weights[i, j] = np.exp(2 * sims[i, j] - 2)
    q_node = n - 1
    out = {}
    for g in range(n - 1):
        jac = np.minimum(weights[q_node], weights[g]).sum() / np.maximum(weights[q_node], weights[g]).sum()
        out[g] = (1 - lam) * sims[q_node, g] + lam * jac
    return out


def test_k_reciprocal_scores_match_the_joint_graph_brute_force_for_a_new_photo():
    x, q = unit_rows(50, 5, seed=2), unit_rows(1, 5, seed=3)[0]
    k, lam = 4, 0.4
    s = x @ q
    candidates = np.argsort(-s, kind="stable")[:20]
    got = k_reciprocal_scores(q, candidates, s[candidates], NeighbourGraph.of(x, k), x, k, lam)
    reference = k_reciprocal_reference(x, q, k, lam)
    np.testing.assert_allclose(got, [reference[int(g)] for g in candidates], atol=1e-5)


def test_k_reciprocal_of_a_catalog_item_is_the_same_as_that_photo_searching_the_others():
    x = unit_rows(50, 5, seed=4)
    k, lam, item = 4, 0.4, 7
    others = np.delete(np.arange(50), item)
    s = x @ x[item]
    candidates = [int(j) for j in np.argsort(-s, kind="stable") if j != item][:20]
    got = k_reciprocal_scores(x[item], np.asarray(candidates), s[candidates], NeighbourGraph.of(x, k), x, k, lam,
                              query_row=item)
    reference = k_reciprocal_reference(x[others], x[item], k, lam)  # rows of x[others] shift past the item
    np.testing.assert_allclose(got, [reference[g - (g > item)] for g in candidates], atol=1e-5)


@pytest.mark.parametrize("reranking", [Reranking("dba", 3, 2.0), Reranking("dba+aqe", 2, 3.0)])
def test_leave_one_out_dba_ranks_as_a_catalog_built_without_the_query(reranking):
    x = unit_rows(60, 6, seed=5)
    got = leave_one_out_rankings(x, reranking, depth=5)
    for item in range(len(x)):
        others = np.delete(np.arange(len(x)), item)
        augmented = database_augmentation(x[others], reranking.k, reranking.alpha)
        query = x[item]
        if reranking.expands_query:
            s = augmented @ query
            top = np.argsort(-s, kind="stable")[:reranking.k]
            query = alpha_query_expansion(query[None], augmented[top][None], s[top][None], reranking.alpha)[0]
        expected = others[np.argsort(-(augmented @ query), kind="stable")[:5]]
        np.testing.assert_array_equal(got[item], expected)


def test_leave_one_out_aqe_and_k_reciprocal_never_return_the_query_item():
    x = unit_rows(60, 6, seed=6)
    for reranking in (None, Reranking("aqe", 3), Reranking("kreciprocal", 5, lam=0.3, depth=20)):
        ranked = leave_one_out_rankings(x, reranking, depth=4)
        assert ranked.shape == (60, 4)
        assert not (ranked == np.arange(60)[:, None]).any()


def test_recall_of_rankings_counts_the_first_same_label_result():
    labels = np.array(["a", "a", "b", "b"])
    ranked = np.array([[2, 1], [0, 2], [0, 1], [0, 2]])
    report = recall_of_rankings(ranked, labels, labels, ks=(1, 2), query_gallery_rows=np.arange(4))
    assert report.overall == {1: 0.25, 2: 0.75}
    with pytest.raises(ValueError, match="own row"):
        recall_of_rankings(np.array([[0], [0], [0], [0]]), labels, labels, ks=(1,), query_gallery_rows=np.arange(4))


def test_a_reranking_is_stored_as_plain_values_and_refuses_unknown_methods():
    reranking = Reranking("kreciprocal", 20, lam=0.3, depth=50)
    assert Reranking.from_dict(reranking.to_dict()) == reranking
    with pytest.raises(ValueError, match="unknown re-ranking"):
        Reranking("magic", 3)


def test_full_whitening_makes_the_catalogs_directions_uncorrelated_with_unit_variance():
    from index.quality.rerank import Whitening

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6))  # correlated, unequal variances
    white = Whitening.fit(x, power=1.0)
    y = (x - white.mean) @ white.projection
    assert np.allclose(np.cov(y, rowvar=False), np.eye(6), atol=1e-3)
    assert np.allclose(np.linalg.norm(white.apply(x), axis=1), 1.0, atol=1e-5)


def test_whitening_keeps_the_directions_of_largest_variance_first():
    from index.quality.rerank import Whitening

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4)) * np.array([0.1, 5.0, 1.0, 0.01])
    white = Whitening.fit(x, dims=2, power=0.0)  # plain PCA: the two widest axes, unscaled
    assert white.projection.shape == (4, 2)
    assert np.allclose(np.abs(white.projection[:, 0]), [0, 1, 0, 0], atol=1e-2)
    assert np.allclose(np.abs(white.projection[:, 1]), [0, 0, 1, 0], atol=1e-2)
