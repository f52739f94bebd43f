"""The training loop: data -> model -> checkpoints, with validation Recall@k every epoch.

Reproducible: the model is seeded once, and each epoch's order, augmentation and k-means
are seeded from (seed, epoch), so --resume from the end of any epoch gives the same model
as an uninterrupted run.

Under torchrun (docs/training-distributed.md) every rank draws the same global batch and
trains on its stride of it with DistributedDataParallel; W^I is sharded by instance.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.checkpoint import load_checkpoint, save_checkpoint
from embedder.files import atomic_path
from embedder.precision import choose_precision
from embedder.preprocess import Preprocessing
from index.quality.evaluation import classification_accuracy, recall_at_k
from training import instance_checkpoint
from training.augment import augment
from training.data import TrainingSet, hold_out, load_training_set
from training.distributed import Ranks, wrap
from training.instance_memory import SHARDED_STATE, upgrade_model_state
from training.model import CoInsModel, ObjectiveConfig
from training.query_views import QueryViews


@dataclass
class TrainConfig:
    train_manifest: str
    out_dir: str
    val_manifest: str | None = None
    preset: str = "custom"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    backbone: str = "smallcnn"
    backbone_kwargs: dict = field(default_factory=lambda: {"in_channels": 1, "grid": 4})
    pretrained: str | None = None  # path to ImageNet weights, or "torchvision"
    preprocessing: dict = field(default_factory=lambda: Preprocessing(28, 1, (0.286,), (0.353,)).to_dict())
    input_reason: str = ""  # how the input was chosen (training.input_settings), kept in the checkpoint's config
    augmentation: str = "weak"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    proxy_start: int | None = None  # epoch (0-based) from which CoInsP's proxy loss is on; None = half
    seed: int = 0
    device: str = "cpu"
    ks: tuple = (1, 2, 4, 8)
    cache_dir: str = ".cache"
    val_fraction: float = 0.0  # without a validation manifest: this share of each category held out (seeded)
    # Query views (training/query_views.py): an item's view through the real query path shown instead of its
    # catalog image for this share of the rows that have one.
    query_views: str | None = None
    query_view_share: float = 0.0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _autocast(device: torch.device, precision: str | None = None):
    """precision None: the one measured fastest for training on this machine (embedder/precision.py)."""
    precision = choose_precision(precision, device, "training")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.inference_mode()
def evaluate(model: CoInsModel, data: TrainingSet, pre: Preprocessing, device: torch.device, ks, precision: str | None = None,
             *, head_trained: bool = True) -> dict:
    """Fine-class Recall@k of the backbone feature f(x) (leave-one-out), and the category head's accuracy
    where the objective trains one and it has been trained (Opt, Ins, MaskCon and Grafit leave it untrained)."""
    model.eval()
    features, coarse_logits = [], []
    for start in range(0, len(data), 1024):
        x = pre.normalise(data.images[start:start + 1024].to(device)).contiguous(memory_format=torch.channels_last)
        with _autocast(device, precision):
            f = model.backbone(x)
            coarse_logits.append(model.coarse(model.head_input(f)).float().cpu())
        features.append(F.normalize(f.float(), dim=1).cpu())
    model.train()
    result = {}
    if model.cfg.coarse_weight > 0 and head_trained:
        result["coarse_top1"] = classification_accuracy(torch.cat(coarse_logits), data.categories, topk=(1,))[1]
    if data.products is not None:
        report = recall_at_k(torch.cat(features).numpy(), data.products.numpy(), ks=ks)
        result.update({f"R@{k}": v for k, v in report.overall.items()})
    return result


def train_step(network, optimizer, schedule, images: torch.Tensor, idx: torch.Tensor, categories: torch.Tensor,
               fine_labels: torch.Tensor | None, *, pre: Preprocessing, augmentation: str, generator: torch.Generator,
               device: torch.device, precision: str, part: tuple[int, int] = (0, 1), views: QueryViews | None = None,
               view_share: float = 0.0) -> dict[str, float]:
    """One optimisation step on the images `idx` (rows of the uint8 `images`); returns the loss parts.
    views: query views that stand in for about `view_share` of the rows that have one."""
    batch = images[idx]
    if views is not None and view_share > 0:
        batch = views.swap(batch, idx, view_share, generator)
    x = batch.to(device, non_blocking=True).float() / 255.0
    x = augment(x, augmentation, generator, part=part)
    x = pre.standardise(x).contiguous(memory_format=torch.channels_last)
    idx = idx.to(device)
    with _autocast(device, precision):
        loss, parts = network(x, idx, categories[idx], fine_labels[idx] if fine_labels is not None else None)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return parts


def build_model(cfg: TrainConfig, train: TrainingSet, ranks: Ranks | None = None) -> CoInsModel:
    ranks = ranks or Ranks()
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
    if cfg.pretrained:
        load_imagenet_weights(backbone, cfg.pretrained)
    num_fine = len(train.product_names) if cfg.objective.fine_weight > 0 else 0
    if num_fine and train.products is None:
        raise ValueError("the Opt reference needs product_id in the training manifest")
    return CoInsModel(backbone, cfg.objective, train.categories, len(train.category_names), num_fine,
                      rank=ranks.rank, world_size=ranks.world_size)


def load_sets(cfg: TrainConfig) -> tuple[TrainingSet, TrainingSet | None]:
    pre = Preprocessing.from_dict(cfg.preprocessing)
    train_set = load_training_set(cfg.train_manifest, pre, cache_dir=cfg.cache_dir)
    if cfg.val_manifest:
        return train_set, load_training_set(cfg.val_manifest, pre, cache_dir=cfg.cache_dir,
                                            category_names=train_set.category_names)
    if cfg.val_fraction:
        return hold_out(train_set, cfg.val_fraction, seed=cfg.seed)
    return train_set, None


def train(cfg: TrainConfig, *, resume: bool = False, stop_after_epoch: int | None = None, log=print,
          sets: tuple[TrainingSet, TrainingSet | None] | None = None, precision: str | None = None) -> dict:
    """Train and return the history; writes out_dir/last.pt (resumable) and out_dir/model.pt.
    `sets` passes already decoded (train, validation) sets, e.g. one load for several runs.
    Under torchrun, call it on every rank: rank 0 logs, validates and writes (its result is the run's).
    precision: "bf16" autocast, "fp32" (runs comparable to round-off, as in the tests), or None: the faster
    of the two on this machine, measured once and cached (embedder/precision.py)."""
    precision = choose_precision(precision, cfg.device, "training")
    ranks = Ranks.from_environment(cfg.device)
    try:
        return _train(cfg, ranks, resume=resume, stop_after_epoch=stop_after_epoch, log=log if ranks.main else _quiet,
                      sets=sets, precision=precision)
    finally:
        ranks.close()


def _quiet(message: str) -> None:
    pass


def _train(cfg: TrainConfig, ranks: Ranks, *, resume: bool, stop_after_epoch: int | None, log,
           sets: tuple[TrainingSet, TrainingSet | None] | None, precision: str) -> dict:
    """Glue, in the order of MoCo's main: data, model, optimiser, resume, then one epoch after another."""
    device = ranks.device
    pre = Preprocessing.from_dict(cfg.preprocessing)
    out = _run_folder(cfg, ranks)
    train_set, val_set = sets if sets is not None else ranks.main_first(lambda: load_sets(cfg))
    cfg = _batch_that_fits(cfg, len(train_set), ranks, log)
    model = build_model(cfg, train_set, ranks).to(device, memory_format=torch.channels_last)
    network = model
    if ranks.distributed:
        network = wrap(model, ranks, unused_parameters=cfg.objective.coarse_weight == 0,  # Ins and Opt skip the coarse head
                       sharded_state=SHARDED_STATE)
    steps_per_epoch = len(train_set) // cfg.batch_size  # the last partial batch is dropped (BatchNorm)
    optimizer, schedule = _optimiser(model, cfg, steps_per_epoch)
    if model.uses_instances:  # W^I starts from the pixels (presets.py says why), so step one has signal
        model.memory.initialise_from_pixels(train_set.images, seed=cfg.seed)
    instance_index = instance_checkpoint.instance_parameter_index(optimizer, model.memory.weights)
    history, first_epoch = [], 0
    if resume and (out / "last.pt").is_file():
        history, first_epoch = _resume(out, model, optimizer, schedule, ranks, instance_index)
        log(f"resumed from {out / 'last.pt'} after epoch {first_epoch}")

    epoch_data = _EpochData(train_set, device, cfg.query_views)
    # The mask model the query views were made with: the checkpoint names it (the product's query path).
    mask = {"mask_model": epoch_data.views.mask_model} if epoch_data.views is not None else {}
    checkpoint = dict(backbone_spec={"name": cfg.backbone, "kwargs": cfg.backbone_kwargs}, preprocessing=pre,
                      categories=train_set.category_names, config={**cfg.to_dict(), **mask})
    for epoch in range(first_epoch, cfg.epochs):
        record = _train_epoch(cfg, epoch, network, model, optimizer, schedule, epoch_data, steps_per_epoch, ranks, pre,
                              precision, log)
        if val_set is not None and ranks.main:
            record.update(evaluate(model, val_set, pre, device, cfg.ks, precision))
        history.append(record)
        _report(out, history, log, ranks)
        _save_training_state(out, model, optimizer, schedule, epoch, history, ranks, instance_index, **checkpoint)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            return {"history": history, "stopped": True}
    if cfg.epochs == 0:
        log("--epochs 0: model.pt holds the backbone as it starts" + (f" ({cfg.pretrained} weights)" if cfg.pretrained
                                                                       else ", untrained (random weights)"))
        if val_set is not None and ranks.main:
            history = [{"epoch": 0, **evaluate(model, val_set, pre, device, cfg.ks, precision, head_trained=False)}]
            _report(out, history, log, ranks)
    return _write_model(out, model, cfg, history, ranks, checkpoint)


def _run_folder(cfg: TrainConfig, ranks: Ranks) -> Path:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ranks.main:  # a process killed while writing a checkpoint leaves its unfinished temporary file
        for stale in [*out.glob(".last.pt.*.tmp"), *out.glob(".model.pt.*.tmp")]:
            stale.unlink(missing_ok=True)
    return out


def _batch_that_fits(cfg: TrainConfig, images: int, ranks: Ranks, log) -> TrainConfig:
    """A manifest smaller than one batch trains with one batch of (nearly) all its images, said so."""
    if cfg.batch_size % ranks.world_size:
        raise ValueError(f"the batch of {cfg.batch_size} images does not split evenly over {ranks.world_size} processes")
    if cfg.epochs == 0 or images >= cfg.batch_size:
        return cfg
    batch = images - images % ranks.world_size
    if batch < 2 * ranks.world_size:  # batch norm needs two images in each process's share
        raise ValueError(f"the training manifest has {images} readable images: too few to train on "
                         f"(at least {2 * ranks.world_size} are needed)")
    log(f"the training manifest has {images} images, fewer than the batch of {cfg.batch_size}: "
        f"training with batches of {batch} (learning rate scaled with it)")
    return dataclasses.replace(cfg, batch_size=batch)


def _optimiser(model: CoInsModel, cfg: TrainConfig, steps_per_epoch: int):
    """SGD with the learning rate scaled to the batch (lr at 256 images) and a cosine decay to zero."""
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    lr = cfg.lr * cfg.batch_size / 256
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=0.0)
    return optimizer, schedule


