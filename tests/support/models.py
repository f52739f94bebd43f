"""Small models with seeded random weights, and a category head fitted to features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from embedder.backbones import build_backbone
from embedder.checkpoint import save_checkpoint
from embedder.preprocess import Preprocessing

FASHION_INPUT = Preprocessing(size=28, channels=1, mean=(0.286,), std=(0.353,))  # 28-px grey, Fashion-MNIST's levels


def random_model(path: Path, categories, *, seed: int = 0, channels: int = 1, width: int = 8, grid: int = 1,
                 preprocessing: Preprocessing = FASHION_INPUT, config: dict | None = None) -> Path:
    """A smallcnn checkpoint with seeded random weights: enough for catalogs, search and the CLI."""
    torch.manual_seed(seed)
    spec = {"name": "smallcnn", "kwargs": {"in_channels": channels, "width": width, "grid": grid}}
    save_checkpoint(path, backbone_spec=spec, backbone=build_backbone(spec["name"], **spec["kwargs"]),
                    preprocessing=preprocessing, categories=list(categories), config=config or {})
    return path


def centroid_head(backbone, preprocessing: Preprocessing, images: np.ndarray, coarse: np.ndarray, classes: int) -> dict:
    """A category head (embedder/category_head.py) of nearest class means of the features: what
    a checkpoint trained without one gets here for the tests that need a category prediction."""
    batch = torch.from_numpy(np.stack([preprocessing.to_uint8(Image.fromarray(i).convert("RGB")) for i in images]))
    with torch.inference_mode():
        features = torch.nn.functional.normalize(backbone(preprocessing.normalise(batch)).float(), dim=1)
    means = torch.stack([features[torch.from_numpy(coarse == c)].mean(0) for c in range(classes)])
    return {"input": "feature", "normalise": True, "weight": means, "bias": None, "cosine": True, "scale": 20.0}
