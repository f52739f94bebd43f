"""Procedural colour products and their photographs, for benchmarks/colour_products.py.

A product is a shape (a Fashion-MNIST silhouette with its folds as shading) in its own colour, pattern
(plain, stripes, checks, dots), print (a logo: disc, square, triangle or bar, in a colour and place of
its own) and material (a fixed texture grain and a sheen). Its photographs differ as a store's do:
pose (tilt, mirror), light (brightness, contrast, tint), backdrop (plain or graded studio colours),
crop (cut at an edge) and scale. A shopper's photo of it differs more: a real scene behind it
(scikit-image's photographs and textures, never used for catalog photos), dimmer and tinted light,
blur and heavy JPEG compression.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHOPPER_SCENES = ("brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket", "motorcycle_left", "page",
                  "camera")
PATTERNS = ("plain", "stripes", "checks", "dots")
LOGOS = ("none", "disc", "square", "triangle", "bar")
SIDE = 160  # px: a product is drawn once at this size, then photographed


@dataclass(frozen=True)
class Product:
    item: int  # the Fashion-MNIST image giving its shape
    colour: tuple[float, float, float]
    pattern: str
    pattern_colour: tuple[float, float, float]
    period: float  # px at SIDE
    angle: float  # radians
    logo: str
    logo_colour: tuple[float, float, float]
    logo_at: tuple[float, float]  # centre, as a share of the shape's box
    logo_size: float
    grain: float  # texture amplitude
    sheen: float
    seed: int


def random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    hue, sat, val = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.3, 0.95)
    rgb = np.array(Image.fromarray(np.uint8([[[hue * 255, sat * 255, val * 255]]]), "HSV").convert("RGB"))[0, 0]
    return tuple(float(c) / 255 for c in rgb)


def random_product(item: int, rng: np.random.Generator) -> Product:
    return Product(item=item, colour=random_colour(rng), pattern=PATTERNS[rng.integers(len(PATTERNS))],
                   pattern_colour=random_colour(rng), period=float(rng.uniform(0.05, 0.16) * SIDE), angle=float(rng.uniform(0, np.pi)),
                   logo=LOGOS[rng.integers(len(LOGOS))], logo_colour=random_colour(rng),
                   logo_at=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.25, 0.6))),
                   logo_size=float(rng.uniform(0.12, 0.25)), grain=float(rng.uniform(0.0, 0.12)),
                   sheen=float(rng.uniform(0.0, 0.3)), seed=int(rng.integers(2**31)))


def draw_product(product: Product, shape: np.ndarray) -> Image.Image:
    """The product as an RGBA image of SIDE px (alpha: its silhouette)."""
    grey = np.asarray(Image.fromarray(shape).resize((SIDE, SIDE), Image.Resampling.BICUBIC), np.float32) / 255.0
    alpha = np.clip(grey * 2.5, 0, 1)
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    u = x * np.cos(product.angle) + y * np.sin(product.angle)
    v = -x * np.sin(product.angle) + y * np.cos(product.angle)
    if product.pattern == "stripes":
        mask = (u // product.period) % 2 == 0
    elif product.pattern == "checks":
        mask = ((u // product.period) + (v // product.period)) % 2 == 0
    elif product.pattern == "dots":
        mask = ((u % product.period - product.period / 2) ** 2 + (v % product.period - product.period / 2) ** 2
                < (product.period / 4) ** 2)
    else:
        mask = np.zeros_like(u, bool)
    rgb = np.where(mask[..., None], np.float32(product.pattern_colour), np.float32(product.colour))
    rows, cols = np.nonzero(alpha > 0.3)
    if product.logo != "none" and len(rows):
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        cx = left + product.logo_at[0] * (right - left)
        cy = top + product.logo_at[1] * (bottom - top)
        r = product.logo_size * (right - left) / 2
        logo = Image.new("L", (SIDE, SIDE), 0)
        draw = ImageDraw.Draw(logo)
        box = (cx - r, cy - r, cx + r, cy + r)
        {"disc": lambda: draw.ellipse(box, fill=255), "square": lambda: draw.rectangle(box, fill=255),
         "triangle": lambda: draw.polygon([(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)], fill=255),
         "bar": lambda: draw.rectangle((cx - 1.6 * r, cy - r / 3, cx + 1.6 * r, cy + r / 3), fill=255)}[product.logo]()
        on = (np.asarray(logo, np.float32) / 255)[..., None]
        rgb = rgb * (1 - on) + np.float32(product.logo_colour) * on
    shading = 0.55 + 0.45 * np.clip(grey / max(float(grey.max()), 1e-6), 0, 1)
    grain = np.random.default_rng(product.seed).normal(0, product.grain, (SIDE, SIDE)).astype(np.float32)
    sheen = product.sheen * np.clip(1 - np.hypot(x - SIDE * 0.35, y - SIDE * 0.3) / (SIDE * 0.5), 0, 1)
    rgb = np.clip(rgb * (shading + grain)[..., None] + sheen[..., None], 0, 1)
    rgba = np.dstack([rgb * 255, alpha * 255]).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def scenes() -> list[np.ndarray]:
    from skimage import data

    loaded = []
    for name in SHOPPER_SCENES:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # a scene scikit-image would download: not here
            continue
        loaded.append(np.dstack([image] * 3) if image.ndim == 2 else image[..., :3])
    return loaded


def backdrop(rng: np.random.Generator, side: int, shopper: bool, scene_images: list[np.ndarray]) -> Image.Image:
    if shopper and scene_images:
        scene = scene_images[rng.integers(len(scene_images))]
        h, w = scene.shape[:2]
        crop = int(rng.uniform(0.3, 0.8) * min(h, w))
        top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        return Image.fromarray(scene[top:top + crop, left:left + crop]).resize((side, side))
    low, high = np.float32(rng.uniform(0.78, 1.0, 3)), np.float32(rng.uniform(0.78, 1.0, 3))
    ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None, None] if rng.random() < 0.5 else np.zeros((side, 1, 1), np.float32)
    pixels = (low + (high - low) * ramp) * np.ones((side, side, 3), np.float32)
    return Image.fromarray((pixels * 255).astype(np.uint8))


def photograph(drawn: Image.Image, rng: np.random.Generator, *, shopper: bool, side: int,
               scene_images: list[np.ndarray]) -> Image.Image:
    """One photo of a drawn product: pose, scale, crop, backdrop, light; a shopper's is rougher."""
    product = drawn.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.3 else drawn
    product = product.rotate(float(rng.uniform(-15, 15) if shopper else rng.uniform(-8, 8)),
                             resample=Image.Resampling.BILINEAR, expand=True)
    scale = rng.uniform(0.45, 0.8) if shopper else rng.uniform(0.6, 0.95)
    size = max(8, int(side * scale))
    product = product.resize((size, size), Image.Resampling.BILINEAR)
    canvas = backdrop(rng, side, shopper, scene_images)
    slack = side - size
    cut = 0.12 * size if rng.random() < 0.25 else 0  # now and then the product runs off an edge
    x, y = (int(rng.uniform(-cut, slack + cut)) for _ in range(2))
    canvas.paste(product, (x, y), product)
    pixels = np.asarray(canvas, np.float32) / 255
    brightness = rng.uniform(0.55, 1.0) if shopper else rng.uniform(0.85, 1.12)
    contrast = rng.uniform(0.7, 1.1) if shopper else rng.uniform(0.9, 1.1)
    tint = rng.uniform(0.82, 1.18, 3) if shopper else rng.uniform(0.95, 1.05, 3)
    mean = pixels.mean()
    pixels = np.clip(((pixels - mean) * contrast + mean) * brightness * tint, 0, 1)
    pixels += rng.normal(0, 0.02 if shopper else 0.006, pixels.shape)
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    if shopper:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=int(rng.integers(35, 70)))
        image = Image.open(io.BytesIO(out.getvalue())).convert("RGB")
    return image


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)
