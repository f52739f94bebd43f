"""Augmentation on whole batches of tensors: one affine warp per image, no per-image Python.

`weak`: shift by a few pixels + horizontal flip (the paper's crop + flip).
`strong`: random resized crop (area scale in `scale`) + flip, the contrastive-learning view.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, *, scale: tuple[float, float] = (1.0, 1.0),
                     max_shift: float = 2 / 28, flip: bool = True, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """x: float B x C x H x W. Returns a warped copy (bilinear; edges repeat, so a white or black background stays one).

    part = (i, parts): x holds rows i::parts of a batch `parts` times larger (one rank's share under
    DDP); the random draws are made for the whole batch, so each row is warped as in one process."""
    b = x.shape[0]
    index, parts = part
    rand = lambda: torch.rand(b * parts, generator=generator)[index::parts].to(x.device)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * rand()
    log_ratio = (2 * rand() - 1) * math.log(4 / 3)
    sx = (area * torch.exp(log_ratio)).sqrt().clamp(max=1.0)
    sy = (area / torch.exp(log_ratio)).sqrt().clamp(max=1.0)
    # Crops move within the image; the weak view also shifts by up to max_shift.
    tx = (2 * rand() - 1) * ((1 - sx) + max_shift)
    ty = (2 * rand() - 1) * ((1 - sy) + max_shift)
    mirror = torch.where(rand() < 0.5, -1.0, 1.0) if flip else torch.ones(b, device=x.device)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx * mirror, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


AUGMENTATIONS = {
    "none": None,
    "weak": dict(scale=(1.0, 1.0), max_shift=2 / 28),
    "strong": dict(scale=(0.3, 1.0), max_shift=0.0),
}


def augment(x: torch.Tensor, name: str, generator: torch.Generator, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    params = AUGMENTATIONS[name]
    return x if params is None else random_crop_flip(x, generator, part=part, **params)
