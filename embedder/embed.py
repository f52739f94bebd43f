"""Images -> L2-normalised float32 feature vectors with a trained model.

The batch path (whole manifests) uses a DataLoader with workers for decoding and
channels_last; the single-image path (queries) skips the loader entirely so a search pays no
start-up cost. The arithmetic (fp32 or bf16 autocast) is the one measured fastest on this
machine (embedder/precision.py) unless the caller names one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint
from embedder.images import ImageError, decode_image
from embedder.precision import autocast, choose_precision
from embedder.preprocess import Preprocessing
from embedder.regions import Box

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class EmbedResult:
    embeddings: np.ndarray  # (number embedded, d) float32, rows L2-normalised
    embedded: np.ndarray  # indices into the input list of the rows of `embeddings`
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (index, path, reason)


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing):
        self.paths, self.preprocessing = list(paths), preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, torch.from_numpy(self.preprocessing.to_uint8(decode_image(self.paths[i]))), ""
        except ImageError as exc:
            return i, None, str(exc)


def _collate(items):
    good = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, reason) for i, x, reason in items if x is None]
    indices = torch.tensor([i for i, _ in good], dtype=torch.long)
    batch = torch.stack([x for _, x in good]) if good else None
    return indices, batch, failed


class Embedder:
    def __init__(self, backbone: torch.nn.Module, preprocessing: Preprocessing, *, fingerprint: str = "",
                 categories: Sequence[str] = (), device: str = "cpu", precision: str | None = None):
        """precision: "fp32", "bf16", or None / "auto" for the one measured on this machine."""
        self.device = torch.device(device)
        self.backbone = backbone.eval().to(self.device, memory_format=torch.channels_last)
        # Measured on a query's batch (the photo and its mirror image), once per architecture and size.
        size, channels = preprocessing.size, preprocessing.channels
        precision = choose_precision(precision, self.device, "inference", network=self.backbone,
                                     example=torch.zeros(2, channels, size, size),
                                     label=f"{type(backbone).__name__} d{backbone.feature_dim} {channels}x{size}px")
        self.preprocessing = preprocessing
        self.fingerprint = fingerprint
        self.categories = list(categories)
        self.precision = precision
        self.feature_dim = int(backbone.feature_dim)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", precision: str | None = None) -> "Embedder":
        payload = load_checkpoint(path)
        backbone, preprocessing = backbone_from_checkpoint(payload)
        return cls(backbone, preprocessing, fingerprint=payload["fingerprint"],
                   categories=payload["categories"], device=device, precision=precision)

    def _autocast(self):
        return autocast(self.device, self.precision)

    @torch.inference_mode()
    def features_uint8(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 B x C x H x W (already at the model's size) -> the backbone's raw (B, d) float32
        features on the CPU (what a category head reads; embed_uint8 normalises them)."""
        x = self.preprocessing.normalise(batch.to(self.device)).contiguous(memory_format=torch.channels_last)
        with self._autocast():
            features = self.backbone(x)
        return features.float().cpu()

    @staticmethod
    def vectors(features: torch.Tensor) -> np.ndarray:
        """Raw (B, d) features (features_uint8) -> the (B, d) L2-normalised float32 search vectors."""
        return F.normalize(features, dim=1).numpy()

    def embed_uint8(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 B x C x H x W (already at the model's size) -> (B, d) normalised float32."""
        return self.vectors(self.features_uint8(batch))

    def embed_images(self, images: Sequence[Image.Image], boxes: Sequence[Box | None] | None = None) -> np.ndarray:
        """Decoded RGB images (see embedder.images.decode_image) -> (N, d).

        boxes: per image a query region (x0, y0, x1, y1) in its pixels, or None for the whole
        photo; embedder.regions.BoxError (an ImageError) if one does not select part of it."""
        if not images:
            return np.zeros((0, self.feature_dim), np.float32)
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError("boxes needs one entry (or None) per image")
        return self.embed_uint8(torch.stack([torch.from_numpy(self.preprocessing.to_uint8(im, box))
                                             for im, box in zip(images, boxes)]))

    def embed_image(self, image: Image.Image, box: Box | None = None) -> np.ndarray:
        return self.embed_images([image], [box])[0]

    def model_view(self, image: Image.Image, box: Box | None = None) -> Image.Image:
        """What the model sees of a photo (the normalised, cropped input), for display."""
        array = self.preprocessing.to_uint8(image, box)
        return Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))

    def embed_files(self, paths: Sequence[str], *, batch_size: int = 256, num_workers: int | None = None,
                    progress: Progress | None = None) -> EmbedResult:
        """Embed image files; unreadable ones are skipped and reported, never silently dropped."""
        if num_workers is None:
            num_workers = 0 if len(paths) < 2000 else min(2, os.cpu_count() or 1)
        loader = DataLoader(_ImageFiles(paths, self.preprocessing), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=_collate, persistent_workers=False)
        chunks, indices, failures, done = [], [], [], 0
        for batch_indices, batch, failed in loader:
            if batch is not None:
                chunks.append(self.embed_uint8(batch))
                indices.append(batch_indices.numpy())
            failures += [(i, str(paths[i]), reason) for i, reason in failed]
            done += len(batch_indices) + len(failed)
            if progress:
                progress(done, len(paths))
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, self.feature_dim), np.float32)
        embedded = np.concatenate(indices) if indices else np.zeros(0, np.int64)
        return EmbedResult(embeddings, embedded, failures)

    @torch.inference_mode()
    def attention_map(self, image: Image.Image, box: Box | None = None) -> np.ndarray:
        """Spatial attention of the last feature map (Zagoruyko & Komodakis: sum over channels
        of squared activations), upsampled to the model's input size and scaled to [0, 1]."""
        x = self.preprocessing.normalise(torch.from_numpy(self.preprocessing.to_uint8(image))[None].to(self.device))
        fmap = self.backbone.feature_map(x.contiguous(memory_format=torch.channels_last)).float()
        energy = fmap.pow(2).sum(dim=1, keepdim=True)
        energy = F.interpolate(energy, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        energy -= energy.min()
        return (energy / energy.max().clamp_min(1e-12)).cpu().numpy()
