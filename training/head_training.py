"""CoInsP at the cost of a head: the paper's objectives trained on cached trunk features.

f(x) = ResidualHead(trunk(x)) (embedder/backbones.py): the frozen trunk's unit feature plus a learned
MLP (starting at zero, so an untrained head is the frozen feature). On top of f sit the preset's heads
as in training/model.py: the `**` projection g, the coarse classifier, the instance memory W^I and the
proxies W^P (training/instance_memory.py, losses from training/objectives.py). Each step reads one
random cached view per photo (training/cached_features.py): the trunk never runs, so an epoch over
10,000 photos takes seconds on two cores.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from embedder.backbones import ResidualHead
from embedder.precision import autocast, choose_precision
from embedder.progress import ProgressOption, Stage, as_callback
from index.quality.evaluation import recall_at_k
from training.model import CoInsModel
from training.presets import PRESETS


@dataclass(frozen=True)
class HeadSettings:
    preset: str = "coinsp"  # any of training/presets.py (cos, coinsp, opt, ...)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4
    hidden: int = 512  # of the residual head's MLP
    head_dim: int = 256  # of the `**` projection g
    temperature: float | None = None  # of the cosine softmaxes; None: the preset's
    proxies_per_photo: float = 0.2  # P = this x photos (the paper: 10,000 for 50,000)
    seed: int = 0
    precision: str | None = "fp32"  # None: measured on this machine (embedder/precision.py)
    # The head's matrices are small: on a busy machine a second OpenMP thread waiting for its core made each
    # step up to 100x slower (measured: 0.34 s vs 32 s for 4 epochs of a tiny store at load 12 on 2 cores).
    threads: int = 1

    def objective(self, photos: int):
        cfg = PRESETS[self.preset]
        return replace(cfg, head_dim=self.head_dim, temperature=self.temperature or cfg.temperature,
                       num_proxies=max(1, int(self.proxies_per_photo * photos)))


@dataclass
class TrainedHead:
    head: ResidualHead
    coarse_head: dict | None  # embedder/category_head.py's record (None: the preset trains no category head)
    history: list[dict]
    settings: HeadSettings
    seconds: float

    @torch.inference_mode()
    def vectors(self, trunk_features: torch.Tensor) -> np.ndarray:
        """Unit trunk features (N, d) -> the head's L2-normalised search vectors."""
        self.head.eval()
        return F.normalize(self.head(trunk_features.float()), dim=1).numpy()


def train_head(features: np.ndarray, categories: np.ndarray, settings: HeadSettings = HeadSettings(), *,
               fine_labels: np.ndarray | None = None, progress: ProgressOption = False) -> TrainedHead:
    """features: (photos, views, d) cached unit trunk features; categories: (photos,) ints 0..C-1;
    fine_labels: (photos,) ints, for the Opt reference preset only."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train_head(features, categories, settings, fine_labels, progress)
    finally:
        torch.set_num_threads(threads)


def _train_head(features, categories, settings: HeadSettings, fine_labels, progress) -> TrainedHead:
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    n, views, d = features.shape
    cats = torch.as_tensor(np.asarray(categories), dtype=torch.long)
    fine = None if fine_labels is None else torch.as_tensor(np.asarray(fine_labels), dtype=torch.long)
    cfg = settings.objective(n)
    if cfg.fine_weight > 0 and fine is None:
        raise ValueError(f"preset {settings.preset!r} needs fine labels")
    head = ResidualHead(d, settings.hidden)
    model = CoInsModel(head, cfg, cats, int(cats.max()) + 1, int(fine.max()) + 1 if fine is not None else 0)
    cached = torch.from_numpy(np.ascontiguousarray(features))  # float16; one view at a time goes to float32
    if model.uses_instances:  # W^I starts at each photo's own head output: the instance task has signal at once
        with torch.no_grad():
            model.eval()
            h = torch.cat([model.head_input(head(cached[i:i + 4096, 0].float())) for i in range(0, n, 4096)])
            model.memory.weights.data[model.memory.row_of_image] = h
            model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
    total_steps = settings.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    precision = choose_precision(settings.precision, "cpu", "training")
    proxy_start = settings.epochs // 2 if cfg.proxy_weight > 0 else None
    stage = Stage(as_callback(progress), "training the head", settings.epochs)
    generator = torch.Generator().manual_seed(settings.seed)
    history = []
    for epoch in range(settings.epochs):
        if proxy_start is not None and epoch >= proxy_start:
            model.recluster(seed=settings.seed + epoch)  # Algorithm 1: W^P from W^I, every epoch from M on
        order = torch.randperm(n, generator=generator)
        view = torch.randint(0, views, (n,), generator=generator)
        totals: dict[str, float] = {}
        for s in range(steps_per_epoch):
            idx = order[s * settings.batch_size:(s + 1) * settings.batch_size]
            if len(idx) < 2:  # batch norm needs two
                continue
            x = cached[idx, view[idx]].float()
            with autocast("cpu", precision):
                loss, parts = model(x, idx, cats[idx], fine[idx] if fine is not None else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / steps_per_epoch
        history.append({"epoch": epoch + 1, **{k: round(v, 4) for k, v in totals.items()}})
        stage.reach(epoch + 1)
    model.eval()
    coarse = model.coarse_head_state() if cfg.coarse_weight > 0 else None
    return TrainedHead(head.eval(), coarse, history, settings, time.perf_counter() - started)


def recall(vectors: np.ndarray, labels: np.ndarray, ks=(1, 5), gallery: np.ndarray | None = None,
           gallery_labels: np.ndarray | None = None) -> dict[int, float]:
    """Recall@k (index.evaluation's): leave-one-out without a gallery."""
    report = recall_at_k(vectors, np.asarray(labels), gallery, None if gallery_labels is None else np.asarray(gallery_labels),
                         ks=ks)
    return {int(k): float(v) for k, v in report.overall.items()}


def settings_record(settings: HeadSettings) -> dict:
    return asdict(settings)