def _resume(out: Path, model: CoInsModel, optimizer, schedule, ranks: Ranks, instance_index: int | None) -> tuple[list, int]:
    state = load_checkpoint(out / "last.pt")["training_state"]
    upgrade_model_state(state["model"])
    if model.uses_instances and ("instance_shards" in state or ranks.distributed):
        rows = model.memory.shard.rows if model.memory.shard is not None else torch.arange(model.memory.num_rows)
        instance_checkpoint.restore_rows(out, state, rows, instance_index)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return state["history"], state["epoch"] + 1


class _EpochData:
    """The training set as the steps read it: images stay on the CPU, labels move to the device once."""

    def __init__(self, train_set: TrainingSet, device: torch.device, views: str | None = None):
        self.images = train_set.images
        self.views = QueryViews(views, len(train_set)) if views else None
        self.categories = train_set.categories.to(device)
        self.fine_labels = train_set.products.to(device) if train_set.products is not None else None


def _train_epoch(cfg: TrainConfig, epoch: int, network, model: CoInsModel, optimizer, schedule, data: _EpochData,
                 steps_per_epoch: int, ranks: Ranks, pre: Preprocessing, precision: str, log) -> dict:
    """One pass: re-cluster W^I into proxies where CoInsP asks (Algorithm 1), then the steps; returns the epoch's record."""
    generator = _generator(cfg.seed, epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # sampled instance negatives draw from torch's own generator
    cluster_time = 0.0
    proxy_start = cfg.proxy_start if cfg.proxy_start is not None else cfg.epochs // 2
    if cfg.objective.proxy_weight > 0 and epoch >= proxy_start:
        started = time.perf_counter()
        model.recluster(seed=cfg.seed * 1000 + epoch)
        cluster_time = time.perf_counter() - started
        log(f"epoch {epoch + 1}: re-clustered W^I into {len(model.memory.proxies)} proxies in {cluster_time:.1f}s")
    order = torch.randperm(len(data.images), generator=generator)
    sums: dict[str, float] = {}
    train_time, seen = 0.0, 0
    # Progress bars only on a terminal: in a log file they would glue onto the epoch lines.
    bar = tqdm(range(steps_per_epoch), desc=f"{cfg.preset} epoch {epoch + 1}/{cfg.epochs}", mininterval=2.0, leave=False,
               disable=not ranks.main or not sys.stderr.isatty())
    for step in bar:
        started = time.perf_counter()
        idx = ranks.batch_part(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        parts = train_step(network, optimizer, schedule, data.images, idx, data.categories, data.fine_labels, pre=pre,
                           augmentation=cfg.augmentation, generator=generator, device=ranks.device, precision=precision,
                           part=(ranks.rank, ranks.world_size), views=data.views, view_share=cfg.query_view_share)
        train_time += time.perf_counter() - started
        seen += len(idx) * ranks.world_size
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % 20 == 0:
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in parts.items()}, "img/s": f"{seen / train_time:.0f}"})
    bar.close()
    # Each rank's losses are means over its part of the batch; the record holds global-batch means.
    loss_sums = dict(zip(sums, ranks.sum(list(sums.values()))))
    # Throughput counts the epoch's k-means too: it is part of what CoInsP costs.
    return {"epoch": epoch + 1, "images_per_s": seen / (train_time + cluster_time), "train_s": train_time + cluster_time,
            **{f"loss_{k}": v / (steps_per_epoch * ranks.world_size) for k, v in loss_sums.items()}}


