"""W^I in training checkpoints: inside last.pt for one process, one file per rank beside it when sharded.

A sharded run writes OUT/instance-shards/epoch-E/rank-R-of-W.pt (each rank its rows of W^I and of
their optimiser state, atomically), then rank 0 commits last.pt, which names that folder; older
folders are removed only after the commit, so a crash at any moment leaves a last.pt whose shards
all exist. Resuming takes each rank's rows from whichever layout was saved (one process or any
number of ranks). model.pt never holds W^I: the embedder needs only the backbone.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from embedder.checkpoint import load_checkpoint
from training.instance_memory import ROWS_KEY, WEIGHTS_KEY, upgrade_model_state
from embedder.files import atomic_path

SHARDS = "instance-shards"


def instance_parameter_index(optimizer: torch.optim.Optimizer, weights: torch.Tensor) -> int | None:
    """W^I's number in the optimiser's state_dict, or None when it is a memory, not a parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return next((i for i, p in enumerate(params) if p is weights), None)


def split_off_instances(training_state: dict, index: int | None) -> dict:
    """Move W^I and its optimiser state out of a training state (in place); returns them."""
    optimizer_state = training_state["optimizer"]["state"].pop(index, {}) if index is not None else {}
    return {"instance_weights": training_state["model"].pop(WEIGHTS_KEY), "optimizer": optimizer_state}


def save_shard(out: Path, epoch: int, rank: int, world_size: int, rows: torch.Tensor, instances: dict) -> str:
    """Write this rank's rows; returns the folder (relative to out) that last.pt must name."""
    folder = f"{SHARDS}/epoch-{epoch:04d}"
    payload = {"epoch": epoch, "rows": rows.cpu(), "instance_weights": instances["instance_weights"].cpu(),
               "optimizer": {k: v.cpu() if torch.is_tensor(v) else v for k, v in instances["optimizer"].items()}}
    with atomic_path(out / folder / f"rank-{rank}-of-{world_size}.pt") as tmp:
        torch.save(payload, tmp)
    return folder


def remove_other_shards(out: Path, keep: str) -> None:
    for folder in (out / SHARDS).glob("epoch-*"):
        if folder.name != Path(keep).name:
            shutil.rmtree(folder, ignore_errors=True)


def restore_rows(out: Path, training_state: dict, wanted_rows: torch.Tensor, index: int | None) -> None:
    """Put the wanted rows of W^I and of their optimiser state back into the training state (in place)."""
    shards = training_state.pop("instance_shards", None)
    if shards is None:  # written by one process: everything is in last.pt
        saved = split_off_instances(training_state, index)
        sources = [{"rows": torch.arange(len(saved["instance_weights"])), **saved}]
    else:
        files = sorted((out / shards["folder"]).glob(f"rank-*-of-{shards['world_size']}.pt"))
        if len(files) != shards["world_size"]:
            raise FileNotFoundError(f"{out / shards['folder']} should hold {shards['world_size']} shard files of W^I, "
                                    f"found {len(files)}")
        sources = (_load_shard(f) for f in files)  # one file in memory at a time
    num_rows = int(training_state["model"][ROWS_KEY].numel())
    position = torch.full((num_rows,), -1, dtype=torch.long)
    position[wanted_rows] = torch.arange(len(wanted_rows))
    weights, optimizer_state, found = None, {}, 0
    for source in sources:
        here = position[source["rows"]]
        keep = here >= 0
        if weights is None:
            weights = source["instance_weights"].new_empty(len(wanted_rows), source["instance_weights"].shape[1])
        weights[here[keep]] = source["instance_weights"][keep]
        for name, value in source["optimizer"].items():
            if torch.is_tensor(value) and value.dim() > 0:
                optimizer_state.setdefault(name, value.new_empty(len(wanted_rows), *value.shape[1:]))[here[keep]] = value[keep]
            else:
                optimizer_state[name] = value
        found += int(keep.sum())
    if found != len(wanted_rows):
        raise ValueError(f"the checkpoint holds {found} of this process's {len(wanted_rows)} rows of W^I")
    training_state["model"][WEIGHTS_KEY] = weights
    if index is not None and optimizer_state:
        training_state["optimizer"]["state"][index] = optimizer_state


def _load_shard(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path} is not a readable shard of W^I ({exc}); resume from an earlier run folder") from None


def read_instance_weights(run_dir: Path) -> torch.Tensor:
    """The whole W^I of a run's last.pt, assembled from its shard files when it was written sharded."""
    state = load_checkpoint(Path(run_dir) / "last.pt")["training_state"]
    upgrade_model_state(state["model"])
    every_row = torch.arange(state["model"][ROWS_KEY].numel())
    restore_rows(Path(run_dir), state, every_row, None)
    return state["model"][WEIGHTS_KEY]
