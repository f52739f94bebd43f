"""Running the training loop under torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

`torchrun --nproc-per-node N -m training ...` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
address; `Ranks.from_environment` reads them and joins the process group. Dense weights are
replicated and trained with DistributedDataParallel; W^I is sharded (training/sharded_instances.py).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# torch.distributed.nn.functional is deprecated for _functional_collectives, whose all_reduce has no backward;
# batch norm over the global batch needs one, so keep these and quiet their warning.
warnings.filterwarnings("ignore", r"torch\.distributed\.nn\.functional\.\w+ is deprecated", FutureWarning)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job; rank 0 of 1 when started without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    started_group: bool = False  # this process joined the group here, so it leaves it at the end

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> Ranks:
        """One process, or this process's place among torchrun's: cuda:LOCAL_RANK with NCCL, else CPU with gloo."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(device=torch.device(device))
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        on_gpu = torch.device(device).type == "cuda"
        if on_gpu:
            torch.cuda.set_device(local_rank)
        started = not dist.is_initialized()
        if started:
            # Rank 0 alone validates and runs the k-means while the others wait, which can outlast the
            # default timeout (10 minutes with NCCL) on a large catalog.
            dist.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(hours=2))
        return cls(rank, world_size, local_rank, torch.device("cuda", local_rank) if on_gpu else torch.device("cpu"), started)

    def batch_part(self, global_batch: torch.Tensor) -> torch.Tensor:
        """This rank's images of the global batch, strided as DistributedSampler deals them out."""
        return global_batch[self.rank::self.world_size]

    def sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def main_first(self, work):
        """work() on rank 0 first (it writes the shared caches and imports), then on the others (they read them)."""
        if self.main:
            result = work()
        self.barrier()
        if not self.main:
            result = work()
        return result

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.started_group:
            dist.destroy_process_group()


def wrap(model: nn.Module, ranks: Ranks, *, unused_parameters: bool, sharded_state: list[str]) -> nn.Module:
    """DDP over the dense weights, with batch norm over the whole global batch as one process computes it.

    `sharded_state` names the per-rank parameters and buffers (the W^I shard, the proxies set by
    the k-means step), which DDP must neither broadcast nor average.
    """
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if ranks.device.type == "cuda" else _cpu_sync_batchnorm(model)
    # DDP looks a top-level name up as "name" when it broadcasts and as ".name" in the gradient reducer.
    ignored = [*sharded_state, *(f".{name}" for name in sharded_state)]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    # Batch norm statistics are the same on every rank already, so buffers need no broadcast each step.
    return DistributedDataParallel(model, device_ids=[ranks.local_rank] if ranks.device.type == "cuda" else None,
                                   forward_sync_buffers=False, find_unused_parameters=unused_parameters)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU process groups: torch's own runs on accelerators only (DDP refuses it on CPU).

    The batch's sum and squared deviations are summed over ranks with autograd-aware all-reduce,
    so each rank normalises with the global batch's mean and (biased) variance, and the running
    statistics get the same update as in one process.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = x.numel() // x.shape[1] * dist.get_world_size()  # every rank has the same batch size
        mean = dist_nn.all_reduce(xf.sum(dims)) / count
        var = dist_nn.all_reduce((xf - mean.view(shape)).square().sum(dims)) / count
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - factor).add_(factor * mean)
            self.running_var.mul_(1 - factor).add_(factor * var * count / max(count - 1, 1))
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm layer replaced by a CPUSyncBatchNorm with the same state (before the optimiser is made)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        converted = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        return converted
    for name, child in module.named_children():
        module.add_module(name, _cpu_sync_batchnorm(child))
    return module