def _report(out: Path, history: list[dict], log, ranks: Ranks) -> None:
    """The epoch's figures: one JSON line in the log, and every epoch so far in OUT/metrics.jsonl."""
    log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in history[-1].items()}))
    if ranks.main:
        with atomic_path(out / "metrics.jsonl") as tmp:
            Path(tmp).write_text("".join(json.dumps(record) + "\n" for record in history))


def _write_model(out: Path, model: CoInsModel, cfg: TrainConfig, history: list, ranks: Ranks, checkpoint: dict) -> dict:
    result = {"history": history, "model": str(out / "model.pt")}
    if ranks.main:
        # The category head ships with the model only where the objective trained it.
        coarse_head = model.coarse_head_state() if cfg.objective.coarse_weight > 0 and cfg.epochs > 0 else None
        result["fingerprint"] = save_checkpoint(out / "model.pt", backbone=model.backbone, coarse_head=coarse_head,
                                                **{**checkpoint, "config": {**checkpoint["config"], "history": history}})
        (out / "history.json").write_text(json.dumps(history, indent=1))
    ranks.barrier()  # model.pt exists for every rank once train() returns
    return result


def _save_training_state(out: Path, model: CoInsModel, optimizer, schedule, epoch: int, history: list, ranks: Ranks,
                         instance_index: int | None, **checkpoint) -> None:
    """last.pt (resumable), written atomically by rank 0; when W^I is sharded, each rank's rows go beside it first."""
    training_state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "schedule": schedule.state_dict(), "epoch": epoch, "history": history}
    if model.memory.shard is not None and model.uses_instances:
        instances = instance_checkpoint.split_off_instances(training_state, instance_index)
        folder = instance_checkpoint.save_shard(out, epoch, ranks.rank, ranks.world_size, model.memory.shard.rows, instances)
        training_state["instance_shards"] = {"folder": folder, "world_size": ranks.world_size}
        ranks.barrier()  # every shard is on disk before last.pt names them
    if ranks.main:
        save_checkpoint(out / "last.pt", backbone=model.backbone, training_state=training_state, **checkpoint)
        if "instance_shards" in training_state:
            instance_checkpoint.remove_other_shards(out, training_state["instance_shards"]["folder"])
    ranks.barrier()
