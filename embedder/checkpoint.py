"""Checkpoints: everything needed to embed later, loadable with torch.load(weights_only=True).

A model checkpoint holds the backbone weights, how it sees an image (preprocessing),
the feature dimension, the category vocabulary, the training config and a fingerprint
that catalogs record so that a catalog is never searched with another model.
A training checkpoint adds `training_state` (heads, optimiser, epoch, RNG) for --resume.
A model trained with a category head may add `coarse_head` (embedder/category_head.py): f(x) -> category logits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from embedder.backbones import BACKBONES, build_backbone
from embedder.preprocess import Preprocessing
from embedder.files import atomic_path

FORMAT = "coinsp-checkpoint/1"
MAX_INPUT_SIDE = 1024  # pixels: the models' square input side (28 to 224 in practice)


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
    _check_fields(path, payload)
    # Recomputed, not trusted: catalogs are matched to models by this value, so a file whose
    # weights or settings were changed afterwards must not pass for the model it came from.
    # Hashing the weights costs about 10 ms for the 1.2 MB Fashion-MNIST model.
    actual = model_fingerprint(payload["backbone"], payload["backbone_state"], payload["preprocessing"])
    if actual != payload["fingerprint"]:
        raise CheckpointError(f"{path} was changed after it was written: its weights and settings have fingerprint "
                              f"{actual}, not the recorded {payload['fingerprint']}; it was not loaded")
    try:  # the cheap checks here, so that the message names the file; the weights in backbone_from_checkpoint
        _known_backbone(payload)
        preprocessing_from_checkpoint(payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return payload


def _check_fields(path: Path, payload: dict) -> None:
    """The fields every use of a checkpoint relies on, with the types it relies on."""
    expected = {"backbone": dict, "backbone_state": dict, "preprocessing": dict, "fingerprint": str,
                "feature_dim": int, "categories": list}
    wrong = [name for name, kind in expected.items() if not isinstance(payload.get(name), kind)]
    spec = payload.get("backbone")
    if isinstance(spec, dict) and not (isinstance(spec.get("name"), str) and isinstance(spec.get("kwargs"), dict)):
        wrong.append("backbone (name, kwargs)")
    state = payload.get("backbone_state")
    if isinstance(state, dict) and not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        wrong.append("backbone_state (tensors)")
    if wrong:
        raise CheckpointError(f"{path} is a damaged model checkpoint: missing or malformed {', '.join(wrong)}")


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
    """The backbone with its weights, and its preprocessing; CheckpointError if they do not fit."""
    spec = _known_backbone(payload)
    try:
        backbone = build_backbone(spec["name"], **spec["kwargs"])
    except TypeError as exc:  # a setting the backbone does not take
        raise CheckpointError(f"the checkpoint's settings for backbone {spec['name']!r} do not fit it: {exc}") from None
    try:
        backbone.load_state_dict(payload["backbone_state"])
    except RuntimeError as exc:  # missing, unexpected or differently shaped weights
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch says enough
        raise CheckpointError(f"the checkpoint's weights do not fit its backbone {spec['name']!r} "
                              f"{spec['kwargs']}: {detail}") from None
    preprocessing = preprocessing_from_checkpoint(payload)
    backbone.eval()
    # One blank image through the model: an input the backbone can't take (channels, a size too
    # small for its pools) fails here, once, not on every search.
    try:
        with torch.inference_mode():
            features = backbone(torch.zeros(1, preprocessing.channels, preprocessing.size, preprocessing.size))
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's backbone {spec['name']!r} can't take its own input "
                              f"({preprocessing.channels} channels, {preprocessing.size} px): "
                              f"{str(exc).strip().splitlines()[0]}") from None
    if tuple(features.shape) != (1, backbone.feature_dim) or payload["feature_dim"] != backbone.feature_dim:
        raise CheckpointError(f"the checkpoint says feature dimension {payload['feature_dim']}, but its backbone "
                              f"gives {tuple(features.shape[1:])}")
    return backbone, preprocessing


def _known_backbone(payload: dict) -> dict:
    spec = payload["backbone"]
    if spec["name"] not in BACKBONES:
        raise CheckpointError(f"the checkpoint's backbone {spec['name']!r} is not one this product knows "
                              f"({', '.join(sorted(BACKBONES))}); it was written by another version or changed")
    return spec


def preprocessing_from_checkpoint(payload: dict) -> Preprocessing:
    """The checkpoint's preprocessing; CheckpointError for keys or values this product does not know."""
    stored = payload["preprocessing"]
    known = {f.name for f in dataclasses.fields(Preprocessing)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise CheckpointError(f"the checkpoint's preprocessing has settings this product does not know: "
                              f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    try:
        preprocessing = Preprocessing.from_dict(stored)
        size, channels = preprocessing.size, preprocessing.channels
        if not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIDE:
            raise ValueError(f"size must be a whole number of pixels in 1..{MAX_INPUT_SIDE}, not {size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels!r}")
        if len(preprocessing.mean) < channels or len(preprocessing.std) < channels or 0 in preprocessing.std[:channels]:
            raise ValueError(f"mean and std need {channels} values each, std non-zero")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint's preprocessing is not usable: {exc}") from None
    return preprocessing
