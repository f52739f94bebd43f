"""The instance head W^I sharded by instance across ranks, for DistributedDataParallel training.

A model-parallel head, like the partial classifier of large-scale face recognition: W^I (one row
per catalog image, plus its optimiser state when parametric) is never replicated. Rank r owns the
r-th of `world_size` contiguous pieces of every category's rows, so Eq. 4 still multiplies an image
only by its own category's rows (O(d * n_k / world_size) per rank) and every rank holds about
n / world_size rows.

Eq. 1/3/4 with the shard: every rank scores the features of the whole global batch (all-gathered,
with gradients flowing back to the rank that computed them) against its own rows; the softmax
normaliser is combined across ranks with an all-reduce of the row-wise max and of the sum of
exponentials; the target's logit comes from the rank that owns the target row.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

# torch.distributed.nn.functional is deprecated for _functional_collectives, whose all_reduce has no backward;
# the softmax normaliser needs one, so keep these and quiet their warning.
warnings.filterwarnings("ignore", r"torch\.distributed\.nn\.functional\.\w+ is deprecated", FutureWarning)


@dataclass(frozen=True)
class InstanceShard:
    """Which rows of W^I one rank owns: rows bounds[k, rank] : bounds[k, rank + 1] of every category k."""

    rank: int
    world_size: int
    bounds: torch.Tensor  # C x (world_size + 1), global row numbers

    @classmethod
    def split(cls, category_start: torch.Tensor, rank: int, world_size: int) -> InstanceShard:
        """Cut each category's contiguous rows category_start[k] : category_start[k + 1] into world_size pieces."""
        start = category_start.cpu()
        counts = start[1:] - start[:-1]
        bounds = start[:-1, None] + counts[:, None] * torch.arange(world_size + 1) // world_size
        return cls(rank, world_size, bounds)

    def rows_of(self, rank: int) -> torch.Tensor:
        """The global rows rank `rank` owns, in the order of its shard."""
        pieces = self.bounds[:, rank:rank + 2].tolist()
        return torch.cat([torch.arange(lo, hi) for lo, hi in pieces]) if pieces else torch.zeros(0, dtype=torch.long)

    @property
    def rows(self) -> torch.Tensor:
        return self.rows_of(self.rank)

    @property
    def local_start(self) -> torch.Tensor:
        """C + 1 offsets: category k's piece is rows local_start[k] : local_start[k + 1] of this shard."""
        sizes = self.bounds[:, self.rank + 1] - self.bounds[:, self.rank]
        return torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])

    def locate(self, rows: torch.Tensor, categories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(owned: whether this rank holds each global row, local: its row in the shard where owned)."""
        bounds = self.bounds.to(rows.device)
        lo, hi = bounds[categories, self.rank], bounds[categories, self.rank + 1]
        owned = (rows >= lo) & (rows < hi)
        return owned, self.local_start.to(rows.device)[categories] + rows - lo


@dataclass
class GatheredBatch:
    """The global batch as every rank sees it: rank r's images are entries r*b : (r+1)*b."""

    h: torch.Tensor  # B x d head inputs; backward sends each rank the gradient of its own rows
    rows: torch.Tensor  # B global rows of W^I
    categories: torch.Tensor  # B
    owned: torch.Tensor  # B bool: the row lives in this rank's shard
    local: torch.Tensor  # B: the row's index in this shard (meaningful where owned)
    mine: slice  # this rank's own images


def gather_batch(h: torch.Tensor, rows: torch.Tensor, categories: torch.Tensor, shard: InstanceShard) -> GatheredBatch:
    all_h = torch.cat(dist_nn.all_gather(h))
    all_rows, all_categories = (torch.cat(_all_gather(t)) for t in (rows, categories))
    owned, local = shard.locate(all_rows, all_categories)
    b = len(h)
    return GatheredBatch(all_h, all_rows, all_categories, owned, local, slice(shard.rank * b, (shard.rank + 1) * b))


def _all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def sharded_instance_loss(batch: GatheredBatch, shard_weights: torch.Tensor, shard: InstanceShard, scale: float,
                          *, within_category: bool) -> torch.Tensor:
    """Eq. 1/3 (softmax over all n rows) or Eq. 4 (over the image's category), with W^I sharded.

    Returns the mean loss of this rank's own images, like every other term under DDP, which
    averages gradients over ranks. The shard's gradient is summed over ranks by the all-reduce's
    backward instead, so it is divided by world_size to be the gradient of the same global mean.
    """
    if shard_weights.requires_grad:
        shard_weights = shard_weights.view_as(shard_weights)  # a fresh node, so the hook lives for this step only
        shard_weights.register_hook(lambda grad: grad / shard.world_size)
    if within_category:
        start = shard.local_start.tolist()
        groups = [(torch.nonzero(batch.categories == k)[:, 0], start[k], start[k + 1])
                  for k in torch.unique(batch.categories).tolist()]
    else:
        groups = [(torch.arange(len(batch.rows), device=batch.rows.device), 0, len(shard_weights))]
    # Logits of each group of images against its rows here; a rank without rows of a category adds nothing.
    blocks = [(images, first, (scale * batch.h[images] @ shard_weights[first:end].t()).float())
              for images, first, end in groups if end > first]

    row_max = batch.h.new_full((len(batch.rows),), float("-inf"), dtype=torch.float32)
    for images, _, logits in blocks:
        row_max[images] = logits.detach().max(1).values
    dist.all_reduce(row_max, op=dist.ReduceOp.MAX)  # the shift cancels in the loss, so no gradient through it

    sum_exp = row_max.new_zeros(len(batch.rows))
    target = row_max.new_zeros(len(batch.rows))
    for images, first, logits in blocks:
        sum_exp = sum_exp.index_put((images,), torch.exp(logits - row_max[images, None]).sum(1))
        # The target's logit is read from the same logits as the normaliser, as in the one-process cross-entropy.
        owned = batch.owned[images]
        column = (batch.local[images] - first).clamp(0, logits.shape[1] - 1)
        target = target.index_put((images,), torch.where(owned, logits.gather(1, column[:, None])[:, 0], 0.0))
    sum_exp, target = dist_nn.all_reduce(sum_exp), dist_nn.all_reduce(target)
    loss = torch.log(sum_exp) + row_max - target
    return loss[batch.mine].mean()


def gather_rows_to_first_rank(shard_weights: torch.Tensor, shard: InstanceShard, num_rows: int) -> torch.Tensor | None:
    """The whole W^I in global row order on rank 0 (None on the others), for the k-means step."""
    sizes = [len(shard.rows_of(r)) for r in range(shard.world_size)]
    padded = shard_weights.new_zeros(max(sizes), shard_weights.shape[1])  # gather needs one shape on every rank
    padded[:len(shard_weights)] = shard_weights
    received = [torch.empty_like(padded) for _ in sizes] if shard.rank == 0 else None
    dist.gather(padded, received, dst=0)
    if shard.rank != 0:
        return None
    full = shard_weights.new_empty(num_rows, shard_weights.shape[1])
    for r, part in enumerate(received):
        full[shard.rows_of(r).to(full.device)] = part[:sizes[r]]
    return full
