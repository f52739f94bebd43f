"""Checkpoints: everything needed to embed later, loadable with torch.load(weights_only=True).

A model checkpoint holds the backbone weights, how it sees an image (preprocessing),
the feature dimension, the category vocabulary, the training config and a fingerprint
that catalogs record so that a catalog is never searched with another model.
A training checkpoint adds `training_state` (heads, optimiser, epoch, RNG) for --resume.
A model trained with a category head may add `coarse_head` (embedder/category_head.py): f(x) -> category logits.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from embedder.backbones import build_backbone
from embedder.preprocess import Preprocessing
from embedder.files import atomic_path

FORMAT = "coinsp-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a usable model checkpoint."""


def model_fingerprint(backbone_spec: dict, backbone_state: dict, preprocessing: dict) -> str:
    digest = hashlib.sha256(json.dumps([backbone_spec, preprocessing], sort_keys=True).encode())
    for name in sorted(backbone_state):
        digest.update(name.encode())
        digest.update(backbone_state[name].detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(
    path: str | os.PathLike,
    *,
    backbone_spec: dict,
    backbone: nn.Module,
    preprocessing: Preprocessing,
    categories: list[str],
    config: dict,
    training_state: dict | None = None,
    coarse_head: dict | None = None,
) -> str:
    """Write atomically; returns the model fingerprint."""
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    fingerprint = model_fingerprint(backbone_spec, state, preprocessing.to_dict())
    payload = {
        "format": FORMAT,
        "backbone": backbone_spec,
        "backbone_state": state,
        "preprocessing": preprocessing.to_dict(),
        "feature_dim": int(backbone.feature_dim),
        "categories": list(categories),
        "config": config,
        "fingerprint": fingerprint,
    }
    if training_state is not None:
        payload["training_state"] = training_state
    if coarse_head is not None:
        payload["coarse_head"] = coarse_head
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return fingerprint


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load safely (no pickled code runs); raise CheckpointError with the reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unsafe or corrupt files
        raise CheckpointError(f"{path} is not a safe, readable model checkpoint: {_load_failure(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a model checkpoint of this product (format {FORMAT})")
    return payload


def _load_failure(exc: BaseException) -> str:
    """One line for torch's multi-line load errors (which also suggest weights_only=False: never here)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    refused = re.search(r"Unsupported global: GLOBAL (\S+?) was not", text)
    if refused:  # a pickled reference to code: loading it unsafely would run it
        return f"it refers to code ({refused.group(1)}), not only to weights; it was not loaded"
    if isinstance(exc, pickle.UnpicklingError):
        return "not a torch checkpoint (unreadable or unsafe pickle data); it was not loaded"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"not a torch checkpoint, or a damaged one ({type(exc).__name__}: {first.split('. ')[0]})"


def backbone_from_checkpoint(payload: dict) -> tuple[nn.Module, Preprocessing]:
    spec = payload["backbone"]
    backbone = build_backbone(spec["name"], **spec["kwargs"])
    backbone.load_state_dict(payload["backbone_state"])
    return backbone.eval(), Preprocessing.from_dict(payload["preprocessing"])
