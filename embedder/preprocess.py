"""How a model sees an image: size, channels, normalisation and the catalog's domain, stored in
every checkpoint. `to_uint8` is the one image path of training, catalog building and queries."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from embedder.backdrop import on_backdrop
from embedder.domain import normalise as normalise_to_domain
from embedder.regions import check_box, crop_to_box

POLARITIES = ("light-on-dark", "dark-on-light", "keep")


@dataclass(frozen=True)
class Preprocessing:
    size: int  # square input side in pixels
    channels: int = 3  # 1 = the model was trained on grey images
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    # Only when `domain` is off: invert every image (the product path before domain normalisation).
    invert: bool = False
    # Bring every image into the catalog's domain (embedder/domain.py): background from the border,
    # trimmed to the product, padded to a square, levels and polarity matched.
    domain: bool = True
    # The catalog's convention: "light-on-dark" (Fashion-MNIST), "dark-on-light", or "keep" (photos
    # as they are). None: implied by the checkpoint (see _implied_polarity).
    polarity: str | None = None
    margin: float = 0.0  # background left around the product, as a share of the square's side
    # Colour photos (polarity "keep") only: the product cut out and laid on this grey level (0..1) instead
    # of its own backdrop, catalog photos and queries alike (embedder/backdrop.py). None: the photo's own.
    backdrop: float | None = None

    def __post_init__(self):
        if self.polarity is None:
            object.__setattr__(self, "polarity", _implied_polarity(self))
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, not {self.polarity!r}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError("margin must be in [0, 0.5)")
        if self.backdrop is not None:
            if not 0.0 <= self.backdrop <= 1.0:
                raise ValueError("backdrop must be a grey level in [0, 1] or None")
            if self.polarity != "keep" or self.channels != 3 or not self.domain:
                raise ValueError('a neutral backdrop is for colour photos (channels 3, polarity "keep", domain on)')

    def to_dict(self) -> dict:
        """Without `backdrop` when it is None: what checkpoints and catalogs recorded before it existed (their
        fingerprints and preprocessing records stay the same)."""
        record = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if record["backdrop"] is None:
            del record["backdrop"]
        return record

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """Also reads checkpoints written before the domain keys existed (see _implied_polarity)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_uint8(self, image: Image.Image, box: Sequence[float] | None = None) -> np.ndarray:
        """RGB PIL image -> uint8 array C x size x size (what caches and data loaders hold).

        box: the query region (x0, y0, x1, y1) in the image's pixels, applied first;
        embedder.regions.BoxError if it does not select part of the image."""
        if self.domain:  # the region's surroundings show what the background looks like
            region = None if box is None else check_box(box, *image.size)
            if self.backdrop is not None:
                return on_backdrop(image, size=self.size, grey=self.backdrop, margin=self.margin, region=region)
            return normalise_to_domain(image, size=self.size, channels=self.channels,  # any mode: 16-bit scaled
                                       polarity=self.polarity, margin=self.margin, region=region)
        image = crop_to_box(image, box)
        image = image.convert("L") if self.channels == 1 else image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
        if self.invert:
            array = 255 - array
        return array[None] if self.channels == 1 else array.transpose(2, 0, 1).copy()

    def normalise(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 B x C x H x W -> float, normalised like training."""
        return self.standardise(batch_uint8.float() / 255.0)

    def standardise(self, batch: torch.Tensor) -> torch.Tensor:
        """float B x C x H x W in [0, 1] -> (x - mean) / std."""
        c = self.channels
        mean = torch.tensor(self.mean[:c], device=batch.device).view(1, c, 1, 1)
        std = torch.tensor(self.std[:c], device=batch.device).view(1, c, 1, 1)
        return (batch - mean) / std


def _implied_polarity(pre: Preprocessing) -> str:
    """The convention a checkpoint without a `polarity` key implies. `invert` meant photos had to
    be negated to match the model; otherwise the stored mean is the training images' mean pixel:
    mostly dark images (Fashion-MNIST 0.29, MNIST 0.13) are light products on black, mostly light
    ones dark products on white; natural-image means (ImageNet 0.45, CIFAR 0.48, the default 0.5)
    say nothing, so photos keep their colours."""
    if pre.invert:
        return "light-on-dark"
    mean = float(np.mean(pre.mean[:pre.channels]))
    if mean < 0.35:
        return "light-on-dark"
    if mean > 0.65:
        return "dark-on-light"
    return "keep"
