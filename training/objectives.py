"""The paper's objectives, each next to its equation. All take the head input h = g(f(x))
(g = identity, or the MLP head of the `**` variants) and return a scalar loss.

Notation: n instances, C coarse categories, W^I the instance weights (one row per
catalog image, rows of a category stored contiguously), W^P the instance proxies.
`scale` is 1/temperature of the cosine softmax (the `*` variants); with plain heads
rows are not normalised and scale is 1.
"""
from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F


def coarse_loss(coarse_logits: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """Eq. 2 (Cos): cross-entropy on the coarse category labels."""
    return F.cross_entropy(coarse_logits, categories)


def fine_loss(fine_logits: torch.Tensor, fine_labels: torch.Tensor) -> torch.Tensor:
    """Opt: cross-entropy on the fine labels (reference upper bound only)."""
    return F.cross_entropy(fine_logits, fine_labels)


def instance_loss(h: torch.Tensor, instance_weights: torch.Tensor, rows: torch.Tensor, scale: float,
                  negatives: int = 0) -> torch.Tensor:
    """Eq. 1 (Ins): every image is its own class; softmax over all n instance weights.
    `rows` are the images' rows in `instance_weights`. Cost O(B * n * d); with `negatives` > 0
    the denominator is sampled as in Eq. 4 below (cost O(B * negatives * d))."""
    n = instance_weights.shape[0]
    if not negatives or n <= negatives:
        return F.cross_entropy(scale * h @ instance_weights.t(), rows)
    return F.cross_entropy(*_sampled_logits(h, instance_weights, rows, 0, n, negatives, scale))


def _sampled_logits(h, instance_weights, own, start: int, end: int, negatives: int, scale: float):
    """Logits over the positive row (column 0) and `negatives` rows drawn uniformly from start:end
    (shared by the batch), as instance discrimination with a memory bank does; and the target."""
    sample = torch.randint(start, end, (negatives,), device=h.device)
    positive = scale * (h * instance_weights[own].to(h.dtype)).sum(1, keepdim=True)
    # A drawn row that is the image's own is not a negative.
    negative = (scale * h @ instance_weights[sample].t()).masked_fill(sample[None, :] == own[:, None], float("-inf"))
    target = torch.zeros(len(h), dtype=torch.long, device=h.device)
    return torch.cat([positive.to(negative.dtype), negative], 1), target


def instance_loss_within_category(h: torch.Tensor, instance_weights: torch.Tensor, rows: torch.Tensor,
                                  categories: torch.Tensor, category_start: torch.Tensor, scale: float,
                                  negatives: int = 0) -> torch.Tensor:
    """Eq. 4 (CoIns_imp): the instance softmax runs only over images of the same category.

    Category k owns rows category_start[k] : category_start[k+1] of W^I, so each group of
    the batch multiplies by its own slice: cost sum_k B_k * n_k * d, never a mask over n.
    With `negatives` > 0 a category with more images than that samples its denominator: the
    positive row and `negatives` rows drawn uniformly from the category (shared by the batch's
    images of that category); cost sum_k B_k * negatives * d, whatever n_k is.
    """
    total = h.new_zeros(())
    for k in torch.unique(categories).tolist():
        in_k = categories == k
        start, end = int(category_start[k]), int(category_start[k + 1])
        hk, own = h[in_k], rows[in_k]
        if not negatives or end - start <= negatives:
            logits, target = scale * hk @ instance_weights[start:end].t(), own - start
        else:
            logits, target = _sampled_logits(hk, instance_weights, own, start, end, negatives, scale)
        total = total + F.cross_entropy(logits, target, reduction="sum")
    return total / h.shape[0]


def maskcon_soft_targets(key_similarity: torch.Tensor, same_category: torch.Tensor, temperature: float,
                         weight: float) -> torch.Tensor:
    """MaskCon (Feng & Patras, CVPR 2023, Eq. 6-8): soft targets over [own view, K other samples].

    key_similarity: B x K cosines of each image's key to the K samples; same_category: B x K, whether
    a sample shares the image's coarse label (and is not the image itself). The samples' scores
    exp(s / temperature) are masked to zero outside the category, rescaled so the largest is 1, and
    the image's own view joins them with target 1; normalised to sum to one, then blended with the
    self-supervised one-hot target: weight * soft + (1 - weight) * own view. Returns B x (1 + K).
    """
    logits = (key_similarity.float() / temperature).masked_fill(~same_category, float("-inf"))
    top = logits.max(1, keepdim=True).values
    # exp(l - max): the rescaling to a largest entry of 1; a row with no same-category sample keeps only its own view.
    soft = torch.where(same_category, torch.exp(logits - torch.where(torch.isfinite(top), top, 0.0)), 0.0)
    targets = torch.cat([torch.ones_like(top), soft], 1)
    targets = targets / targets.sum(1, keepdim=True)
    own = torch.zeros_like(targets)
    own[:, 0] = 1.0
    return weight * targets + (1 - weight) * own


def soft_target_instance_loss(h: torch.Tensor, instance_weights: torch.Tensor, rows: torch.Tensor,
                              categories: torch.Tensor, row_categories: torch.Tensor, scale: float, *,
                              soft_temperature: float, soft_weight: float, negatives: int = 0,
                              category_start: torch.Tensor | None = None) -> torch.Tensor:
    """MaskCon's loss on the momentum memory W^I: cross-entropy of softmax(scale * h . [w_own, w_j])
    against `maskcon_soft_targets`, where the key is the image's own memory row w_own (the momentum
    average of its past views, as MaskCon's key encoder is a momentum average of the query encoder).

    Candidates j: every row (Eq. 3's softmax; the mask zeroes other categories' targets), or with
    `category_start` only the image's category's rows (Eq. 4's); `negatives` > 0 draws that many
    candidates uniformly instead (shared by the batch, or by the category's images).
    """
    if category_start is None:
        groups = [(torch.ones_like(rows, dtype=torch.bool), 0, instance_weights.shape[0])]
    else:
        groups = [(categories == k, int(category_start[k]), int(category_start[k + 1]))
                  for k in torch.unique(categories).tolist()]
    total = h.new_zeros((), dtype=torch.float32)
    for members, start, end in groups:
        hk, own, own_category = h[members], rows[members], categories[members]
        if negatives and end - start > negatives:
            candidates = torch.randint(start, end, (negatives,), device=h.device)
        else:
            candidates = torch.arange(start, end, device=h.device)
        w_candidates = instance_weights[candidates]
        w_own = instance_weights[own]
        logits = scale * torch.cat([(hk * w_own.to(hk.dtype)).sum(1, keepdim=True), hk @ w_candidates.t().to(hk.dtype)], 1)
        not_self = candidates[None, :] != own[:, None]
        # the image's own row among the candidates is neither a negative nor a soft positive
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(~not_self, float("-inf"))], 1).float()
        with torch.no_grad():
            same = (row_categories[candidates][None, :] == own_category[:, None]) & not_self
            targets = maskcon_soft_targets(w_own.float() @ w_candidates.float().t(), same, soft_temperature, soft_weight)
        log_p = F.log_softmax(logits, 1).masked_fill(targets == 0, 0.0)  # -inf * 0 would be NaN
        total = total + -(targets * log_p).sum()
    return total / h.shape[0]


