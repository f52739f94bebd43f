"""CoInsP at the cost of a head: the paper's objectives trained on cached trunk features.

f(x) = ResidualHead(trunk(x)) (embedder/backbones.py): the frozen trunk's unit feature, first centred and
whitened by the photos' instance whitening (below), plus a learned MLP (starting at zero, so an untrained
head is the whitened feature).

Instance whitening is instance discrimination solved in closed form for a linear map: each photo is its
own class, its cached views are its samples, and the map whitens the spread of a photo's views around
their mean (what another backdrop, light or pose changes), so that retrieval weighs the directions in
which photos differ from each other over those in which views of one photo differ. It reads no label
(settings.whiten: its regularisation, a share of the mean eigenvalue added to every eigenvalue). On top of f sit the preset's heads
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
    # AdamW. Small: on the colour product benchmark's validation families a larger step fits the training
    # products' own features and loses the whitening's gain on new ones (reports/colour-products/validation.md).
    lr: float = 1e-4
    weight_decay: float = 1e-4
    hidden: int = 512  # of the residual head's MLP
    head_dim: int = 256  # of the `**` projection g
    temperature: float | None = 0.1  # of the cosine softmaxes; None: the preset's
    proxies_per_photo: float = 0.2  # P = this x photos (the paper: 10,000 for 50,000)
    whiten: float | None = 0.1  # the instance whitening's regularisation (None: no whitening); needs 2 views or more
    # Every preset's classifiers as cosine softmaxes at `temperature` (the paper's `*`): a linear classifier on
    # unit vectors (Cos, Opt as presets.py has them) learns slowly at the head's small learning rate.
    cosine: bool = True
    coarse_weight: float | None = None  # of the coarse loss beside the instance loss; None: the preset's
    memory_momentum: float | None = None  # of the instance memory W^I; None: the preset's
    seed: int = 0
    precision: str | None = "fp32"  # None: measured on this machine (embedder/precision.py)
    # The head's matrices are small: on a busy machine a second OpenMP thread waiting for its core made each
    # step up to 100x slower (measured: 0.34 s vs 32 s for 4 epochs of a tiny store at load 12 on 2 cores).
    threads: int = 1

    def objective(self, photos: int):
        cfg = PRESETS[self.preset]
        # The coarse weight is set beside an instance loss only (Cos's sole loss keeps its weight).
        coarse = cfg.coarse_weight if self.coarse_weight is None or not cfg.instance_weight else self.coarse_weight
        return replace(cfg, head_dim=self.head_dim, temperature=self.temperature or cfg.temperature,
                       num_proxies=max(1, int(self.proxies_per_photo * photos)), coarse_weight=coarse,
                       cosine=cfg.cosine or self.cosine,
                       memory_momentum=cfg.memory_momentum if self.memory_momentum is None else self.memory_momentum)


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


def instance_whitening(features: np.ndarray, regularisation: float, groups: np.ndarray | None = None,
                       chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, W) from cached unit features (photos, views, d): centre = the mean of the photos' first
    views; W = E diag(1 / sqrt(lambda + regularisation * mean lambda)) with (lambda, E) the eigen-
    decomposition of the within-group covariance: every view minus the mean of its group, a group being
    one photo's views (instance whitening), or with `groups` (photos,) all views of the photos that share
    a label (with product labels: the closed-form reference that reads product identity)."""
    n, views, d = features.shape
    if groups is None and views < 2:
        raise ValueError("instance whitening needs two views or more of each photo")
    codes = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    sums = np.zeros((int(codes.max()) + 1, d), np.float64)
    scatter = np.zeros((d, d), np.float64)
    centre = np.zeros(d, np.float64)
    for start in range(0, n, chunk):
        block = np.asarray(features[start:start + chunk], np.float64)
        centre += block[:, 0].sum(0)
        flat = block.reshape(-1, d)
        scatter += flat.T @ flat
        np.add.at(sums, codes[start:start + chunk], block.sum(1))
    counts = np.bincount(codes) * views
    # sum over views of (x - m_g)(x - m_g)^T = sum x x^T - sum_g S_g S_g^T / n_g
    within = (scatter - (sums / counts[:, None]).T @ sums) / (n * views)
    values, vectors = np.linalg.eigh(within)
    values = np.clip(values, 0.0, None) + regularisation * max(float(values.mean()), 1e-12)
    return (torch.from_numpy((centre / n).astype(np.float32)),
            torch.from_numpy((vectors / np.sqrt(values)).astype(np.float32)))


def whitened_head(features: np.ndarray, settings: HeadSettings, groups: np.ndarray | None = None) -> TrainedHead:
    """The head's whitening alone, its MLP untrained (zero): what the whitening does before any training."""
    started = time.perf_counter()
    head = ResidualHead(features.shape[2], settings.hidden, whitened=True)
    head.centre, head.whitening = instance_whitening(features, settings.whiten or 0.0, groups)
    return TrainedHead(head.eval(), None, [], settings, time.perf_counter() - started)


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
    head = ResidualHead(d, settings.hidden, whitened=settings.whiten is not None and views > 1)
    if head.whitened:
        head.centre, head.whitening = instance_whitening(features, settings.whiten)
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
