"""W^I, the instance weights: one row per training image, and the proxies W^P clustered from it.

Rows are grouped by category (category k owns rows category_start[k] : category_start[k + 1]),
so Eq. 4 takes one contiguous slice per category and the k-means of Eq. 8 runs per category.
W^I is either a momentum memory of the images' head features (each visit keeps `momentum` of the
old row) or learned parameters. Under torchrun each rank keeps only its shard of the rows
(training/sharded_instances.py says how the softmax is computed across ranks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training import objectives
from training.sharded_instances import GatheredBatch, InstanceShard, gather_batch, gather_rows_to_first_rank

# Names of W^I's tensors in a model's state_dict (the model keeps this module as `memory`).
WEIGHTS_KEY = "memory.weights"
ROWS_KEY = "memory.row_of_image"
SHARDED_STATE = ["memory.weights", "memory.proxies", "memory.proxy_of_row"]
# Before W^I had its own module, the model held these tensors under their bare names.
_EARLIER_NAMES = {"instance_weights": WEIGHTS_KEY, "row_of_image": ROWS_KEY, "category_start": "memory.category_start",
                  "proxies": "memory.proxies", "proxy_of_row": "memory.proxy_of_row"}


def upgrade_model_state(state: dict) -> dict:
    """A model state_dict from an earlier last.pt, with W^I's tensors under today's names (in place)."""
    for old, new in _EARLIER_NAMES.items():
        if old in state and new not in state:
            state[new] = state.pop(old)
    return state


class InstanceMemory(nn.Module):
    def __init__(self, image_categories: torch.Tensor, num_categories: int, dim: int, *, used: bool,
                 parametric: bool = False, momentum: float = 0.5, cosine: bool = False, rank: int = 0, world_size: int = 1):
        """used: whether any objective reads W^I (otherwise it holds no rows). With world_size > 1 this rank keeps its shard."""
        super().__init__()
        self.momentum, self.cosine, self.parametric = momentum, cosine, parametric
        order = torch.argsort(image_categories, stable=True)
        row_of_image = torch.empty_like(order)
        row_of_image[order] = torch.arange(len(order))
        counts = torch.bincount(image_categories, minlength=num_categories)
        self.register_buffer("row_of_image", row_of_image)
        self.register_buffer("category_start", torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))
        self.register_buffer("category_of_row", torch.repeat_interleave(torch.arange(num_categories), counts),
                             persistent=False)
        self.num_rows = len(image_categories) if used else 0
        self.shard = InstanceShard.split(self.category_start, rank, world_size) if world_size > 1 else None
        if self.shard is None:
            initial = F.normalize(torch.randn(self.num_rows, dim), dim=1)
        else:  # each rank draws only its own rows (a one-process run's random rows are not reproduced)
            generator = torch.Generator().manual_seed(torch.initial_seed() + 1_000_003 * rank)
            initial = F.normalize(torch.randn(len(self.shard.rows) if used else 0, dim, generator=generator), dim=1)
        if parametric:
            self.weights = nn.Parameter(initial * (1.0 if cosine else 0.01))
        else:
            self.register_buffer("weights", initial)
        self.register_buffer("proxies", torch.zeros(0, dim))
        self.register_buffer("proxy_of_row", torch.zeros(0, dtype=torch.long))

    def rows(self, images: torch.Tensor) -> torch.Tensor:
        return self.row_of_image[images]

    def gather(self, h: torch.Tensor, rows: torch.Tensor, categories: torch.Tensor) -> GatheredBatch | None:
        """Sharded: the global batch every rank scores against its rows; one process: None."""
        return gather_batch(h, rows, categories, self.shard) if self.shard is not None and self.num_rows else None

    def matrix(self) -> torch.Tensor:
        """W^I as the losses read it."""
        w = self.weights
        if self.cosine:
            return F.normalize(w, dim=1)
        # A memory W^I is updated in place after the loss has read it; without autocast's bf16 copy
        # the backward would see the new rows, so fp32 training reads a copy.
        if self.parametric or torch.is_autocast_enabled(w.device.type):
            return w
        return w.clone()

    @torch.no_grad()
    def update(self, h: torch.Tensor, rows: torch.Tensor, batch: GatheredBatch | None = None) -> None:
        """Memory W^I: w_i <- normalise(m * w_i + (1 - m) * h_i) after each visit; sharded, the rank that owns a row updates it."""
        if self.parametric or not self.num_rows:
            return
        if batch is not None:
            rows, h = batch.local[batch.owned], batch.h.detach()[batch.owned]
        m = self.momentum
        self.weights[rows] = F.normalize(m * self.weights[rows] + (1 - m) * h, dim=1)

    @torch.no_grad()
    def initialise_from_pixels(self, images: torch.Tensor, seed: int) -> None:
        """W^I from a fixed random projection of the images' (standardised) pixels, row per image:
        cosine-preserving, so the instance task carries signal from the first step."""
        # A chunk of images at a time: 60,000 images at 112 px x 3 would take 9 GB as one float matrix.
        x = images.flatten(1)
        chunks = range(0, len(x), 4096)
        mean = (sum(x[i:i + 4096].double().sum(0) for i in chunks) / len(x)).float()
        projection = torch.randn(x.shape[1], self.weights.shape[1], generator=torch.Generator().manual_seed(seed))

        def project(part: torch.Tensor) -> torch.Tensor:
            return torch.cat([F.normalize((part[i:i + 4096].float() - mean) @ projection, dim=1)
                              for i in range(0, len(part), 4096)])
        if self.shard is None:
            self.weights.data[self.row_of_image] = project(x).to(self.weights.device)
        else:
            image_of_row = torch.argsort(self.row_of_image.cpu())
            self.weights.data.copy_(project(x[image_of_row[self.shard.rows]]).to(self.weights.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The proxies' count is set by re-clustering, so take the stored shape first.
        for name in ("proxies", "proxy_of_row"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def recluster(self, num_proxies: int, *, normalise: bool, seed: int) -> None:
        """Algorithm 1: re-cluster W^I into proxies W^P (Eq. 8) with the current rows.

        Sharded: rank 0 gathers all of W^I, runs the same k-means and broadcasts the proxies and
        every row's assignment (docs/training-distributed.md says why)."""
        w = self.matrix().detach()
        if self.shard is None:
            proxies, assignment = objectives.cluster_instance_weights(w, self.category_start, num_proxies,
                                                                      normalise=normalise, seed=seed)
            self.proxies, self.proxy_of_row = proxies.to(w.device), assignment.to(w.device)
            return
        full = gather_rows_to_first_rank(w, self.shard, self.num_rows)
        count = torch.zeros(1, dtype=torch.long, device=w.device)
        if full is not None:
            proxies, assignment = objectives.cluster_instance_weights(full, self.category_start, num_proxies,
                                                                      normalise=normalise, seed=seed)
            count[0] = len(proxies)
        else:
            proxies = assignment = None
        del full
        torch.distributed.broadcast(count, src=0)
        if proxies is None:
            proxies = torch.empty(int(count), w.shape[1])
            assignment = torch.empty(self.num_rows, dtype=torch.long)
        self.proxies, self.proxy_of_row = proxies.to(w.device), assignment.to(w.device)
        torch.distributed.broadcast(self.proxies, src=0)
        torch.distributed.broadcast(self.proxy_of_row, src=0)
