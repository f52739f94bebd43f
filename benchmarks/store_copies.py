"""Duplicate listings as stores make them: one catalog photo saved again after one of the everyday
edits a shop's tools make, each kind drawn with its own seeded parameters.

    copy_of(image, kind, rng) -> PIL image        (every kind ends in a JPEG re-encoding)

Kinds (KINDS): re-encoded (JPEG quality 40-70), resized (75-90% or 110-150%), shifted (1-3 px each
way, the gap filled with the photo's edge colour), re-lit (brighter or darker by 6-20%, a slight
contrast change), cropped (4-10% of the frame cut off, unevenly), mirrored (left-right),
watermarked (the photo enlarged 4x, as stores show it, under a semi-transparent text mark in a
corner), bordered (a 2-4 px frame of white, grey or the background colour, on every side).
The hygiene benchmark plants them (benchmarks.hygiene) and the tests use them (tests/test_hygiene.py).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

KINDS = ("re-encoded", "resized", "shifted", "re-lit", "cropped", "mirrored", "watermarked", "bordered")
WATERMARKS = ("SALE", "(c) SHOP", "NEW", "shop.com")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """The photo after a JPEG save at this quality (decoded back)."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=int(quality))
    out.seek(0)
    return Image.open(out).convert("RGB")


def _either_way(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high) * rng.choice([-1, 1]))


def _edge_colour(image: Image.Image) -> tuple[int, ...]:
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    w = image.width
    ring = np.concatenate([pixels[:w], pixels[-w:], pixels[::w], pixels[w - 1::w]])
    return tuple(int(v) for v in np.median(ring, axis=0))


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    canvas = Image.new("RGB", image.size, _edge_colour(image))
    canvas.paste(image.convert("RGB"), (dx, dy))
    return canvas


def watermarked(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    big = image.convert("RGB").resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
    layer = Image.new("RGBA", big.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text = str(rng.choice(WATERMARKS))
    left, top, right, bottom = draw.textbbox((0, 0), text)
    margin = 3
    x = margin if rng.random() < 0.5 else big.width - (right - left) - margin
    y = margin if rng.random() < 0.5 else big.height - (bottom - top) - margin
    alpha = int(rng.uniform(0.35, 0.6) * 255)
    draw.text((x - left, y - top), text, fill=(255, 255, 255, alpha))
    return Image.alpha_composite(big.convert("RGBA"), layer).convert("RGB")


def copy_of(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A store's copy of `image` of this kind (KINDS), parameters drawn from rng."""
    image = image.convert("RGB")
    w, h = image.size
    if kind == "re-encoded":
        return jpeg(image, rng.integers(40, 71))
    quality = int(rng.integers(75, 91))
    if kind == "resized":
        scale = float(rng.uniform(0.75, 0.9)) if rng.random() < 0.5 else float(rng.uniform(1.1, 1.5))
        out = image.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BICUBIC)
    elif kind == "shifted":
        dx, dy = 0, 0
        while dx == 0 and dy == 0:
            dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
        out = shifted(image, dx, dy)
    elif kind == "re-lit":
        out = ImageEnhance.Brightness(image).enhance(1 + _either_way(rng, 0.06, 0.20))
        out = ImageEnhance.Contrast(out).enhance(1 + _either_way(rng, 0.0, 0.10))
    elif kind == "cropped":
        cut = float(rng.uniform(0.04, 0.10))
        share = rng.dirichlet(np.ones(4)) * cut * 2  # of each side's length, over the four sides
        left, top, right, bottom = (int(round(s * n)) for s, n in zip(share, (w, h, w, h)))
        out = image.crop((left, top, w - right, h - bottom))
    elif kind == "mirrored":
        out = ImageOps.mirror(image)
    elif kind == "watermarked":
        out = watermarked(image, rng)
    elif kind == "bordered":
        colour = [(255, 255, 255), (200, 200, 200), _edge_colour(image)][int(rng.integers(0, 3))]
        out = ImageOps.expand(image, border=int(rng.integers(2, 5)), fill=colour)
    else:
        raise ValueError(f"unknown kind of copy {kind!r}; one of {', '.join(KINDS)}")
    return jpeg(out, quality)
