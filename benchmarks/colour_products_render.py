"""Procedural colour products and their photographs, for benchmarks/colour_products.py.

Stanford Online Products in spirit: products come in families, and the products of a family differ
subtly. A family is a silhouette (a Fashion-MNIST shape with its folds as shading) with a colour, a
pattern (plain, stripes, checks, dots), a print (a logo: disc, square, triangle or bar) and a material
(a texture grain and a sheen). Each product of the family is that design with small changes of its own:
a close shade of the colours, the pattern a little finer or coarser, the print moved, resized, of
another shape or colour, the cut a little wider or narrower, another grain and sheen. Its photographs
differ as a store's do: pose (tilt; never mirrored), light (brightness, contrast, a slight tint), backdrop
(light, coloured or textured, plain or graded: the strongest difference), crop (cut at an edge) and scale. A shopper's photo of it differs
more: a real scene behind it (scikit-image's photographs and textures, never used for catalog photos),
dimmer and tinted light, now and then mirrored, blur and heavy JPEG compression.

Everything is drawn from seeds: the same family and product numbers give the same products.
"""
from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass, replace
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
    colour: tuple[float, float, float]  # HSV in [0, 1]
    pattern: str
    pattern_colour: tuple[float, float, float]  # HSV
    period: float  # px at SIDE
    angle: float  # radians
    logo: str
    logo_colour: tuple[float, float, float]  # HSV
    logo_at: tuple[float, float]  # centre, as a share of the shape's box
    logo_size: float
    grain: float  # texture amplitude
    sheen: float
    width: float  # the cut: horizontal stretch of the silhouette
    seed: int


@dataclass(frozen=True)
class Subtlety:
    """How far a family's products stray from its design (the benchmark's difficulty)."""
    hue: float = 0.06  # +- of the hue (a full turn is 1)
    saturation: float = 0.15
    value: float = 0.12
    period: float = 0.3  # +- share of the pattern's period
    logo_move: float = 0.12  # +- share of the shape's box
    logo_change: float = 0.6  # chance that a product's print has another shape or colour
    width: float = 0.08  # +- share of the cut's width


def rgb(hsv: tuple[float, float, float]) -> np.ndarray:
    return np.float32(colorsys.hsv_to_rgb(hsv[0] % 1.0, *np.clip(hsv[1:], 0.0, 1.0)))


def random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return float(rng.random()), float(rng.uniform(0.35, 0.95)), float(rng.uniform(0.3, 0.9))


def random_family(item: int, rng: np.random.Generator) -> Product:
    """A family's design: the product every product of the family varies."""
    return Product(item=item, colour=random_colour(rng), pattern=PATTERNS[rng.integers(len(PATTERNS))],
                   pattern_colour=random_colour(rng), period=float(rng.uniform(0.06, 0.14) * SIDE),
                   angle=float(rng.uniform(0, np.pi)), logo=LOGOS[rng.integers(1, len(LOGOS))],
                   logo_colour=random_colour(rng), logo_at=(float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.3, 0.55))),
                   logo_size=float(rng.uniform(0.15, 0.25)), grain=float(rng.uniform(0.0, 0.1)),
                   sheen=float(rng.uniform(0.0, 0.25)), width=1.0, seed=int(rng.integers(2**31)))


def variant(family: Product, rng: np.random.Generator, subtlety: Subtlety = Subtlety()) -> Product:
    """One product of a family: its design with small changes of its own."""
    s = subtlety

    def shade(hsv):
        return (hsv[0] + rng.uniform(-s.hue, s.hue), float(np.clip(hsv[1] + rng.uniform(-s.saturation, s.saturation), 0.2, 1)),
                float(np.clip(hsv[2] + rng.uniform(-s.value, s.value), 0.2, 0.95)))
    logo, logo_colour = family.logo, shade(family.logo_colour)
    if rng.random() < s.logo_change:
        if rng.random() < 0.5:
            logo = LOGOS[rng.integers(len(LOGOS))]
        else:
            logo_colour = random_colour(rng)
    return replace(family, colour=shade(family.colour), pattern_colour=shade(family.pattern_colour),
                   period=float(family.period * (1 + rng.uniform(-s.period, s.period))),
                   angle=float(family.angle + rng.uniform(-0.15, 0.15)), logo=logo, logo_colour=logo_colour,
                   logo_at=(float(family.logo_at[0] + rng.uniform(-s.logo_move, s.logo_move)),
                            float(family.logo_at[1] + rng.uniform(-s.logo_move, s.logo_move))),
                   logo_size=float(family.logo_size * rng.uniform(0.8, 1.25)),
                   grain=float(np.clip(family.grain + rng.uniform(-0.04, 0.04), 0, 0.14)),
                   sheen=float(np.clip(family.sheen + rng.uniform(-0.1, 0.1), 0, 0.35)),
                   width=float(1 + rng.uniform(-s.width, s.width)), seed=int(rng.integers(2**31)))


def family_products(family_seed: int, item: int, count: int, subtlety: Subtlety = Subtlety()) -> list[Product]:
    """The `count` products of the family `family_seed` (shape: Fashion-MNIST image `item`)."""
    rng = np.random.default_rng([family_seed, item])
    family = random_family(item, rng)
    return [variant(family, rng, subtlety) for _ in range(count)]


