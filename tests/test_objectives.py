"""Each objective of the paper against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from training import objectives


def _ce(logits, target):
    """-log softmax(logits)[target], by hand."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_coarse_loss_is_cross_entropy_over_categories():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert objectives.coarse_loss(logits, torch.tensor([0])).item() == pytest.approx(_ce([2.0, 0.0, -1.0], 0), abs=1e-6)


def test_instance_loss_treats_every_image_as_its_own_class():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    loss = objectives.instance_loss(h, w, rows=torch.tensor([0, 2]), scale=2.0)
    # image 0 -> logits 2*(1, 0, 0.6); image 1 -> logits 2*(0, 1, 0.8), its own row is 2
    expected = (_ce([2.0, 0.0, 1.2], 0) + _ce([0.0, 2.0, 1.6], 2)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_instance_loss_within_category_softmax_runs_only_over_the_same_category():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # rows 0-1 belong to category 0, rows 2-3 to category 1
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    start = torch.tensor([0, 2, 4])
    loss = objectives.instance_loss_within_category(h, w, rows=torch.tensor([1, 3]), categories=torch.tensor([0, 1]),
                                                    category_start=start, scale=1.0)
    expected = (_ce([1.0, 0.0], 1) + _ce([0.8, 0.6], 1)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_instance_loss_within_category_never_reads_other_categories_weights():
    # A mask over all n would still multiply by the other rows: NaN there would leak into the loss.
    h = torch.randn(4, 3)
    w = torch.randn(6, 3)
    w[3:] = float("nan")
    loss = objectives.instance_loss_within_category(h, w, rows=torch.tensor([0, 1, 2, 1]),
                                                    categories=torch.zeros(4, dtype=torch.long),
                                                    category_start=torch.tensor([0, 3, 6]), scale=1.0)
    assert torch.isfinite(loss)


def test_sampled_instance_loss_equals_eq4_when_a_category_has_no_more_images_than_negatives():
    h = torch.randn(6, 3)
    w = torch.nn.functional.normalize(torch.randn(7, 3), dim=1)
    args = dict(rows=torch.tensor([0, 2, 3, 5, 6, 4]), categories=torch.tensor([0, 0, 1, 1, 1, 1]),
                category_start=torch.tensor([0, 3, 7]), scale=5.0)
    exact = objectives.instance_loss_within_category(h, w, **args)
    assert objectives.instance_loss_within_category(h, w, negatives=4, **args).item() == pytest.approx(exact.item(), abs=1e-5)


def test_sampled_instance_loss_scores_the_positive_against_sampled_rows_of_its_own_category():
    torch.manual_seed(0)
    h = torch.tensor([[1.0, 0.0]])
    # category 0: rows 0-4 (the image is row 1); category 1: rows 5-6, which must never be read
    w = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [-1.0, 0.0], [float("nan")] * 2, [float("nan")] * 2])
    args = dict(rows=torch.tensor([1]), categories=torch.tensor([0]), category_start=torch.tensor([0, 5, 7]), scale=2.0)
    torch.manual_seed(3)
    loss = objectives.instance_loss_within_category(h, w, negatives=3, **args)
    torch.manual_seed(3)
    drawn = torch.randint(0, 5, (3,)).tolist()  # the same draw the loss made
    # the image's own row, if drawn, is no negative
    negatives = [2.0 * float(w[r, 0]) for r in drawn if r != 1]
    assert loss.item() == pytest.approx(_ce([2.0, *negatives], 0), abs=1e-5)


def test_sampled_instance_loss_over_all_images_scores_the_positive_against_sampled_rows_of_any_category():
    h = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [-1.0, 0.0], [0.0, -1.0]])
    torch.manual_seed(5)
    loss = objectives.instance_loss(h, w, rows=torch.tensor([1]), scale=2.0, negatives=4)
    torch.manual_seed(5)
    drawn = torch.randint(0, 6, (4,)).tolist()
    negatives = [2.0 * float(w[r, 0]) for r in drawn if r != 1]
    assert loss.item() == pytest.approx(_ce([2.0, *negatives], 0), abs=1e-5)
    # with at least as many negatives as images the softmax is Eq. 1's, exactly
    exact = objectives.instance_loss(h, w, rows=torch.tensor([1]), scale=2.0)
    assert objectives.instance_loss(h, w, rows=torch.tensor([1]), scale=2.0, negatives=6).item() == pytest.approx(exact.item())


def test_proxy_loss_classifies_into_the_assigned_proxy():
    h = torch.tensor([[1.0, 0.0]])
    proxies = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = objectives.proxy_loss(h, proxies, torch.tensor([1]), scale=10.0)
    assert loss.item() == pytest.approx(_ce([0.0, 10.0], 1), abs=1e-5)


def test_fine_loss_is_cross_entropy_over_fine_labels():
    logits = torch.tensor([[0.5, 1.5]])
    assert objectives.fine_loss(logits, torch.tensor([1])).item() == pytest.approx(_ce([0.5, 1.5], 1), abs=1e-6)


