"""Augmentation on whole batches of tensors: one affine warp per image, no per-image Python.

`weak`: shift by a few pixels + horizontal flip (the paper's crop + flip).
`strong`: random resized crop (area scale in `scale`) + flip, the contrastive-learning view.
`shopper`: how a shopper's photo differs from a catalog image once the query preprocessing has trimmed
it to the product: the product a little smaller or larger, off-centre, tilted by up to 10 degrees,
lighter or darker, flatter or harsher, and (colour models) tinted by the light.
`shopper_residue`: the shopper view plus what an imperfect product crop leaves (`segmentation_residue`):
the backdrop's texture showing through the product, stray specks of clutter beside it, small holes
where the mask missed part of it.
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


def _rows(shape: tuple[int, ...], generator: torch.Generator, part: tuple[int, int], device) -> torch.Tensor:
    """Uniform [0, 1) tensor of `shape` (first dim b): this rank's rows of draws made for the whole batch."""
    index, parts = part
    return torch.rand((shape[0] * parts, *shape[1:]), generator=generator)[index::parts].to(device)


def _grow(seeds: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(seeds, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else seeds


def segmentation_residue(x: torch.Tensor, generator: torch.Generator, *, part: tuple[int, int] = (0, 1),
                         p: float = 0.5, texture: tuple[float, float] = (0.0, 0.3), specks: tuple[float, float] = (0, 4),
                         holes: tuple[float, float] = (0, 2)) -> torch.Tensor:
    """x: float B x C x H x W in [0, 1], a product on a plain background. For a share `p` of the images,
    what a product crop from a cluttered photo typically leaves behind:
    texture: a smooth or striped pattern of up to this share of the product's contrast laid over the product;
    specks: about this many small blobs of clutter anywhere (most land on the background);
    holes: about this many small patches of the product turned to background (the mask missed them).
    The background is the median of the border, the product what differs from it by a tenth of the
    strongest difference: so it works for light-on-dark and dark-on-light images alike."""
    b, c, h, w = x.shape
    draw = lambda low, high: _uniform(low, high, b, generator, part, x.device)  # noqa: E731
    apply = (draw(0, 1) < p).float()[:, None, None, None]
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    background = border.median(-1).values[..., None, None]
    signal = (x - background).mean(1, keepdim=True)
    peak = signal.abs().amax((2, 3), keepdim=True).clamp_min(1e-3)
    direction = torch.where(signal.sum((2, 3), keepdim=True) >= 0, 1.0, -1.0)  # light-on-dark: +1
    product = _grow((signal.abs() > 0.1 * peak).float(), 1)

    # The backdrop showing through: half smooth blotches (noise on a coarse grid, upsampled), half stripes.
    cells = 2 + int(_uniform(0, 6, 1, generator, (0, 1), "cpu").item())
    blotches = F.interpolate(_rows((b, 1, cells, cells), generator, part, x.device) * 2 - 1, size=(h, w),
                             mode="bicubic", align_corners=False).clamp(-1, 1)
    angle, period, phase = draw(0, math.pi), draw(3, 10), draw(0, 2 * math.pi)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype),
                            indexing="ij")
    along = torch.cos(angle)[:, None, None] * xs + torch.sin(angle)[:, None, None] * ys
    stripes = torch.sin(2 * math.pi * along / period[:, None, None] + phase[:, None, None])[:, None]
    pattern = torch.where((draw(0, 1) < 0.5)[:, None, None, None], blotches, stripes)
    amount = draw(*texture)[:, None, None, None]
    y = x + apply * amount * pattern * product * peak * direction

    # Stray clutter: blobs of 1-2 px radius at a random strength; holes: 1-3 px patches inside the product.
    rate = lambda count: (draw(*count) / (h * w))[:, None, None, None]  # noqa: E731
    speck = _grow((_rows((b, 1, h, w), generator, part, x.device) < rate(specks)).float(), 1)
    strength = draw(0.3, 1.0)[:, None, None, None]
    y = torch.where((apply * speck) > 0, background + direction * peak * strength, y)
    hole = _grow((_rows((b, 1, h, w), generator, part, x.device) < rate(holes)).float() * product, 2)
    y = torch.where((apply * hole) > 0, background.expand_as(y), y)
    return y.clamp(0.0, 1.0)


def shopper_with_residue(x: torch.Tensor, generator: torch.Generator, *, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    return shopper_photo(segmentation_residue(x, generator, part=part), generator, part=part)


AUGMENTATIONS = {
    "none": None,
    "weak": dict(scale=(1.0, 1.0), max_shift=2 / 28),
    "strong": dict(scale=(0.3, 1.0), max_shift=0.0),
    "shopper": shopper_photo,
    "shopper_residue": shopper_with_residue,
}


def augment(x: torch.Tensor, name: str, generator: torch.Generator, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    params = AUGMENTATIONS[name]
    if params is None:
        return x
    if callable(params):
        return params(x, generator, part=part)
    return random_crop_flip(x, generator, part=part, **params)
