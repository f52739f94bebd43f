"""The training loop: data -> model -> checkpoints, with validation Recall@k every epoch.

Reproducible: the model is seeded once, and each epoch's order, augmentation and k-means
are seeded from (seed, epoch), so --resume from the end of any epoch gives the same model
as an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.checkpoint import load_checkpoint, save_checkpoint
from embedder.preprocess import Preprocessing
from index.evaluation import classification_accuracy, recall_at_k
from training.augment import augment
from training.data import TrainingSet, load_training_set
from training.model import CoInsModel, ObjectiveConfig


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

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


@torch.inference_mode()
def evaluate(model: CoInsModel, data: TrainingSet, pre: Preprocessing, device: torch.device, ks) -> dict:
    """Fine-class Recall@k of the backbone feature f(x) (leave-one-out) and coarse accuracy."""
    model.eval()
    features, coarse_logits = [], []
    for start in range(0, len(data), 1024):
        x = pre.normalise(data.images[start:start + 1024].to(device)).contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            f = model.backbone(x)
            coarse_logits.append(model.coarse(model.head_input(f)).float().cpu())
        features.append(F.normalize(f.float(), dim=1).cpu())
    model.train()
    result = {"coarse_top1": classification_accuracy(torch.cat(coarse_logits), data.categories, topk=(1,))[1]}
    if data.products is not None:
        report = recall_at_k(torch.cat(features).numpy(), data.products.numpy(), ks=ks)
        result.update({f"R@{k}": v for k, v in report.overall.items()})
    return result


def build_model(cfg: TrainConfig, train: TrainingSet) -> CoInsModel:
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
    if cfg.pretrained:
        load_imagenet_weights(backbone, cfg.pretrained)
    num_fine = len(train.product_names) if cfg.objective.fine_weight > 0 else 0
    if num_fine and train.products is None:
        raise ValueError("the Opt reference needs product_id in the training manifest")
    return CoInsModel(backbone, cfg.objective, train.categories, len(train.category_names), num_fine)


def load_sets(cfg: TrainConfig) -> tuple[TrainingSet, TrainingSet | None]:
    pre = Preprocessing.from_dict(cfg.preprocessing)
    train_set = load_training_set(cfg.train_manifest, pre, cache_dir=cfg.cache_dir)
    val_set = (load_training_set(cfg.val_manifest, pre, cache_dir=cfg.cache_dir, category_names=train_set.category_names)
               if cfg.val_manifest else None)
    return train_set, val_set


def train(cfg: TrainConfig, *, resume: bool = False, stop_after_epoch: int | None = None, log=print,
          sets: tuple[TrainingSet, TrainingSet | None] | None = None) -> dict:
    """Train and return the history; writes out_dir/last.pt (resumable) and out_dir/model.pt.
    `sets` passes already decoded (train, validation) sets, e.g. one load for several runs."""
    device = torch.device(cfg.device)
    pre = Preprocessing.from_dict(cfg.preprocessing)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set, val_set = sets if sets is not None else load_sets(cfg)
    model = build_model(cfg, train_set).to(device, memory_format=torch.channels_last)
    steps_per_epoch = len(train_set) // cfg.batch_size  # the last partial batch is dropped (BatchNorm)
    total_steps = steps_per_epoch * cfg.epochs
    lr = cfg.lr * cfg.batch_size / 256
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    if model.uses_instances and cfg.objective.instance_init == "pixels":
        model.initialise_instance_weights(train_set.images, seed=cfg.seed)
    proxy_start = cfg.proxy_start if cfg.proxy_start is not None else cfg.epochs // 2
    history, first_epoch = [], 0

    if resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt")["training_state"]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, first_epoch = state["history"], state["epoch"] + 1
        log(f"resumed from {out / 'last.pt'} after epoch {first_epoch}")

    spec = {"name": cfg.backbone, "kwargs": cfg.backbone_kwargs}
    fine_labels = train_set.products.to(device) if train_set.products is not None else None
    categories = train_set.categories.to(device)
    images_all = train_set.images  # stays on CPU; batches move to the device
    for epoch in range(first_epoch, cfg.epochs):
        generator = _generator(cfg.seed, epoch)
        cluster_time = 0.0
        if cfg.objective.proxy_weight > 0 and epoch >= proxy_start:
            started = time.perf_counter()
            model.recluster(seed=cfg.seed * 1000 + epoch)
            cluster_time = time.perf_counter() - started
            log(f"epoch {epoch + 1}: re-clustered W^I into {len(model.proxies)} proxies in {cluster_time:.1f}s")
        order = torch.randperm(len(train_set), generator=generator)
        sums: dict[str, float] = {}
        train_time, seen = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg.preset} epoch {epoch + 1}/{cfg.epochs}", mininterval=2.0, leave=False)
        for step in bar:
            started = time.perf_counter()
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = images_all[idx].to(device, non_blocking=True).float() / 255.0
            x = augment(x, cfg.augmentation, generator)
            x = pre.standardise(x).contiguous(memory_format=torch.channels_last)
            idx = idx.to(device)
            with _autocast(device):
                loss, parts = model(x, idx, categories[idx], fine_labels[idx] if fine_labels is not None else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_time += time.perf_counter() - started
            seen += len(idx)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if step % 20 == 0:
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in parts.items()}, "img/s": f"{seen / train_time:.0f}"})
        bar.close()
        # Throughput counts the epoch's k-means too: it is part of what CoInsP costs.
        record = {"epoch": epoch + 1, "images_per_s": seen / (train_time + cluster_time), "train_s": train_time + cluster_time,
                  **{f"loss_{k}": v / steps_per_epoch for k, v in sums.items()}}
        if val_set is not None:
            record.update(evaluate(model, val_set, pre, device, cfg.ks))
        history.append(record)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        training_state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "epoch": epoch, "history": history}
        save_checkpoint(out / "last.pt", backbone_spec=spec, backbone=model.backbone, preprocessing=pre,
                        categories=train_set.category_names, config=cfg.to_dict(), training_state=training_state)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            return {"history": history, "stopped": True}
    fingerprint = save_checkpoint(out / "model.pt", backbone_spec=spec, backbone=model.backbone, preprocessing=pre,
                                  categories=train_set.category_names, config={**cfg.to_dict(), "history": history})
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "fingerprint": fingerprint, "model": str(out / "model.pt")}
