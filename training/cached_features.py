"""A frozen trunk's features of each training photo's views, computed once and kept on disk.

Training a store's head (training/head_training.py) never runs the trunk: each photo is decoded and
brought to the model's input once, its views are made from that (view 0: the photo as the catalog sees
it; the others augmented in turn by ViewSettings.augmentations: `photo`, as another photo of the same
product in a store differs: another backdrop, tilt, scale, light, a slight tint; `shopper`,
training/augment.py's shopper view; `strong`, a random crop; or `mirror`, the photo mirrored, the
second view of a search by photo), and the trunk's pooled feature of
every view is stored as a unit vector in float16 (features.npy, photos x views x d). meta.json records
the trunk's fingerprint (the model checkpoint's), the views and the photos; a cache made by another
trunk is refused, never silently used.
"""
from __future__ import annotations

import hashlib
import json
import math
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
VIEW_AUGMENTATIONS = ("photo",)
# What caches written before ViewSettings named its augmentations used.
EARLIER_AUGMENTATIONS = ("shopper", "strong")


class CachedFeaturesError(ValueError):
    """A cache that does not belong to this trunk or these photos."""


@dataclass(frozen=True)
class ViewSettings:
    views: int = 4  # per photo, the photo itself included
    seed: int = 0
    augmentations: tuple[str, ...] = VIEW_AUGMENTATIONS  # of views 1, 2, ... in turn (names: VIEW_MAKERS)

    def __post_init__(self):
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        unknown = set(self.augmentations) - set(VIEW_MAKERS)
        if unknown or not self.augmentations:
            raise ValueError(f"view augmentations must be some of {sorted(VIEW_MAKERS)}, not {list(self.augmentations)}")

    @classmethod
    def from_record(cls, record: dict) -> "ViewSettings":
        """From meta.json (a cache written before the augmentations were recorded used EARLIER_AUGMENTATIONS)."""
        return cls(**{"augmentations": EARLIER_AUGMENTATIONS, **record})


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


def another_photo(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x: float B x C x S x S in [0, 1], a product trimmed and padded on its backdrop (as the catalog's
    photos are brought to the model). Another photo of the same product in a store: another backdrop
    (light, or a colour, some of them with a smooth texture; what differs from the border's median by
    more than a few levels is the product and keeps its pixels), then tilted up to 8 degrees, a little
    smaller or larger, shifted (never mirrored: a store shows a product the right way round), and lit
    a little brighter or darker, with a slight tint."""
    b, c, h, w = x.shape
    draw = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    background = border.median(-1).values[..., None, None]
    product = ((x - background).abs().amax(1, keepdim=True) > 0.06).float()
    product = F.avg_pool2d(F.max_pool2d(product, 3, 1, 1), 3, 1, 1)  # closed over the product's fine print, soft edge
    light = draw(b, 1) < 0.3
    colour = 0.35 + 0.6 * draw(b, 1) - 0.8 * draw(b, 1) * draw(b, c)  # a value, less of some channels: a tone
    backdrop = torch.where(light, 0.78 + 0.22 * draw(b, c), colour.clamp(0.05, 1))[..., None, None]
    cells = F.interpolate(draw(b, 1, 6, 6) - 0.5, size=(h, w), mode="bicubic", align_corners=False)
    backdrop = backdrop * (1 + 0.4 * (draw(b, 1, 1, 1) < 0.4).float() * draw(b, 1, 1, 1) * cells)
    x = (x * product + (backdrop + (x - background)) * (1 - product)).clamp(0, 1)  # the old backdrop's shading kept
    # One warp: scale (> 1 larger), shift, tilt; what it uncovers is the new backdrop.
    size, angle = 0.9 + 0.2 * draw(b), (2 * draw(b) - 1) * math.radians(8)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = torch.cos(angle) / size, -torch.sin(angle) / size, 0.12 * draw(b) - 0.06
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = torch.sin(angle) / size, torch.cos(angle) / size, 0.12 * draw(b) - 0.06
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    fill = backdrop.mean((2, 3), keepdim=True)
    x = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    gain = (0.85 + 0.3 * draw(b))[:, None, None, None]
    stretch = (0.9 + 0.2 * draw(b))[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * stretch + mean) * gain
    if c == 3:
        x = x * (0.96 + 0.08 * draw(b, 3))[:, :, None, None]
    return x.clamp(0, 1)


def mirror_image(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The photo mirrored left to right: what a search by photo also embeds (SearchService, mirror=True), so
    a query set's cache holds both of a search's views."""
    return x.flip(-1)


VIEW_MAKERS = {"photo": another_photo, "shopper": lambda x, g: augment(x, "shopper", g),
               "strong": lambda x, g: augment(x, "strong", g), "mirror": mirror_image}


def trunk_views(embedder: Embedder, batch_uint8: torch.Tensor, settings: ViewSettings,
                generator: torch.Generator) -> torch.Tensor:
    """uint8 B x C x S x S -> (B, views, d) unit trunk features: view 0 as given, then augmented views."""
    views = [embedder.features_uint8(batch_uint8)]
    x = batch_uint8.float() / 255.0
    for v in range(1, settings.views):
        warped = VIEW_MAKERS[settings.augmentations[(v - 1) % len(settings.augmentations)]](x, generator)
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
    stored = ViewSettings.from_record(meta["settings"])
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
