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
from benchmarks.photo_camera import frame_size, lighting

SUBJECT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera", "clock", "horse", "colorwheel",
                  "logo", "moon", "text")


def photograph(rng) -> np.ndarray:
    w, h = frame_size(rng)
    return surfaces.photo_region(rng, h, w, str(rng.choice(SUBJECT_PHOTOS)), zoom=(0.6, 1.0))


def _loop(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    return [(cx + rx * np.sin(t), cy - ry * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 17)]


# pen strokes of each digit in a unit box (x right, y down), as a hand writes them
DIGIT_STROKES = {
    0: [_loop(0.5, 0.5, 0.3, 0.4)],
    1: [[(0.35, 0.25), (0.55, 0.1), (0.52, 0.9)]],
    2: [[(0.2, 0.3), (0.35, 0.12), (0.6, 0.1), (0.78, 0.25), (0.7, 0.45), (0.2, 0.9), (0.85, 0.88)]],
    3: [[(0.2, 0.15), (0.7, 0.12), (0.75, 0.3), (0.45, 0.47), (0.78, 0.62), (0.72, 0.85), (0.2, 0.88)]],
    4: [[(0.55, 0.1), (0.15, 0.65), (0.85, 0.65)], [(0.62, 0.35), (0.6, 0.92)]],
    5: [[(0.78, 0.1), (0.28, 0.1), (0.24, 0.45), (0.6, 0.4), (0.8, 0.6), (0.7, 0.85), (0.2, 0.88)]],
    6: [[(0.7, 0.1), (0.35, 0.35), (0.22, 0.7), (0.4, 0.9), (0.7, 0.85), (0.75, 0.6), (0.5, 0.5), (0.25, 0.65)]],
    7: [[(0.15, 0.12), (0.85, 0.12), (0.4, 0.9)]],
    8: [_loop(0.5, 0.28, 0.22, 0.18), _loop(0.5, 0.7, 0.28, 0.22)],
    9: [_loop(0.5, 0.3, 0.25, 0.2), [(0.75, 0.3), (0.68, 0.92)]],
}


def handwritten_digits(rng) -> np.ndarray:
    """One to four digits written with a pen or marker on paper: wobbly strokes, a slant, or
    (one in three) a printed font, as on a receipt or a price tag."""
    w, h = frame_size(rng)
    paper = surfaces.plain(rng, h, w, surfaces.random_colour(rng, (0.8, 0.97), (0.0, 0.15)))
    digits = [int(d) for d in rng.integers(0, 10, int(rng.integers(1, 5)))]
    cell = min(h * rng.uniform(0.3, 0.7), w * 0.85 / len(digits))
    x, y = rng.uniform(0.05, 0.95) * (w - cell * len(digits)), rng.uniform(0.05, 0.95) * (h - cell)
    if rng.random() < 1 / 3:
        layer = Image.new("L", (w, h), 0)
        font = ImageFont.load_default(size=max(12, int(cell)))
        ImageDraw.Draw(layer).text((x, y), "".join(map(str, digits)), fill=255, font=font)
        ink_mask = np.asarray(layer, np.float32) / 255
    else:
        ink_mask = np.zeros((h, w), np.float32)
        thickness = max(2, int(cell * rng.uniform(0.04, 0.12)))
        slant = rng.uniform(-0.3, 0.1)
        for k, digit in enumerate(digits):
            for stroke in DIGIT_STROKES[digit]:
                pts = np.array(stroke) + rng.normal(0, 0.025, (len(stroke), 2))
                px = x + (k + pts[:, 0] - slant * (1 - pts[:, 1])) * cell * 0.8
                py = y + pts[:, 1] * cell
                cv2.polylines(ink_mask, [np.stack([px, py], 1).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA)
    ink_mask = cv2.GaussianBlur(ink_mask, (0, 0), 0.8)
    ink = surfaces.random_colour(rng, (0.05, 0.3), (0.0, 0.9))
    scene = paper * (1 - ink_mask[..., None]) + ink * ink_mask[..., None]
    return lighting(scene.astype(np.float32), rng, 0.15, 0.2)


def simple_object(rng) -> np.ndarray:
    """A ball, a mug or a toy car on a plain or wooden table."""
    w, h = frame_size(rng)
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
    w, h = frame_size(rng)
    surface = [surfaces.carpet, surfaces.gravel, surfaces.grass, surfaces.speckle, surfaces.stripes,
               surfaces.checks, surfaces.weave, surfaces.wood, surfaces.marble][int(rng.integers(9))]
    return lighting(surface(rng, h, w), rng, 0.15, 0.2)


STRANGERS = (photograph, handwritten_digits, simple_object, bare_texture)


def stranger_scene(rng) -> np.ndarray:
    return STRANGERS[int(rng.integers(len(STRANGERS)))](rng)
