"""A frozen trunk's features of each training photo's views, computed once and kept on disk.

Training a store's head (training/head_training.py) never runs the trunk: each photo is decoded and
brought to the model's input once, its views are made from that (view 0: the photo as the catalog sees
it; the others augmented as a shopper's photo differs: scale, shift, tilt, light, tint, or a random
crop), and the trunk's pooled feature of every view is stored as a unit vector in float16
(features.npy, photos x views x d). meta.json records the trunk's fingerprint (the model checkpoint's),
the views and the photos; a cache made by another trunk is refused, never silently used.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from embedder.embed import Embedder
from embedder.files import atomic_path
from embedder.images import ImageError, decode_image
from embedder.progress import ProgressOption, Stage, as_callback
from training.augment import augment

FEATURES_FILE, META_FILE = "features.npy", "meta.json"
FORMAT = "coinsp-cached-features/1"
# The augmentation of each view after the first (the photo itself), in turn.
VIEW_AUGMENTATIONS = ("shopper", "strong")


class CachedFeaturesError(ValueError):
    """A cache that does not belong to this trunk or these photos."""


@dataclass(frozen=True)
class ViewSettings:
    views: int = 4  # per photo, the photo itself included
    seed: int = 0


@dataclass
class CachedFeatures:
    features: np.ndarray  # (photos, views, d) float16 unit vectors (memory-mapped when loaded)
    usable: np.ndarray  # (photos,) bool: False for a photo that could not be read (its rows are zero)
    trunk_fingerprint: str
    settings: ViewSettings
    paths: list[str]
    build_seconds: float | None = None  # how long making it took (None: not recorded)

    def plain(self) -> torch.Tensor:
        """View 0 of every photo, float32 (what the catalog's own photo gives)."""
        return torch.from_numpy(np.asarray(self.features[:, 0], np.float32))


def paths_digest(paths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:16]


def trunk_views(embedder: Embedder, batch_uint8: torch.Tensor, settings: ViewSettings,
                generator: torch.Generator) -> torch.Tensor:
    """uint8 B x C x S x S -> (B, views, d) unit trunk features: view 0 as given, then augmented views."""
    views = [embedder.features_uint8(batch_uint8)]
    x = batch_uint8.float() / 255.0
    for v in range(1, settings.views):
        warped = augment(x, VIEW_AUGMENTATIONS[(v - 1) % len(VIEW_AUGMENTATIONS)], generator)
        views.append(embedder.features_uint8((warped.clamp(0, 1) * 255).round().to(torch.uint8)))
    return F.normalize(torch.stack(views, 1), dim=2)


def build_cache(paths: Sequence[str | os.PathLike], embedder: Embedder, folder: str | os.PathLike,
                settings: ViewSettings = ViewSettings(), *, batch_size: int = 32,
                progress: ProgressOption = False) -> CachedFeatures:
    """Embed every photo's views with the trunk `embedder` and write the cache to `folder` (atomically:
    meta.json last, so a cache without it is unfinished and is made again)."""
    folder, paths = Path(folder), [str(p) for p in paths]
    started = time.perf_counter()
    stage = Stage(as_callback(progress), "caching trunk features", len(paths))
    generator = torch.Generator().manual_seed(settings.seed)
    d = embedder.feature_dim
    features = np.zeros((len(paths), settings.views, d), np.float16)
    usable = np.zeros(len(paths), bool)
    for start in range(0, len(paths), batch_size):
        rows, arrays = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                arrays.append(torch.from_numpy(embedder.preprocessing.to_uint8(decode_image(paths[i]))))
                rows.append(i)
            except ImageError:
                pass  # left unusable: training skips it
        if rows:
            features[rows] = trunk_views(embedder, torch.stack(arrays), settings, generator).numpy().astype(np.float16)
            usable[rows] = True
        stage.reach(min(start + batch_size, len(paths)))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)
    with atomic_path(folder / FEATURES_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features)
    with atomic_path(folder / "usable.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, usable)
    meta = {"format": FORMAT, "trunk_fingerprint": embedder.fingerprint, "settings": asdict(settings),
            "photos": len(paths), "dim": d, "paths_digest": paths_digest(paths), "paths": paths,
            "build_seconds": round(time.perf_counter() - started, 2)}
    with atomic_path(folder / META_FILE) as tmp:
        Path(tmp).write_text(json.dumps(meta) + "\n")
    return CachedFeatures(features, usable, embedder.fingerprint, settings, paths, meta["build_seconds"])


def load_cache(folder: str | os.PathLike, trunk_fingerprint: str, paths: Sequence[str | os.PathLike] | None = None,
               settings: ViewSettings | None = None) -> CachedFeatures:
    """The cache in `folder`; CachedFeaturesError if it is missing, unfinished, or was made by another
    trunk, of other photos or with other views."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        raise CachedFeaturesError(f"no finished feature cache in {folder}") from None
    if meta.get("format") != FORMAT:
        raise CachedFeaturesError(f"{folder} is not a feature cache of this product ({FORMAT})")
    if meta.get("trunk_fingerprint") != trunk_fingerprint:
        raise CachedFeaturesError(f"the feature cache in {folder} was made by the trunk {meta.get('trunk_fingerprint')}, "
                                  f"not by {trunk_fingerprint}: it is refused (make it again)")
    if paths is not None and meta.get("paths_digest") != paths_digest([str(p) for p in paths]):
        raise CachedFeaturesError(f"the feature cache in {folder} is of other photos")
    stored = ViewSettings(**meta["settings"])
    if settings is not None and stored != settings:
        raise CachedFeaturesError(f"the feature cache in {folder} has views {stored}, not {settings}")
    features = np.load(folder / FEATURES_FILE, mmap_mode="r")
    usable = np.load(folder / "usable.npy")
    if features.shape != (meta["photos"], stored.views, meta["dim"]) or usable.shape != (meta["photos"],):
        raise CachedFeaturesError(f"the feature cache in {folder} is damaged (shape {features.shape})")
    return CachedFeatures(features, usable, trunk_fingerprint, stored, list(meta["paths"]), meta.get("build_seconds"))


def cached_or_built(paths: Sequence[str | os.PathLike], embedder: Embedder, folder: str | os.PathLike,
                    settings: ViewSettings = ViewSettings(), *, progress: ProgressOption = False) -> CachedFeatures:
    """The cache of these photos by this trunk, made when there is none usable."""
    try:
        return load_cache(folder, embedder.fingerprint, paths, settings)
    except CachedFeaturesError:
        return build_cache(paths, embedder, folder, settings, progress=progress)
