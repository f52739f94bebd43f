"""Augmentation on whole batches of tensors: one affine warp per image, no per-image Python.

`weak`: shift by a few pixels + horizontal flip (the paper's crop + flip).
`strong`: random resized crop (area scale in `scale`) + flip, the contrastive-learning view.
`shopper`: how a shopper's photo differs from a catalog image once the query preprocessing has trimmed
it to the product: the product a little smaller or larger, off-centre, tilted by up to 10 degrees,
lighter or darker, flatter or harsher, and (colour models) tinted by the light.
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


def _uniform(low: float, high: float, b: int, generator: torch.Generator, part: tuple[int, int], device) -> torch.Tensor:
    """b draws in [low, high): this rank's rows of draws made for the whole batch (as random_crop_flip's)."""
    index, parts = part
    return (low + (high - low) * torch.rand(b * parts, generator=generator)[index::parts]).to(device)


def shopper_photo(x: torch.Tensor, generator: torch.Generator, *, part: tuple[int, int] = (0, 1),
                  scale: tuple[float, float] = (0.8, 1.1), max_shift: float = 3 / 28, max_degrees: float = 10.0,
                  brightness: tuple[float, float] = (0.7, 1.3), contrast: tuple[float, float] = (0.7, 1.3),
                  tint: tuple[float, float] = (0.85, 1.15)) -> torch.Tensor:
    """x: float B x C x H x W in [0, 1]. One warp (scale, shift, rotation, flip) and one colour change per image.

    scale is the product's size relative to the catalog image's (> 1 = larger, cut at the edges);
    brightness multiplies, contrast stretches about the image's mean, tint multiplies each channel
    of a colour image (grey images have no tint)."""
    b, c = x.shape[:2]
    draw = lambda low, high: _uniform(low, high, b, generator, part, x.device)  # noqa: E731
    size = draw(*scale)
    angle = draw(-max_degrees, max_degrees) * math.pi / 180
    tx, ty = draw(-max_shift, max_shift), draw(-max_shift, max_shift)
    mirror = torch.where(draw(0, 1) < 0.5, -1.0, 1.0)
    # Output pixel p samples the input at R(-angle) p / size + t: the product appears rotated and scaled by `size`.
    cos, sin = torch.cos(angle) / size, torch.sin(angle) / size
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * mirror, -sin, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * mirror, cos, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # What the warp uncovers is the background (the median of the border pixels), not a smear of the
    # edge: a product that touches the edge would otherwise grow a streak when shrunk or turned.
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    background = border.median(-1).values[..., None, None]
    x = F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background
    gain, stretch = draw(*brightness), draw(*contrast)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * stretch[:, None, None, None] + mean
    x = x * gain[:, None, None, None]
    if c == 3:
        channel_gain = torch.stack([draw(*tint) for _ in range(3)], 1)
        x = x * channel_gain[:, :, None, None]
    return x.clamp(0.0, 1.0)


AUGMENTATIONS = {
    "none": None,
    "weak": dict(scale=(1.0, 1.0), max_shift=2 / 28),
    "strong": dict(scale=(0.3, 1.0), max_shift=0.0),
    "shopper": shopper_photo,
}


def augment(x: torch.Tensor, name: str, generator: torch.Generator, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    params = AUGMENTATIONS[name]
    if params is None:
        return x
    if callable(params):
        return params(x, generator, part=part)
    return random_crop_flip(x, generator, part=part, **params)
