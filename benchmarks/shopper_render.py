"""Catalog-style items rendered as a shopper photographs them: a dark product on a light or
cluttered backdrop, large, off-centre, slightly rotated, tinted, JPEG-compressed.

Fashion-MNIST items are light-on-black negatives of product photos; a rendered photo turns
one back into a dark product (of a random dark or saturated colour) on a backdrop.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from embedder.images import decode_image


@dataclass
class ShopperPhoto:
    image: Image.Image  # decoded RGB, as an upload arrives
    box: tuple[int, int, int, int]  # the product's true extent (x0, y0, x1, y1)
    jpeg_bytes: int
    quality: int


def _frame_size(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(rng.integers(200, 1001))
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.67))))
    if aspect >= 1:
        return long_side, max(120, round(long_side / aspect))
    return max(120, round(long_side * aspect)), long_side


def _light_backdrop(rng, w: int, h: int) -> np.ndarray:
    tone = rng.uniform(0.72, 1.0)
    colour = np.clip(tone * (1 + rng.uniform(-0.06, 0.06, 3)), 0, 1)
    angle = rng.uniform(0, 2 * np.pi)
    gx, gy = np.meshgrid(np.linspace(-0.5, 0.5, w, dtype=np.float32), np.linspace(-0.5, 0.5, h, dtype=np.float32))
    ramp = (np.cos(angle) * gx + np.sin(angle) * gy) * rng.uniform(0, 0.2)
    backdrop = colour[None, None, :] - ramp[..., None]
    return backdrop + rng.normal(0, 0.01, (h, w, 1)).astype(np.float32)


def _cluttered_backdrop(rng, w: int, h: int, keep_clear: tuple[int, int, int, int]) -> np.ndarray:
    """A textured surface (blotches, stripes or grain) with other things lying beside the product."""
    base = np.clip(rng.uniform(0.55, 0.95) * (1 + rng.uniform(-0.12, 0.12, 3)), 0, 1).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # blotchy: low-frequency noise
        cells = int(rng.integers(4, 16))
        grid = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        texture = np.asarray(Image.fromarray(((grid + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                             np.float32) / 127.5 - 1
        surface = base + texture * rng.uniform(0.08, 0.22)
    elif kind == 1:  # stripes or planks
        angle = rng.uniform(0, np.pi)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        period = rng.uniform(0.03, 0.15) * max(w, h)
        wave = np.sin(2 * np.pi * (np.cos(angle) * gx + np.sin(angle) * gy) / period)
        surface = base + (wave * rng.uniform(0.05, 0.18))[..., None]
    else:  # grain
        surface = base + rng.normal(0, rng.uniform(0.03, 0.08), (h, w, 1)).astype(np.float32)
    surface = surface + rng.normal(0, 0.015, (h, w, 3)).astype(np.float32)
    canvas = Image.fromarray((np.clip(surface, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    kx0, ky0, kx1, ky1 = keep_clear
    for _ in range(int(rng.integers(3, 9))):
        for _attempt in range(20):
            sw, sh = (rng.uniform(0.05, 0.25, 2) * np.array([w, h])).astype(int) + 4
            x0, y0 = int(rng.integers(-sw // 2, w - sw // 2)), int(rng.integers(-sh // 2, h - sh // 2))
            if x0 + sw < kx0 or x0 > kx1 or y0 + sh < ky0 or y0 > ky1:
                fill = tuple(int(v) for v in rng.integers(40, 240, 3))
                shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
                shape((x0, y0, x0 + sw, y0 + sh), fill=fill)
                break
    return np.asarray(canvas, np.float32) / 255.0


def _product_colour(rng) -> np.ndarray:
    if rng.random() < 0.3:  # a saturated colour (a red T-shirt)
        colour = rng.uniform(0.0, 0.2, 3)
        colour[rng.integers(3)] = rng.uniform(0.55, 0.9)
        return colour.astype(np.float32)
    return rng.uniform(0.0, 0.4, 3).astype(np.float32)


def _soft_shadow(rng, alpha: np.ndarray, w: int, h: int, x0: int, y0: int, side: int) -> np.ndarray:
    """The darkening (h, w) of the product's drop shadow: its silhouette moved a little (lit from one
    side), blurred into a soft penumbra, darkening the backdrop by 15-45% where it is full."""
    silhouette = np.zeros((h, w), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(0.02, 0.08) * side
    dx, dy = round(np.cos(angle) * shift), round(np.sin(angle) * shift)
    ah, aw = alpha.shape
    ys, xs = slice(max(0, y0 + dy), min(h, y0 + dy + ah)), slice(max(0, x0 + dx), min(w, x0 + dx + aw))
    silhouette[ys, xs] = np.clip(alpha * 3, 0, 1)[ys.start - y0 - dy:ys.stop - y0 - dy, xs.start - x0 - dx:xs.stop - x0 - dx]
    blur = rng.uniform(0.02, 0.08) * side
    soft = np.asarray(Image.fromarray((silhouette * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur)),
                      np.float32) / 255.0
    return soft * rng.uniform(0.15, 0.45)


def render(item: np.ndarray, rng: np.random.Generator, cluttered: bool, opaque: bool = False,
           shadow: bool = False, shadow_scale: float = 1.0) -> ShopperPhoto:
    """One 28x28 light-on-black item -> a shopper photo of it and the product's true box.

    By default the item's intensity is the product's opacity: its faint parts let the backdrop
    through. opaque: the product covers the backdrop wherever its intensity reaches a fifth of full
    scale, its faint parts drawn light (as a light part of a real product is), not see-through.
    shadow: the product casts a soft drop shadow on the backdrop (as in most product photos on a table
    or a studio sweep); the true box is still the product's own. shadow_scale multiplies its darkening
    after the same random draws: 0 gives the same photo without its shadow."""
    w, h = _frame_size(rng)
    side = max(8, round(rng.uniform(0.35, 0.85) * min(w, h)))
    alpha_image = Image.fromarray(item).resize((side, side), Image.BICUBIC)
    alpha_image = alpha_image.rotate(rng.uniform(-10, 10), Image.BILINEAR, expand=True)
    alpha = np.asarray(alpha_image, np.float32) / 255.0
    ah, aw = alpha.shape
    aw, ah = min(aw, w), min(ah, h)
    alpha = alpha[:ah, :aw]
    x0, y0 = int(rng.integers(0, w - aw + 1)), int(rng.integers(0, h - ah + 1))
    ys, xs = np.nonzero(alpha > 0.1)
    box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
    backdrop = _cluttered_backdrop(rng, w, h, box) if cluttered else _light_backdrop(rng, w, h)
    if shadow:
        backdrop = backdrop * (1 - shadow_scale * _soft_shadow(rng, alpha, w, h, x0, y0, side)[..., None])
    region = backdrop[y0:y0 + ah, x0:x0 + aw]
    a = alpha[..., None]
    colour = _product_colour(rng)
    if opaque:
        cover = np.clip(a / 0.2, 0, 1)
        backdrop[y0:y0 + ah, x0:x0 + aw] = region * (1 - cover) + (1 - a * (1 - colour)) * cover
    else:
        backdrop[y0:y0 + ah, x0:x0 + aw] = region * (1 - a) + colour * a
    photo = np.clip(backdrop * rng.uniform(0.88, 1.12, 3).astype(np.float32), 0, 1)
    quality = int(rng.integers(70, 96))
    buffer = io.BytesIO()
    Image.fromarray((photo * 255 + 0.5).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    data = buffer.getvalue()
    return ShopperPhoto(decode_image(data), box, len(data), quality)
