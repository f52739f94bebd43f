"""Free labelled photos: catalog items composited onto generated backdrops, with their exact masks.

What the product mask (embedder/mask.py) and the query-path training learn from. A 28-px
catalog item (light product on black: its intensity is how much product is there) becomes an
opaque product of some material and colour, photographed on one of the backdrops below, under
the light, white balance, blur, noise and JPEG a phone adds. The mask is the product's own
pixels, known exactly because the photo was made from it.

These backdrops are the tuning families: the shopper-photo benchmark reports on others
(benchmarks/photo_families.py, written apart from these), so nothing chosen here is chosen on
the photos that are reported.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from embedder.domain import mask_input
from embedder.regions import context_view
from embedder.domain_settings import DomainSettings
from embedder.images import decode_image

BACKDROPS = ("plain", "gradient", "blotches", "stripes", "checks", "grain", "rings", "marble", "shapes", "dark",
             "leaves", "spectral")
TEXTURED = {"blotches", "stripes", "checks", "grain", "rings", "marble", "shapes", "leaves", "spectral"}
# "leaves" and "spectral" are not any one surface: they are the two classic generic models of natural
# image statistics (occluding shapes of power-law sizes; colour noise with a 1/f^a spectrum), so that
# what learns from composites meets photos of scenes in general, not only the surfaces written here.
# Training items i with i % HELD_OUT_EVERY == 0 are never composited for training (the mask, the query
# path): those with i % (2 * HELD_OUT_EVERY) == 0 calibrate the weak-match notice, the others are
# what the shopper-photo benchmark reports on.
HELD_OUT_EVERY = 10


def training_items(count: int) -> np.ndarray:
    """Indices of Fashion-MNIST training items that composites may be made of."""
    return np.nonzero(np.arange(count) % HELD_OUT_EVERY != 0)[0]


def calibration_items(count: int) -> np.ndarray:
    return np.nonzero(np.arange(count) % (2 * HELD_OUT_EVERY) == 0)[0]


def report_items(count: int) -> np.ndarray:
    return np.nonzero(np.arange(count) % (2 * HELD_OUT_EVERY) == HELD_OUT_EVERY)[0]


@dataclass
class Composite:
    image: Image.Image  # RGB, decoded from the JPEG a phone would upload
    mask: np.ndarray  # bool (H, W): the product's pixels
    box: tuple[int, int, int, int]  # the mask's extent (x0, y0, x1, y1), x1/y1 exclusive
    backdrop: str


def _noise_field(rng, w: int, h: int, cells: int) -> np.ndarray:
    """Smooth noise in -1..1 (h, w): a random grid of `cells` cells, bicubically enlarged."""
    grid = rng.uniform(-1, 1, (max(2, cells), max(2, cells))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1.5, 1.5)


def _octaves(rng, w: int, h: int, base: int, count: int = 4) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for i in range(count):
        out += _noise_field(rng, w, h, base * 2 ** i) / 2 ** i
    return out / 1.9


def _colour(rng, light: tuple[float, float]) -> np.ndarray:
    tone = rng.uniform(*light)
    return np.clip(tone * (1 + rng.uniform(-0.15, 0.15, 3)), 0, 1).astype(np.float32)


def backdrop(kind: str, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A (h, w, 3) float backdrop of one of BACKDROPS."""
    gx, gy = np.meshgrid(np.linspace(0, 1, w, dtype=np.float32), np.linspace(0, 1, h, dtype=np.float32))
    if kind in ("plain", "gradient", "dark"):
        base = _colour(rng, (0.05, 0.3) if kind == "dark" else (0.6, 1.0))
        out = np.broadcast_to(base, (h, w, 3)).copy()
        if kind == "gradient":
            angle = rng.uniform(0, 2 * np.pi)
            out *= (1 + rng.uniform(0.1, 0.35) * (np.cos(angle) * (gx - 0.5) + np.sin(angle) * (gy - 0.5)))[..., None]
        return out
    a, b = _colour(rng, (0.3, 0.95)), _colour(rng, (0.2, 0.9))
    strength = rng.uniform(0.3, 1.0)
    if kind == "blotches":
        t = _octaves(rng, w, h, int(rng.integers(3, 10)))
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.02, 0.12) * max(w, h)
        t = np.sin(2 * np.pi * (np.cos(angle) * gx * w + np.sin(angle) * gy * h) / period)
        t = np.sign(t) * np.abs(t) ** rng.uniform(0.2, 1.0)
    elif kind == "checks":
        period = rng.uniform(0.03, 0.15) * max(w, h)
        t = (np.sin(2 * np.pi * gx * w / period) * np.sin(2 * np.pi * gy * h / period * rng.uniform(0.7, 1.4)))
        t = np.tanh(4 * t)
    elif kind == "grain":
        sigma = rng.uniform(0.4, 2.5)
        t = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma) * sigma * 1.5
        t = t.clip(-1.5, 1.5)
        if rng.random() < 0.5:  # coloured grain: each channel its own speckle
            t3 = np.stack([t, cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma) * sigma * 1.5,
                           t], axis=-1).clip(-1.5, 1.5)
            return np.clip(a + (b - a) * 0.5 * strength * t3, 0, 1)
    elif kind == "rings":  # wood: rings bent by noise
        cx, cy = rng.uniform(-1, 2, 2)
        radius = np.hypot(gx - cx, (gy - cy) * rng.uniform(0.2, 1.0)) * rng.uniform(8, 30)
        t = np.sin(2 * np.pi * (radius + 2 * _octaves(rng, w, h, 3)))
    elif kind == "marble":  # veins: turbulence through a sine
        t = np.sin(rng.uniform(3, 12) * (gx + gy) + 6 * np.abs(_octaves(rng, w, h, 4)))
        t = np.sign(t) * np.abs(t) ** 0.3
    elif kind == "leaves":
        return _dead_leaves(rng, w, h)
    elif kind == "spectral":
        return _spectral(rng, w, h)
    else:  # "shapes": a plain table with other things on it
        out = np.broadcast_to(_colour(rng, (0.4, 1.0)), (h, w, 3)).copy()
        for _ in range(int(rng.integers(2, 8))):
            colour = tuple(float(v) for v in rng.uniform(0, 1, 3))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.uniform(0.03, 0.2) * w) + 2, int(rng.uniform(0.03, 0.2) * h) + 2)
            if rng.random() < 0.5:
                cv2.ellipse(out, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
            else:
                cv2.rectangle(out, (centre[0] - axes[0], centre[1] - axes[1]), (centre[0] + axes[0], centre[1] + axes[1]),
                              colour, -1)
        return out
    return np.clip(a[None, None] + (b - a)[None, None] * (0.5 + 0.5 * strength * t[..., None]), 0, 1)


def _dead_leaves(rng, w: int, h: int) -> np.ndarray:
    """Occluding shapes of power-law sizes covering the frame (the dead-leaves model), each flat,
    shaded or grained."""
    size = max(w, h)
    small, large = rng.uniform(0.015, 0.08) * size, rng.uniform(0.25, 0.8) * size
    count = int(rng.integers(40, 300))
    u = rng.random(count)  # radii with density r^-3 between small and large: many small, a few large
    radii = np.sort(1 / np.sqrt(u / small ** 2 + (1 - u) / large ** 2))[::-1]  # large ones behind
    labels = np.zeros((h, w), np.int32)
    for i, r in enumerate(radii, start=1):
        centre = (int(rng.integers(-int(r), w + int(r))), int(rng.integers(-int(r), h + int(r))))
        axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.3, 1.0))))
        angle = float(rng.uniform(0, 180))
        if rng.random() < 0.6:
            cv2.ellipse(labels, centre, axes, angle, 0, 360, i, -1)
        else:
            corners = cv2.boxPoints((centre, (2 * axes[0], 2 * axes[1]), angle)).astype(np.int32)
            cv2.fillPoly(labels, [corners], i)
    palette = (rng.uniform(0, 1, (count + 1, 3)) * rng.uniform(0.3, 1.0, (count + 1, 1))).astype(np.float32)
    grained = np.where(rng.random(count + 1) < 0.3, rng.uniform(0.1, 0.5, count + 1), 0).astype(np.float32)
    tone = 1 + grained[labels] * _noise_field(rng, w, h, int(rng.integers(8, 60)))
    return np.clip(palette[labels] * tone[..., None], 0, 1)


