"""How a model sees an image: size, channels and normalisation, stored in every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    size: int  # square input side in pixels
    channels: int = 3  # 1 = the model was trained on grey images
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    # Product photos usually have a white background; some data sets (Fashion-MNIST)
    # are light objects on black. Inverting lets a photo match such a model.
    invert: bool = False

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 array C x size x size (what caches and data loaders hold)."""
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