def grafit_knn_loss(h: torch.Tensor, memory: torch.Tensor, memory_categories: torch.Tensor, categories: torch.Tensor,
                    scale: float, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Grafit (Touvron et al., ICCV 2021, Eq. 3): the coarse label by a soft nearest-neighbour vote over a
    memory of features: -log( sum_{j in y} exp(scale h.m_j) / sum_j exp(scale h.m_j) ).
    `exclude` (B) is each image's own row in the memory, which casts no vote for it."""
    logits = scale * h.float() @ memory.float().t()
    if exclude is not None:
        logits = logits.scatter(1, exclude[:, None], float("-inf"))
    same = memory_categories[None, :] == categories[:, None]
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~same, float("-inf")), 1)).mean()


def proxy_loss(h: torch.Tensor, proxies: torch.Tensor, assignment: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. 7: classify each image into its instance-proxy cluster, softmax over all P proxies."""
    return F.cross_entropy(scale * h @ proxies.t(), assignment)


def cluster_instance_weights(instance_weights: torch.Tensor, category_start: torch.Tensor, num_proxies: int,
                             *, normalise: bool, seed: int = 0, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 and 8: k-means of W^I within each category into P proxies in total.

    Each category gets a share of P proportional to its size (at least one). Returns
    (proxies P x d: the cluster means of W^I, assignment: the proxy of every row of W^I).
    """
    weights = instance_weights.detach().float().cpu().numpy()
    n = weights.shape[0]
    starts = category_start.tolist()
    proxies, assignment, offset = [], np.empty(n, dtype=np.int64), 0
    for k in range(len(starts) - 1):
        block = np.ascontiguousarray(weights[starts[k]:starts[k + 1]])
        if len(block) == 0:
            continue
        p = max(1, min(len(block), round(num_proxies * len(block) / n)))
        if p == len(block):
            labels = np.arange(p)
        else:
            kmeans = faiss.Kmeans(block.shape[1], p, niter=iterations, seed=seed + k, spherical=normalise,
                                  min_points_per_centroid=1, max_points_per_centroid=1_000_000)
            kmeans.train(block)
            labels = kmeans.index.search(block, 1)[1][:, 0]
        # The proxy is the exact mean of its members (Eq. 5), not faiss's last centroid.
        sums = np.zeros((p, block.shape[1]), np.float64)
        np.add.at(sums, labels, block)
        counts = np.bincount(labels, minlength=p)
        means = sums / np.maximum(counts, 1)[:, None]
        empty = counts == 0
        means[empty] = block[np.random.default_rng(seed + k).choice(len(block), int(empty.sum()))]
        proxies.append(means.astype(np.float32))
        assignment[starts[k]:starts[k + 1]] = labels + offset
        offset += p
    proxies = torch.from_numpy(np.concatenate(proxies))
    if normalise:
        proxies = F.normalize(proxies, dim=1)
    return proxies, torch.from_numpy(assignment)
