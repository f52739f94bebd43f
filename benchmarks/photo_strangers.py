"""Scenes of things the catalog does not sell, framed as a shopper frames a product: sample
photographs (an astronaut, coffee, a cat, a rocket, coins, a camera man, a clock), handwritten
digits on paper, simple objects (a ball, a mug, a toy car) on a table, and bare textures.

stranger_scene returns a float32 (h, w, 3) RGB scene in [0, 1]; the caller adds the phone's JPEG.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks import photo_surfaces as surfaces
from benchmarks.photo_camera import lighting

SUBJECT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera", "clock", "horse", "colorwheel",
                  "logo", "moon", "text")


def _frame(rng) -> tuple[int, int]:
    from benchmarks.photo_families import frame_size  # one definition of a phone frame

    return frame_size(rng)


def photograph(rng) -> np.ndarray:
    w, h = _frame(rng)
    return surfaces.photo_region(rng, h, w, str(rng.choice(SUBJECT_PHOTOS)), zoom=(0.6, 1.0))


def handwritten_digits(rng) -> np.ndarray:
    """One to four digits written with a marker on paper (slanted, uneven strokes)."""
    w, h = _frame(rng)
    paper = surfaces.plain(rng, h, w, surfaces.random_colour(rng, (0.8, 0.97), (0.0, 0.15)))
    canvas = Image.fromarray((paper * 255).astype(np.uint8))
    text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 5))))
    size = int(min(w, h) * rng.uniform(0.3, 0.7) / max(1, len(text)) * 1.6)
    font = ImageFont.load_default(size=max(12, size))
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    x, y = rng.uniform(0.05, 0.3) * w, rng.uniform(0.1, 0.4) * h
    draw.text((x, y), text, fill=255, font=font, stroke_width=max(1, size // 14), stroke_fill=255)
    shear = np.float32([[1, rng.uniform(-0.35, 0.1), 0], [0, 1, 0]])
    ink_mask = cv2.warpAffine(np.asarray(layer, np.float32) / 255, shear, (w, h))
    ink_mask = cv2.GaussianBlur(ink_mask, (0, 0), 0.8)
    ink = surfaces.random_colour(rng, (0.05, 0.3), (0.0, 0.9))
    scene = np.asarray(canvas, np.float32) / 255
    scene = scene * (1 - ink_mask[..., None]) + ink * ink_mask[..., None]
    return lighting(scene, rng, 0.15, 0.2)


def simple_object(rng) -> np.ndarray:
    """A ball, a mug or a toy car on a plain or wooden table."""
    w, h = _frame(rng)
    table = surfaces.wood(rng, h, w) if rng.random() < 0.4 else surfaces.plain(
        rng, h, w, surfaces.random_colour(rng, (0.55, 0.95), (0.0, 0.3)))
    canvas = Image.fromarray((table * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    colour = tuple(int(v) for v in surfaces.random_colour(rng, (0.1, 0.7), (0.3, 1.0)) * 255)
    dark = tuple(int(v * 0.5) for v in colour)
    s = min(w, h) * rng.uniform(0.3, 0.7)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    kind = int(rng.integers(3))
    if kind == 0:  # ball: shaded disc with a highlight
        r = s / 2
        for step in range(12):  # discs shrinking towards the highlight, each lighter
            k = step / 12
            rk, ox, oy = r * (1 - k), cx - 0.35 * r * k, cy - 0.35 * r * k
            tone = tuple(min(255, int(c * (0.55 + 0.8 * k))) for c in colour)
            draw.ellipse((ox - rk, oy - rk, ox + rk, oy + rk), fill=tone)
    elif kind == 1:  # mug: body, rim, handle
        bw, bh = s * 0.55, s * 0.7
        draw.ellipse((cx + bw * 0.3, cy - bh * 0.3, cx + bw * 0.85, cy + bh * 0.25), outline=dark,
                     width=max(3, int(s * 0.06)))
        draw.rectangle((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), fill=colour)
        draw.ellipse((cx - bw / 2, cy - bh / 2 - s * 0.06, cx + bw / 2, cy - bh / 2 + s * 0.06), fill=dark)
    else:  # toy car: body, cabin, wheels
        draw.rounded_rectangle((cx - s / 2, cy - s * 0.1, cx + s / 2, cy + s * 0.15), radius=s * 0.05, fill=colour)
        draw.polygon([(cx - s * 0.25, cy - s * 0.1), (cx - s * 0.15, cy - s * 0.3), (cx + s * 0.15, cy - s * 0.3),
                      (cx + s * 0.28, cy - s * 0.1)], fill=dark)
        for wx in (cx - s * 0.3, cx + s * 0.3):
            draw.ellipse((wx - s * 0.1, cy + s * 0.05, wx + s * 0.1, cy + s * 0.25), fill=(25, 25, 25))
    scene = np.asarray(canvas, np.float32) / 255
    return lighting(scene, rng, 0.15, 0.2)


def bare_texture(rng) -> np.ndarray:
    """The camera pointed at the floor or a cloth: a full-frame texture and nothing on it."""
    w, h = _frame(rng)
    surface = [surfaces.carpet, surfaces.gravel, surfaces.grass, surfaces.speckle, surfaces.stripes,
               surfaces.checks, surfaces.weave, surfaces.wood, surfaces.marble][int(rng.integers(9))]
    return lighting(surface(rng, h, w), rng, 0.15, 0.2)


STRANGERS = (photograph, handwritten_digits, simple_object, bare_texture)


def stranger_scene(rng) -> np.ndarray:
    return STRANGERS[int(rng.integers(len(STRANGERS)))](rng)