@pytest.mark.parametrize("normalise", [False, True])
def test_proxies_are_cluster_means_of_instance_weights_within_each_category(normalise):
    torch.manual_seed(0)
    # category 0: two tight groups; category 1: one group
    w = torch.cat([torch.randn(10, 4) * 0.01 + torch.tensor([5.0, 0, 0, 0]),
                   torch.randn(10, 4) * 0.01 + torch.tensor([0, 5.0, 0, 0]),
                   torch.randn(10, 4) * 0.01 + torch.tensor([0, 0, 5.0, 0])])
    start = torch.tensor([0, 20, 30])
    proxies, assignment = objectives.cluster_instance_weights(w, start, num_proxies=3, normalise=normalise)
    assert proxies.shape == (3, 4) and assignment.shape == (30,)
    # proxies never mix categories: category 0 rows use proxies that no category 1 row uses
    assert set(assignment[:20].tolist()).isdisjoint(set(assignment[20:].tolist()))
    assert len(set(assignment[:20].tolist())) == 2  # category 0 (2/3 of the rows) gets 2 of the 3 proxies
    for p in range(3):
        mean = w[assignment == p].mean(0)
        expected = mean / mean.norm() if normalise else mean
        assert torch.allclose(proxies[p], expected, atol=1e-5)
    # the two groups of category 0 are separated
    assert len(set(assignment[:10].tolist())) == 1 and assignment[0] != assignment[10]


def test_cosine_softmax_scores_are_scaled_cosines():
    from training.model import Classifier

    head = Classifier(dim=2, classes=2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))
    h = torch.tensor([[0.6, 0.8]])
    assert torch.allclose(head(h), torch.tensor([[6.0, 8.0]]))


def test_maskcon_soft_targets_keep_the_own_view_zero_other_categories_and_sum_to_one():
    # one image, three samples: two of its category (cosines 0.9 and 0.5), one of another (0.99)
    similarity = torch.tensor([[0.9, 0.5, 0.99]])
    same = torch.tensor([[True, True, False]])
    targets = objectives.maskcon_soft_targets(similarity, same, temperature=0.1, weight=1.0)
    # scores exp(s / T) rescaled so the largest is 1: 1 and exp(-4); the own view joins with 1
    raw = [1.0, 1.0, math.exp((0.5 - 0.9) / 0.1), 0.0]
    expected = torch.tensor([[v / sum(raw) for v in raw]])
    assert torch.allclose(targets, expected, atol=1e-6)
    assert targets.sum().item() == pytest.approx(1.0)
    assert targets[0, 3] == 0  # the other category's sample, however similar
    assert targets[0, 0] > 0  # the image's own view is always a positive


def test_maskcon_soft_targets_blend_with_the_self_supervised_target():
    similarity = torch.tensor([[0.2, 0.3], [0.1, 0.4]])
    same = torch.tensor([[True, False], [False, False]])
    targets = objectives.maskcon_soft_targets(similarity, same, temperature=0.5, weight=0.6)
    # image 0: soft (1/2, 1/2, 0) blended with (1, 0, 0) -> (0.7, 0.3, 0); image 1 has no sample of its category
    assert torch.allclose(targets, torch.tensor([[0.7, 0.3, 0.0], [1.0, 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(targets.sum(1), torch.ones(2))


def test_soft_target_instance_loss_is_cross_entropy_against_the_masked_targets():
    h = torch.tensor([[1.0, 0.0]])
    # rows 0-1: category 0 (the image is row 0), row 2: category 1
    w = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    row_categories = torch.tensor([0, 0, 1])
    loss = objectives.soft_target_instance_loss(h, w, torch.tensor([0]), torch.tensor([0]), row_categories, scale=2.0,
                                                soft_temperature=0.1, soft_weight=1.0)
    # logits: own row 2*1, row 1 2*0.6, row 2 2*0.8 (the own row as a candidate is left out);
    # targets: own view and row 1 (its only same-category sample, rescaled to 1) half each
    logits = [2.0, 1.2, 1.6]
    expected = 0.5 * _ce(logits, 0) + 0.5 * _ce(logits, 1)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # weight 0 is Eq. 3's instance loss
    plain = objectives.soft_target_instance_loss(h, w, torch.tensor([0]), torch.tensor([0]), row_categories, scale=2.0,
                                                 soft_temperature=0.1, soft_weight=0.0)
    assert plain.item() == pytest.approx(objectives.instance_loss(h, w, torch.tensor([0]), 2.0).item(), abs=1e-5)


def test_grafit_knn_loss_votes_for_the_category_with_the_memory_rows():
    h = torch.tensor([[1.0, 0.0]])
    memory = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    memory_categories = torch.tensor([0, 0, 1, 1])
    loss = objectives.grafit_knn_loss(h, memory, memory_categories, torch.tensor([0]), scale=2.0, exclude=torch.tensor([0]))
    # votes without the own row 0: category 0 = exp(1.2); all = exp(1.2) + exp(0) + exp(1.6)
    expected = -math.log(math.exp(1.2) / (math.exp(1.2) + 1.0 + math.exp(1.6)))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