def _spectral(rng, w: int, h: int) -> np.ndarray:
    """Colour noise whose power falls as 1/f^a (a in 1..2.6: from gravel-like to cloud-like)."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    falloff = np.hypot(fx, fy)
    falloff[0, 0] = 1.0
    amplitude = falloff ** (-rng.uniform(1.0, 2.6) / 2)
    channels = []
    for _ in range(3):
        spectrum = np.fft.rfft2(rng.normal(0, 1, (h, w))) * amplitude
        field = np.fft.irfft2(spectrum, s=(h, w))
        channels.append((field - field.mean()) / (field.std() + 1e-9))
    fields = np.stack(channels, -1).astype(np.float32)
    mixing = rng.normal(0, 1, (3, 3)) * 0.3 + np.eye(3) * rng.uniform(0, 1)  # correlated colours, as in photos
    base = _colour(rng, (0.3, 0.8))
    return np.clip(base + rng.uniform(0.08, 0.25) * fields @ mixing.astype(np.float32), 0, 1)


def _product(item: np.ndarray, rng, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(coverage (s, s), appearance (s, s, 3)) of the item drawn as an opaque product `side` px high."""
    angle = rng.uniform(-12, 12)
    big = cv2.resize(item.astype(np.float32) / 255.0, (side, side), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    big = cv2.warpAffine(big, turn, (side, side), flags=cv2.INTER_LINEAR)
    coverage = np.clip(big / rng.uniform(0.12, 0.3), 0, 1)
    style = rng.random()
    if style < 0.45:  # dark product: darker where the item is bright
        colour = rng.uniform(0.0, 0.35, 3)
    elif style < 0.65:  # saturated
        colour = rng.uniform(0.0, 0.25, 3)
        colour[rng.integers(3)] = rng.uniform(0.5, 0.95)
    elif style < 0.85:  # mid tones
        colour = rng.uniform(0.25, 0.65, 3)
    else:  # light product (a white shirt)
        colour = rng.uniform(0.75, 0.97, 3)
    colour = colour.astype(np.float32)
    # The item's shading: its faint parts are lighter (or, for a light product, darker) parts of the product.
    shade = big[..., None] / max(1e-3, float(big.max()))
    light_product = colour.mean() > 0.6
    appearance = colour * (1.0 - 0.25 * (1 - shade)) if light_product else colour + (1 - colour) * 0.5 * (1 - shade)
    if rng.random() < PRINTED_SHARE:  # a print or weave on the product, in a second colour
        ink = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        weight = print_pattern(rng, side)[..., None] * np.float32(rng.uniform(0.3, 0.9))
        appearance = appearance * (1 - weight) + ink * (0.5 + 0.5 * shade) * weight
    return coverage.astype(np.float32), np.clip(appearance, 0, 1).astype(np.float32)


PRINTED_SHARE = 0.45
PRINTS = ("stripes", "checks", "dots", "blotches", "weave")


def print_pattern(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side) float32 in 0..1: where a print's ink lies on a product `side` px high. Stripes at
    any angle, checks, dots, blotches or a fine weave, at any scale from a few pixels to a fifth of
    the product: what a product's own pattern may be, so that the search learns to look past it."""
    kind = PRINTS[int(rng.integers(len(PRINTS)))]
    gy, gx = np.mgrid[0:side, 0:side].astype(np.float32)
    period = max(3.0, side * float(np.exp(rng.uniform(np.log(0.03), np.log(0.2)))))
    angle = rng.uniform(0, np.pi)
    along = (np.cos(angle) * gx + np.sin(angle) * gy) / period
    across = (-np.sin(angle) * gx + np.cos(angle) * gy) / period
    if kind == "stripes":
        ink = (along % 1) < rng.uniform(0.2, 0.6)
    elif kind == "checks":
        ink = ((along % 1) < 0.5) ^ ((across * rng.uniform(0.5, 2.0) % 1) < 0.5)
    elif kind == "dots":
        ink = np.hypot(along % 1 - 0.5, across % 1 - 0.5) < rng.uniform(0.15, 0.4)
    elif kind == "blotches":
        cells = max(2, round(side / period / 2))
        field = cv2.resize(rng.standard_normal((cells, cells)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
        ink = field > rng.uniform(-0.3, 0.5)
    else:  # a fine two-way weave: soft, not on/off
        return (0.5 + 0.25 * (np.sin(2 * np.pi * along) + np.sin(2 * np.pi * across))).clip(0, 1).astype(np.float32)
    return ink.astype(np.float32)


def composite(item: np.ndarray, rng: np.random.Generator, *, long_side: tuple[int, int] = (240, 900),
              kinds: tuple[str, ...] = BACKDROPS, others: np.ndarray | None = None) -> Composite:
    """One photo of the item on a backdrop of `kinds`, and its exact mask. With `others` (28-px items),
    a quarter of the photos also show one to three smaller other products beside or behind it, which
    are not the product (a shopper's photo of a shelf or a bed with more than one thing on it)."""
    long = int(rng.integers(*long_side))
    aspect = float(np.exp(rng.uniform(np.log(0.65), np.log(1.55))))
    w, h = (long, max(64, round(long / aspect))) if aspect >= 1 else (max(64, round(long * aspect)), long)
    kind = str(kinds[int(rng.integers(len(kinds)))])
    scene = backdrop(kind, rng, w, h)
    side = max(16, round(rng.uniform(0.35, 0.92) * min(w, h)))
    coverage, appearance = _product(item, rng, side)
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    if others is not None and len(others) and kind != "dark" and rng.random() < 0.25:
        scene = _with_other_products(scene, others, rng, side)
    full = np.zeros((h, w), np.float32)
    full[y0:y0 + side, x0:x0 + side] = coverage
    paint = np.zeros((h, w, 3), np.float32)
    paint[y0:y0 + side, x0:x0 + side] = appearance
    if rng.random() < 0.5:  # a drop shadow on the backdrop
        shift = rng.uniform(-0.06, 0.06, 2) * side
        moved = cv2.warpAffine(full, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (w, h))
        soft = cv2.GaussianBlur(moved, (0, 0), rng.uniform(0.01, 0.08) * side + 0.5)
        scene = scene * (1 - rng.uniform(0.1, 0.5) * soft[..., None])
    photo = scene * (1 - full[..., None]) + paint * full[..., None]
    photo = _camera(photo, rng)
    quality = int(rng.integers(55, 96))
    buffer = io.BytesIO()
    Image.fromarray((photo.clip(0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    mask = full >= 0.5
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, w, h)
    return Composite(decode_image(buffer.getvalue()), mask, box, kind)


def _with_other_products(scene: np.ndarray, others: np.ndarray, rng, side: int) -> np.ndarray:
    """The scene with one to three smaller products painted on it, partly out of frame where they fall so."""
    h, w, _ = scene.shape
    for _ in range(int(rng.integers(1, 4))):
        small = max(12, round(side * rng.uniform(0.2, 0.55)))
        coverage, appearance = _product(others[int(rng.integers(len(others)))], rng, small)
        x, y = int(rng.integers(-small // 3, w - 2 * small // 3)), int(rng.integers(-small // 3, h - 2 * small // 3))
        sx0, sy0, sx1, sy1 = max(0, -x), max(0, -y), min(small, w - x), min(small, h - y)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        cov = coverage[sy0:sy1, sx0:sx1, None]
        region = scene[y + sy0:y + sy1, x + sx0:x + sx1]
        scene[y + sy0:y + sy1, x + sx0:x + sx1] = region * (1 - cov) + appearance[sy0:sy1, sx0:sx1] * cov
    return scene


def _camera(photo: np.ndarray, rng) -> np.ndarray:
    """What the phone adds: uneven light, a colour cast, exposure, blur, sensor noise."""
    h, w, _ = photo.shape
    if rng.random() < 0.4:  # vignetting or a light from one side
        gx, gy = np.meshgrid(np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32))
        if rng.random() < 0.5:
            light = 1 - rng.uniform(0.1, 0.45) * (gx ** 2 + gy ** 2) / 2
        else:
            angle = rng.uniform(0, 2 * np.pi)
            light = 1 + rng.uniform(0.1, 0.4) * (np.cos(angle) * gx + np.sin(angle) * gy) / 2
        photo = photo * light[..., None]
    photo = photo * (rng.uniform(0.8, 1.15, 3) * rng.uniform(0.75, 1.2)).astype(np.float32)
    if rng.random() < 0.3:
        photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.5, 2.5) * max(h, w) / 500)
    if rng.random() < 0.3:
        photo = photo + rng.normal(0, rng.uniform(0.01, 0.06), photo.shape).astype(np.float32)
    return photo


BOX_VIEW_SHARE = 0.3  # this share of the mask's composites is seen as a search with a shopper's box sees it


def loose_box(box, width: int, height: int, rng) -> tuple[int, int, int, int]:
    """A shopper's box around the product's extent `box`: up to 20% of its size looser on each side."""
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) * rng.uniform(0.0, 0.2), (y1 - y0) * rng.uniform(0.0, 0.2)
    return (max(0, round(x0 - gx)), max(0, round(y0 - gy)), min(width, round(x1 + gx)), min(height, round(y1 + gy)))


def analysis_pair(item: np.ndarray, rng: np.random.Generator, side: int, kinds: tuple[str, ...] = BACKDROPS,
                  others: np.ndarray | None = None):
    """A composite as the mask model sees it: (pixels (h, w, 3) float 0..1 with its longest side
    `side`, target (h, w) float: the product's share of each pixel), shrunk as a query is. A share
    of them (BOX_VIEW_SHARE) is the part of the photo a search with a shopper's box analyses: the box
    and the context around it (embedder.regions.with_context)."""
    photo = composite(item, rng, long_side=(160, 520), kinds=kinds, others=others)
    image, mask = photo.image, photo.mask
    if rng.random() < BOX_VIEW_SHARE:
        region = loose_box(photo.box, *image.size, rng) if rng.random() < 0.5 else photo.box
        x0, y0, x1, y1 = context_view(region, *image.size, DomainSettings().context)
        image, mask = image.crop((x0, y0, x1, y1)), mask[y0:y1, x0:x1]
    pixels = mask_input(image, side)
    target = cv2.resize(mask.astype(np.float32), (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_AREA)
    return pixels, target


UNLIKE = ("ring", "star", "cross", "glyphs", "scribble", "ball", "leaf", "wheel", "scene", "texture")


def unlike_item(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 28-px light-on-black drawing of something a clothing catalog does not sell."""
    canvas = np.zeros((28, 28), np.uint8)
    c = (int(rng.integers(11, 17)), int(rng.integers(11, 17)))
    if kind == "ring":
        cv2.circle(canvas, c, int(rng.integers(7, 12)), 255, int(rng.integers(2, 4)))
    elif kind == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, 1)
        radii = np.where(np.arange(10) % 2 == 0, rng.uniform(9, 13), rng.uniform(3, 6))
        points = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(canvas, [points], 255)
    elif kind == "cross":
        w = int(rng.integers(2, 5))
        cv2.line(canvas, (4, 4), (24, 24), 255, w)
        cv2.line(canvas, (4, 24), (24, 4), 255, w)
    elif kind == "glyphs":
        text = "".join(rng.choice(list("0123456789AKXZ&?"), int(rng.integers(1, 3))))
        cv2.putText(canvas, text, (2, 22), cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.6, 0.9), 255, int(rng.integers(1, 3)))
    elif kind == "scribble":
        points = rng.integers(3, 25, (int(rng.integers(4, 10)), 2)).astype(np.int32)
        cv2.polylines(canvas, [points], False, 255, int(rng.integers(1, 3)))
    elif kind == "ball":
        cv2.circle(canvas, c, int(rng.integers(7, 12)), int(rng.integers(120, 256)), -1)
    elif kind == "leaf":
        cv2.ellipse(canvas, c, (int(rng.integers(9, 13)), int(rng.integers(3, 6))), float(rng.uniform(0, 180)),
                    0, 360, 255, -1)
    elif kind == "wheel":
        cv2.circle(canvas, c, 10, 255, 2)
        for a in np.linspace(0, np.pi, int(rng.integers(2, 5)), endpoint=False):
            d = (int(10 * np.cos(a)), int(10 * np.sin(a)))
            cv2.line(canvas, (c[0] - d[0], c[1] - d[1]), (c[0] + d[0], c[1] + d[1]), 255, 1)
    elif kind == "scene":  # many things at once, edge to edge
        for _ in range(int(rng.integers(4, 9))):
            cv2.rectangle(canvas, tuple(int(v) for v in rng.integers(0, 28, 2)), tuple(int(v) for v in rng.integers(0, 28, 2)),
                          int(rng.integers(60, 256)), -1 if rng.random() < 0.5 else 1)
    else:  # "texture": the frame full of a pattern, nothing in front of it
        canvas = (np.clip(_octaves(rng, 28, 28, 4) * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
    return canvas


def unlike_photo(rng: np.random.Generator, kinds: tuple[str, ...] = BACKDROPS) -> Image.Image:
    """A photo of something the catalog does not sell, framed and lit as a product photo is."""
    kind = UNLIKE[int(rng.integers(len(UNLIKE)))]
    return composite(unlike_item(kind, rng), rng, long_side=(240, 640), kinds=kinds).image
