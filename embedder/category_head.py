"""The category head a model checkpoint may carry, under the key `coarse_head`: the trained coarse
(category) classifier, so a search can show the category the model sees in a photo.

    {"input": "feature" or "mlp",  # the classifier reads f(x), or the MLP head's g(f(x))
     "mlp": {Linear-BatchNorm-ReLU-Linear state_dict} (input "mlp" only),
     "normalise": bool,              # the classifier's input is scaled to unit length first
     "weight": C x d, "bias": C or None,
     "cosine": bool, "scale": float}  # cosine: scale * cos(h, w_c); else h . w_c + b_c

`features` are the backbone's outputs f(x) as they come out of it (before the embedder's
normalisation for search: the MLP's batch norm is not scale-free). Checkpoints without the key
(older ones, and models whose objective trains no category head) have no category prediction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp_from_state(state: dict) -> nn.Sequential:
    """The `**` variants' MLP head g, rebuilt from its state_dict (shapes read from the weights)."""
    hidden, d = state["0.weight"].shape
    out = state["3.weight"].shape[0]
    mlp = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))
    mlp.load_state_dict(state)
    return mlp.eval()


@torch.inference_mode()
def category_logits(head: dict, features: torch.Tensor, mlp: nn.Module | None = None) -> torch.Tensor:
    """N x C category logits from N x D backbone features f(x); pass `mlp` to reuse one built by mlp_from_state."""
    h = features.float()
    if head["input"] == "mlp":
        h = (mlp if mlp is not None else mlp_from_state(head["mlp"]))(h)
    elif head["input"] != "feature":
        raise ValueError(f"coarse_head input must be 'feature' or 'mlp', not {head['input']!r}")
    if head["normalise"]:
        h = F.normalize(h, dim=1)
    weight = head["weight"].float()
    if head["cosine"]:
        return head["scale"] * h @ F.normalize(weight, dim=1).t()
    return F.linear(h, weight, head["bias"].float() if head["bias"] is not None else None)
