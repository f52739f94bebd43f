"""The CoIns / CoInsP model: backbone f, optional MLP head g, and the heads of every objective.

One class, in the spirit of MoCo's builder: `forward` returns the weighted total loss and
its named parts. Which parts are active is the config (see training/presets.py):
Cos = coarse only, Ins = instance only, CoIns = both (Eq. 3), CoIns_imp = instance softmax
within the category (Eq. 4), `*` = cosine softmax, `**` = plus MLP head, CoInsP = plus
the instance proxy loss (Eq. 9), Opt = fine labels only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training import objectives
from training.instance_memory import InstanceMemory
from training.sharded_instances import sharded_instance_loss


@dataclass
class ObjectiveConfig:
    coarse_weight: float = 1.0  # Eq. 2 term
    instance_weight: float = 0.0  # lambda_I
    instance_within_category: bool = False  # Eq. 4 instead of Eq. 3
    instance_weights: str = "memory"  # "memory": W^I is a momentum memory of features; "parametric": learned
    memory_momentum: float = 0.5
    proxy_weight: float = 0.0  # lambda_P; active from epoch `proxy_start`
    num_proxies: int = 12000
    fine_weight: float = 0.0  # Opt reference only
    cosine: bool = False  # `*`: normalised features and weights, logits scaled by 1/temperature
    temperature: float = 0.1
    mlp_head: bool = False  # `**`
    head_dim: int = 128
    # 0: the instance softmax over every image (Eq. 3) or of the category (Eq. 4); N > 0: over the
    # positive and N sampled rows (of the category under Eq. 4), so its cost no longer grows with the catalog.
    instance_negatives: int = 0
    mlp_hidden: int = 0  # width of the `**` MLP head's hidden layer; 0 = the feature dimension
    # MaskCon's soft targets for the instance loss: 0 = the one-hot own row (Eq. 1/3/4); w > 0 blends in the
    # coarse-masked similarity of the image's memory row to the other rows (objectives.maskcon_soft_targets).
    soft_target_weight: float = 0.0
    soft_temperature: float = 0.1  # MaskCon's T2, of the similarities that make the soft targets
    grafit_weight: float = 0.0  # Grafit's kNN coarse loss over the memory W^I (objectives.grafit_knn_loss)


class Classifier(nn.Module):
    """Linear classifier, or with `scale` set the cosine softmax of the `*` variants:
    scale * cos(h, w_c), since unscaled cosines in [-1, 1] cannot make a confident softmax."""

    def __init__(self, dim: int, classes: int, scale: float | None = None):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.bias = None if scale else nn.Parameter(torch.zeros(classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.scale:
            return self.scale * h @ F.normalize(self.weight, dim=1).t()  # h is normalised by the model
        return F.linear(h, self.weight, self.bias)


class CoInsModel(nn.Module):
    def __init__(self, backbone: nn.Module, cfg: ObjectiveConfig, image_categories: torch.Tensor,
                 num_categories: int, num_fine: int = 0, *, rank: int = 0, world_size: int = 1):
        """With world_size > 1 (torchrun), this rank keeps only its shard of W^I (training/instance_memory.py)."""
        super().__init__()
        self.backbone, self.cfg = backbone, cfg
        d = backbone.feature_dim
        if cfg.mlp_head:
            hidden = cfg.mlp_hidden or d
            self.head = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, cfg.head_dim))
            d = cfg.head_dim
        else:
            self.head = nn.Identity()
        cosine_scale = 1.0 / cfg.temperature if cfg.cosine else None
        self.coarse = Classifier(d, num_categories, cosine_scale)
        self.fine = Classifier(d, num_fine, cosine_scale) if cfg.fine_weight > 0 else None
        self.uses_instances = cfg.instance_weight > 0 or cfg.proxy_weight > 0 or cfg.grafit_weight > 0
        if world_size > 1 and cfg.instance_negatives:
            raise ValueError("sampled instance negatives (instance_negatives) run in one process only; "
                             "under torchrun the sharded head scores every instance: set it to 0")
        if world_size > 1 and (cfg.soft_target_weight or cfg.grafit_weight):
            raise ValueError("MaskCon's soft targets and Grafit's kNN loss run in one process only")
        self.memory = InstanceMemory(image_categories, num_categories, d, used=self.uses_instances,
                                     parametric=cfg.instance_weights == "parametric", momentum=cfg.memory_momentum,
                                     cosine=cfg.cosine, rank=rank, world_size=world_size)

    @property
    def proxies_active(self) -> bool:
        return self.cfg.proxy_weight > 0 and len(self.memory.proxies) > 0

    @property
    def normalised(self) -> bool:
        """Heads see unit vectors with 1/temperature logits: the `*` variants, and always with a memory W^I."""
        return self.cfg.cosine or self.cfg.instance_weights == "memory"

    def head_input(self, features: torch.Tensor) -> torch.Tensor:
        """h = g(f(x)) from backbone features f(x)."""
        h = self.head(features).float()
        return F.normalize(h, dim=1) if self.normalised else h

    def forward(self, x, images, categories, fine_labels=None) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 9: L = w_C L_coarse (Eq. 2) + lambda_I L_instance (Eq. 1/3/4) + lambda_P L_proxy (Eq. 7),
        plus Grafit's kNN loss or Opt's fine loss where the preset asks; then the memory W^I moves towards h."""
        cfg, memory = self.cfg, self.memory
        h = self.head_input(self.backbone(x))
        rows = memory.rows(images)
        batch = memory.gather(h, rows, categories)
        parts: dict[str, torch.Tensor] = {}
        if cfg.coarse_weight > 0:
            parts["coarse"] = cfg.coarse_weight * objectives.coarse_loss(self.coarse(h), categories)
        if cfg.instance_weight > 0:
            parts["instance"] = cfg.instance_weight * self.instance_loss(h, rows, categories, batch)
        if cfg.grafit_weight > 0:
            parts["grafit"] = cfg.grafit_weight * objectives.grafit_knn_loss(
                h, memory.matrix(), memory.category_of_row, categories, 1.0 / cfg.temperature, exclude=rows)
        if self.proxies_active:
            parts["proxy"] = cfg.proxy_weight * objectives.proxy_loss(h, memory.proxies, memory.proxy_of_row[rows],
                                                                      1.0 / cfg.temperature)
        if self.fine is not None:
            parts["fine"] = cfg.fine_weight * objectives.fine_loss(self.fine(h), fine_labels)
        memory.update(h.detach(), rows, batch)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def instance_loss(self, h, rows, categories, batch) -> torch.Tensor:
        """The instance softmax the preset names: over all rows (Eq. 1/3) or the category's (Eq. 4), sampled
        or exact, with one-hot or MaskCon's soft targets, in one process or sharded."""
        cfg, memory = self.cfg, self.memory
        scale = 1.0 / cfg.temperature if self.normalised else 1.0
        w = memory.matrix()
        within = memory.category_start if cfg.instance_within_category else None
        if batch is not None:
            return sharded_instance_loss(batch, w, memory.shard, scale, within_category=cfg.instance_within_category)
        if cfg.soft_target_weight > 0:
            return objectives.soft_target_instance_loss(h, w, rows, categories, memory.category_of_row, scale,
                                                        soft_temperature=cfg.soft_temperature,
                                                        soft_weight=cfg.soft_target_weight,
                                                        negatives=cfg.instance_negatives, category_start=within)
        if within is not None:
            return objectives.instance_loss_within_category(h, w, rows, categories, within, scale, cfg.instance_negatives)
        return objectives.instance_loss(h, w, rows, scale, cfg.instance_negatives)

    def coarse_head_state(self) -> dict:
        """The trained category classifier as embedder/category_head.py reads it: f(x) -> category logits."""
        head = self.coarse
        mlp = self.cfg.mlp_head
        return {"input": "mlp" if mlp else "feature",
                **({"mlp": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}} if mlp else {}),
                "normalise": self.normalised, "weight": head.weight.detach().cpu().clone(),
                "bias": head.bias.detach().cpu().clone() if head.bias is not None else None,
                "cosine": bool(head.scale), "scale": float(head.scale or 1.0)}

    def recluster(self, seed: int) -> None:
        """Algorithm 1's outer step: proxies W^P from the current W^I (Eq. 8)."""
        self.memory.recluster(self.cfg.num_proxies, normalise=self.normalised, seed=seed)
