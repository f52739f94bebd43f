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
from training.sharded_instances import (
    InstanceShard,
    gather_batch,
    gather_rows_to_first_rank,
    sharded_instance_loss,
)


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
    # How W^I starts: "random", or "pixels" = a fixed random projection of each image's pixels
    # (cosine-preserving), so the instance task and the first proxies carry signal from step one
    # instead of waiting an epoch for every row to be visited.
    instance_init: str = "random"
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
        """With world_size > 1 (torchrun), this rank keeps only its shard of W^I (training/sharded_instances.py)."""
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

        # Rows of W^I are grouped by category so Eq. 4 can take one contiguous slice per category.
        order = torch.argsort(image_categories, stable=True)
        row_of_image = torch.empty_like(order)
        row_of_image[order] = torch.arange(len(order))
        counts = torch.bincount(image_categories, minlength=num_categories)
        self.register_buffer("row_of_image", row_of_image, persistent=True)
        self.register_buffer("category_start", torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))
        self.register_buffer("category_of_row", torch.repeat_interleave(torch.arange(num_categories), counts),
                             persistent=False)
        self.uses_instances = cfg.instance_weight > 0 or cfg.proxy_weight > 0 or cfg.grafit_weight > 0
        self.num_instances = len(image_categories) if self.uses_instances else 0
        self.shard = InstanceShard.split(self.category_start, rank, world_size) if world_size > 1 else None
        if self.shard is not None and cfg.instance_negatives:
            raise ValueError("sampled instance negatives (instance_negatives) run in one process only; "
                             "under torchrun the sharded head scores every instance: set it to 0")
        if self.shard is not None and (cfg.soft_target_weight or cfg.grafit_weight):
            raise ValueError("MaskCon's soft targets and Grafit's kNN loss run in one process only")
        if self.shard is None:
            initial = F.normalize(torch.randn(self.num_instances, d), dim=1)
        else:  # each rank draws only its own rows (a one-process run's random rows are not reproduced)
            generator = torch.Generator().manual_seed(torch.initial_seed() + 1_000_003 * rank)
            initial = F.normalize(torch.randn(len(self.shard.rows) if self.uses_instances else 0, d, generator=generator), dim=1)
        if cfg.instance_weights == "parametric":
            self.instance_weights = nn.Parameter(initial * (1.0 if cfg.cosine else 0.01))
        else:
            self.register_buffer("instance_weights", initial)
        self.register_buffer("proxies", torch.zeros(0, d))
        self.register_buffer("proxy_of_row", torch.zeros(0, dtype=torch.long))

    @property
    def proxies_active(self) -> bool:
        return self.cfg.proxy_weight > 0 and len(self.proxies) > 0

    @property
    def normalised(self) -> bool:
        """Heads see unit vectors with 1/temperature logits: the `*` variants, and always with a memory W^I."""
        return self.cfg.cosine or self.cfg.instance_weights == "memory"

    def head_input(self, features: torch.Tensor) -> torch.Tensor:
        """h = g(f(x)) from backbone features f(x)."""
        h = self.head(features).float()
        return F.normalize(h, dim=1) if self.normalised else h

    def _instance_matrix(self) -> torch.Tensor:
        w = self.instance_weights
        if self.cfg.cosine:
            return F.normalize(w, dim=1)
        # A memory W^I is updated in place after the loss has read it; without autocast's bf16 copy
        # the backward would see the new rows, so fp32 training reads a copy.
        if isinstance(w, nn.Parameter) or torch.is_autocast_enabled(w.device.type):
            return w
        return w.clone()

    def forward(self, x, images, categories, fine_labels=None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        h = self.head_input(self.backbone(x))
        parts: dict[str, torch.Tensor] = {}
        if cfg.coarse_weight > 0:
            parts["coarse"] = cfg.coarse_weight * objectives.coarse_loss(self.coarse(h), categories)
        rows = self.row_of_image[images]
        batch = gather_batch(h, rows, categories, self.shard) if self.shard is not None and self.uses_instances else None
        if cfg.instance_weight > 0:
            scale = 1.0 / cfg.temperature if self.normalised else 1.0
            w = self._instance_matrix()
            if cfg.soft_target_weight > 0 and batch is None:
                loss = objectives.soft_target_instance_loss(
                    h, w, rows, categories, self.category_of_row, scale, soft_temperature=cfg.soft_temperature,
                    soft_weight=cfg.soft_target_weight, negatives=cfg.instance_negatives,
                    category_start=self.category_start if cfg.instance_within_category else None)
            elif batch is not None:
                loss = sharded_instance_loss(batch, w, self.shard, scale, within_category=cfg.instance_within_category)
            elif cfg.instance_within_category:
                loss = objectives.instance_loss_within_category(h, w, rows, categories, self.category_start, scale,
                                                                cfg.instance_negatives)
            else:
                loss = objectives.instance_loss(h, w, rows, scale, cfg.instance_negatives)
            parts["instance"] = cfg.instance_weight * loss
        if cfg.grafit_weight > 0:
            parts["grafit"] = cfg.grafit_weight * objectives.grafit_knn_loss(
                h, self._instance_matrix(), self.category_of_row, categories, 1.0 / cfg.temperature, exclude=rows)
        if self.proxies_active:
            scale = 1.0 / cfg.temperature
            parts["proxy"] = cfg.proxy_weight * objectives.proxy_loss(h, self.proxies, self.proxy_of_row[rows], scale)
        if self.fine is not None:
            parts["fine"] = cfg.fine_weight * objectives.fine_loss(self.fine(h), fine_labels)
        if self.uses_instances and cfg.instance_weights == "memory":
            if batch is None:
                self._update_memory(rows, h.detach())
            else:  # the rank that owns a row updates it
                self._update_memory(batch.local[batch.owned], batch.h.detach()[batch.owned])
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def initialise_instance_weights(self, images: torch.Tensor, seed: int) -> None:
        """W^I from a random projection of the images' (standardised) pixels, row per image."""
        x = images.flatten(1).float()
        mean = x.mean(0)
        projection = torch.randn(x.shape[1], self.instance_weights.shape[1], generator=torch.Generator().manual_seed(seed))
        if self.shard is None:
            self.instance_weights.data[self.row_of_image] = F.normalize((x - mean) @ projection, dim=1).to(self.instance_weights.device)
        else:
            image_of_row = torch.argsort(self.row_of_image.cpu())
            w = F.normalize((x[image_of_row[self.shard.rows]] - mean) @ projection, dim=1)
            self.instance_weights.data.copy_(w.to(self.instance_weights.device))

    @torch.no_grad()
    def _update_memory(self, rows: torch.Tensor, h: torch.Tensor) -> None:
        """Non-parametric W^I: w_i <- normalise(m * w_i + (1 - m) * h_i) after each visit."""
        m = self.cfg.memory_momentum
        self.instance_weights[rows] = F.normalize(m * self.instance_weights[rows] + (1 - m) * h, dim=1)

    def load_state_dict(self, state: dict, strict: bool = True):
        # The proxies' count is set by re-clustering, so take the stored shape first.
        self.proxies = torch.empty_like(state["proxies"])
        self.proxy_of_row = torch.empty_like(state["proxy_of_row"])
        return super().load_state_dict(state, strict)

    @torch.no_grad()
    def recluster(self, seed: int) -> None:
        """Algorithm 1: re-cluster W^I into proxies W^P (Eq. 8) with the current weights.

        Sharded: rank 0 gathers all of W^I, runs the same k-means and broadcasts the proxies and
        every row's assignment (docs/training-distributed.md says why)."""
        w = self._instance_matrix().detach()
        if self.shard is None:
            proxies, assignment = objectives.cluster_instance_weights(w, self.category_start, self.cfg.num_proxies,
                                                                      normalise=self.normalised, seed=seed)
            self.proxies = proxies.to(w.device)
            self.proxy_of_row = assignment.to(w.device)
            return
        full = gather_rows_to_first_rank(w, self.shard, self.num_instances)
        count = torch.zeros(1, dtype=torch.long, device=w.device)
        if full is not None:
            proxies, assignment = objectives.cluster_instance_weights(full, self.category_start, self.cfg.num_proxies,
                                                                      normalise=self.normalised, seed=seed)
            count[0] = len(proxies)
        else:
            proxies = assignment = None
        del full
        torch.distributed.broadcast(count, src=0)
        if proxies is None:
            proxies = torch.empty(int(count), w.shape[1])
            assignment = torch.empty(self.num_instances, dtype=torch.long)
        self.proxies, self.proxy_of_row = proxies.to(w.device), assignment.to(w.device)
        torch.distributed.broadcast(self.proxies, src=0)
        torch.distributed.broadcast(self.proxy_of_row, src=0)