def draw_product(product: Product, shape: np.ndarray) -> Image.Image:
    """The product as an RGBA image of SIDE px (alpha: its silhouette)."""
    wide = max(8, int(round(SIDE * product.width)))
    grey_image = Image.fromarray(shape).resize((wide, SIDE), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (SIDE, SIDE), 0)
    canvas.paste(grey_image.crop(((wide - SIDE) // 2, 0, (wide - SIDE) // 2 + SIDE, SIDE)) if wide > SIDE else grey_image,
                 (0, 0) if wide > SIDE else ((SIDE - wide) // 2, 0))
    grey = np.asarray(canvas, np.float32) / 255.0
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
    pixels = np.where(mask[..., None], rgb(product.pattern_colour), rgb(product.colour))
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
        pixels = pixels * (1 - on) + rgb(product.logo_colour) * on
    shading = 0.55 + 0.45 * np.clip(grey / max(float(grey.max()), 1e-6), 0, 1)
    grain = np.random.default_rng(product.seed).normal(0, product.grain, (SIDE, SIDE)).astype(np.float32)
    sheen = product.sheen * np.clip(1 - np.hypot(x - SIDE * 0.35, y - SIDE * 0.3) / (SIDE * 0.5), 0, 1)
    pixels = np.clip(pixels * (shading + grain)[..., None] + sheen[..., None], 0, 1)
    rgba = np.dstack([pixels * 255, alpha * 255]).astype(np.uint8)
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
    # A studio backdrop: light, coloured or textured (a cloth, a paper, boards), plain or graded.
    kind = rng.random()
    if kind < 0.3:
        low, high = np.float32(rng.uniform(0.78, 1.0, 3)), np.float32(rng.uniform(0.78, 1.0, 3))
    else:
        hue, sat, val = rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.35, 0.95)
        low = rgb((hue, sat, val))
        high = rgb((hue + rng.uniform(-0.08, 0.08), sat, float(np.clip(val + rng.uniform(-0.15, 0.15), 0.4, 1.0))))
    ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None, None] if rng.random() < 0.5 else np.zeros((side, 1, 1), np.float32)
    pixels = (low + (high - low) * ramp) * np.ones((side, side, 3), np.float32)
    if kind >= 0.6:  # textured: smooth blotches or a weave of fine lines, of a tenth to a third of the light
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        if rng.random() < 0.5:
            cells = int(rng.integers(3, 9))
            texture = np.asarray(Image.fromarray(rng.uniform(0, 255, (cells, cells)).astype(np.uint8)).resize(
                (side, side), Image.Resampling.BICUBIC), np.float32) / 255 - 0.5
        else:
            period, angle = rng.uniform(4, 12), rng.uniform(0, np.pi)
            texture = 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
        pixels = pixels * (1 + float(rng.uniform(0.1, 0.3)) * texture[..., None])
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def photograph(drawn: Image.Image, rng: np.random.Generator, *, shopper: bool, side: int,
               scene_images: list[np.ndarray], record: dict | None = None) -> Image.Image:
    """One photo of a drawn product: pose, scale, crop, backdrop, light; a shopper's is rougher.
    record: given a dict, it receives "alpha", the product's true share of each pixel of the photo
    (float32, side x side): what a perfect crop would cut out (the same draws, the same photo); "mirrored";
    "light", (mean, contrast, brightness, tint): pixels became ((p - mean) * contrast + mean) * brightness * tint."""
    # A store shows a product the right way round; a shopper's photo may be mirrored (a selfie camera).
    mirrored = shopper and rng.random() < 0.3
    product = drawn.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else drawn
    product = product.rotate(float(rng.uniform(-15, 15) if shopper else rng.uniform(-8, 8)),
                             resample=Image.Resampling.BILINEAR, expand=True)
    scale = rng.uniform(0.45, 0.8) if shopper else rng.uniform(0.6, 0.95)
    size = max(8, int(side * scale))
    product = product.resize((size, size), Image.Resampling.BILINEAR)
    canvas = backdrop(rng, side, shopper, scene_images)
    slack = side - size
    cut = 0.12 * size if rng.random() < (0.25 if shopper else 0.15) else 0  # now and then the product runs off an edge
    x, y = (int(rng.uniform(-cut, slack + cut)) for _ in range(2))
    canvas.paste(product, (x, y), product)
    if record is not None:
        alpha = Image.new("L", canvas.size, 0)
        alpha.paste(product.getchannel("A"), (x, y))
        record["alpha"] = np.asarray(alpha, np.float32) / 255
    pixels = np.asarray(canvas, np.float32) / 255
    brightness = rng.uniform(0.55, 1.0) if shopper else rng.uniform(0.85, 1.15)
    contrast = rng.uniform(0.7, 1.1) if shopper else rng.uniform(0.9, 1.1)
    tint = rng.uniform(0.82, 1.18, 3) if shopper else rng.uniform(0.96, 1.04, 3)
    mean = pixels.mean()
    pixels = np.clip(((pixels - mean) * contrast + mean) * brightness * tint, 0, 1)
    if record is not None:
        record.update(mirrored=bool(mirrored), light=(float(mean), float(contrast), float(brightness),
                                                     tuple(float(t) for t in tint)))
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
