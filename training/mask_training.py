"""Train the product mask (embedder/mask.py) on free composites: `python -m training mask`.

Catalog items pasted on the tuning backdrops (training/composites.py) with their exact masks,
shrunk as a query photo is shrunk for the mask model. Pixel-wise binary cross-entropy plus a
soft Dice term (small products count as much as large ones). Reproducible from --seed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedder.domain import MASK_SIDE
from embedder.mask import MaskNet, save_mask
from index.importers import load_fashion_mnist_arrays
from training.composites import BACKDROPS, analysis_pair, training_items


def padded_batch(pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixels, target) pairs of sizes up to MASK_SIDE -> (x, target, weight) padded to MASK_SIDE
    squares by repeating the edge; padding carries weight 0."""
    n = len(pairs)
    x = np.zeros((n, 3, MASK_SIDE, MASK_SIDE), np.float32)
    y = np.zeros((n, 1, MASK_SIDE, MASK_SIDE), np.float32)
    weight = np.zeros_like(y)
    for i, (pixels, target) in enumerate(pairs):
        h, w = target.shape
        x[i] = np.pad(pixels, ((0, MASK_SIDE - h), (0, MASK_SIDE - w), (0, 0)), mode="edge").transpose(2, 0, 1)
        y[i, 0, :h, :w] = target
        weight[i, 0, :h, :w] = 1.0
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(weight)


def make_pairs(items: np.ndarray, count: int, seed: int, kinds=BACKDROPS) -> list:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(items), count, replace=count > len(items))
    return [analysis_pair(items[i], rng, MASK_SIDE, kinds, others=items) for i in chosen]


def loss_of(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
    p = torch.sigmoid(logits) * weight
    dice = 1 - (2 * (p * target).sum(dim=(1, 2, 3)) + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


@torch.inference_mode()
def iou(net: MaskNet, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean intersection over union of the predicted and the true product pixels."""
    net.eval()
    predicted = (net(x) > 0) & (weight > 0)
    truth = (y >= 0.5) & (weight > 0)
    inter = (predicted & truth).sum(dim=(1, 2, 3)).float()
    union = (predicted | truth).sum(dim=(1, 2, 3)).float().clamp(min=1)
    net.train()
    return float((inter / union).mean())


def train_mask(out: str | Path, *, samples: int = 12000, epochs: int = 12, width: int = 16, seed: int = 0,
               batch: int = 64, log=print) -> dict:
    torch.manual_seed(seed)
    images, _ = load_fashion_mnist_arrays("train")
    items = images[training_items(len(images))]
    started = time.perf_counter()
    x, y, weight = padded_batch(make_pairs(items, samples, seed))
    vx, vy, vw = padded_batch(make_pairs(items, max(200, samples // 20), seed + 1))
    log(f"made {samples} composites (+{len(vx)} for validation) in {time.perf_counter() - started:.0f}s")
    net = MaskNet(width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * (samples // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(samples, generator=generator)
        total = 0.0
        for step in range(samples // batch):
            idx = order[step * batch:(step + 1) * batch]
            xb, yb, wb = x[idx], y[idx], weight[idx]
            if torch.rand(1, generator=generator).item() < 0.5:  # mirrored photos are photos too
                xb, yb, wb = xb.flip(3), yb.flip(3), wb.flip(3)
            loss = loss_of(net(xb), yb, wb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        record = {"epoch": epoch + 1, "loss": total / (samples // batch), "val_iou": iou(net, vx, vy, vw),
                  "elapsed_s": round(time.perf_counter() - started)}
        history.append(record)
        log(json.dumps(record))
    fingerprint = save_mask(out, net.eval(), trained_on={"composites": samples, "epochs": epochs, "seed": seed,
                                                          "backdrops": list(BACKDROPS), "history": history})
    log(f"wrote {out} (fingerprint {fingerprint})")
    return {"fingerprint": fingerprint, "history": history}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training mask", description=__doc__)
    p.add_argument("--out", default="models/product-mask.pt")
    p.add_argument("--samples", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train_mask(args.out, samples=args.samples, epochs=args.epochs, width=args.width, seed=args.seed)


if __name__ == "__main__":
    main()
