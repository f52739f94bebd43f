"""Surfaces a shopper lays a product on, drawn procedurally (or cut from sample photographs).

Every function returns a float32 (h, w, 3) RGB array in [0, 1] and draws only from the rng it is
given, so a seed fixes the surface. Textures are drawn at a coarse grid and resized with cv2
where the look allows it: the benchmark renders thousands of photos up to 1400 px.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def noise_field(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth value noise with about `cells` bumps along the long side, roughly in [-1, 1]."""
    step = max(w, h) / max(cells, 1.0)
    gw, gh = int(np.ceil(w / step)) + 2, int(np.ceil(h / step)) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32) * 0.6
    big = cv2.resize(grid, (int(gw * step), int(gh * step)), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(rng.integers(0, int(step) + 1)), int(rng.integers(0, int(step) + 1))
    return np.ascontiguousarray(big[oy:oy + h, ox:ox + w])


def fractal(rng, h: int, w: int, cells: float, octaves: int, persistence: float = 0.5,
            turbulent: bool = False) -> np.ndarray:
    """Sum of noise octaves (turbulent: of their absolute values), normalised to unit peak.
    Each octave is drawn at the resolution it needs (about 8 px a bump) and the sum is carried
    up the sizes, so only the finest octave is drawn at full size."""
    total, amp, norm = None, 1.0, 0.0
    for octave in range(octaves):
        bumps = cells * 2 ** octave
        f = min(1.0, bumps * 8 / max(h, w))
        oh, ow = max(2, round(h * f)), max(2, round(w * f))
        layer = noise_field(rng, oh, ow, bumps)
        layer = (np.abs(layer) if turbulent else layer) * np.float32(amp)
        total = layer if total is None else cv2.resize(total, (ow, oh), interpolation=cv2.INTER_LINEAR) + layer
        norm += amp
        amp *= persistence
    if total.shape != (h, w):
        total = cv2.resize(total, (w, h), interpolation=cv2.INTER_LINEAR)
    return total / np.float32(norm)


def random_colour(rng, lightness: tuple[float, float], saturation: tuple[float, float]) -> np.ndarray:
    """An RGB colour of the given lightness (mean) and saturation (spread around the mean)."""
    hue = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(*lightness)
    sat = rng.uniform(*saturation)
    offsets = np.cos(hue + np.array([0.0, 2.1, 4.2]))
    return np.clip(light + sat * offsets * min(light, 1 - light) * 1.8, 0, 1).astype(np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours by t (h, w)."""
    return np.float32(a) + np.float32(b - a) * t[..., None].astype(np.float32)


def drawn_smaller(surface, limit: int = 720):  # used as a decorator
    """The same surface drawn at most `limit` px on its long side and stretched: for smooth
    surfaces (wood, marble, cloth) the camera would not resolve finer than that anyway."""
    def draw(rng, h: int, w: int) -> np.ndarray:
        if max(h, w) <= limit:
            return surface(rng, h, w)
        f = limit / max(h, w)
        small = surface(rng, max(1, round(h * f)), max(1, round(w * f)))
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    draw.__name__ = surface.__name__
    return draw


def plain(rng, h: int, w: int, colour: np.ndarray, unevenness: float = 0.03) -> np.ndarray:
    """A plain sheet, card or wall: one colour with a faint low-frequency unevenness."""
    # the unevenness is smooth: draw it small, stretch the coloured sheet once
    f = min(1.0, 160 / max(h, w))
    sh, sw = max(2, round(h * f)), max(2, round(w * f))
    wobble = noise_field(rng, sh, sw, rng.uniform(1.5, 4)) * unevenness
    small = np.clip(colour[None, None, :] * (1 + wobble[..., None]), 0, 1).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def carpet(rng, h: int, w: int) -> np.ndarray:
    """Fine multicolour grain at strong amplitude: loop-pile carpet, sisal, coarse sand."""
    a = random_colour(rng, (0.2, 0.5), (0.0, 0.6))
    b = random_colour(rng, (0.55, 0.85), (0.0, 0.6))  # light and dark fibres: strong grain
    # a tuft is 1-3 px, but at least 1/700 of the long side (a phone resolves no finer than that)
    grain = max(int(rng.integers(1, 4)), int(np.ceil(max(h, w) / 700)))
    gh, gw = h // grain + 1, w // grain + 1
    fibres = rng.random((gh, gw), dtype=np.float32)
    tint = (rng.random((gh, gw, 3), dtype=np.float32) - np.float32(0.5)) * np.float32(rng.uniform(0.15, 0.5))
    small = _mix(a, b, fibres)
    small += tint
    small *= (1 + np.float32(rng.uniform(0.2, 0.45)) * (fibres[..., None] - np.float32(0.5)))
    cloud = noise_field(rng, gh, gw, 3) * np.float32(0.1) + np.float32(1)
    small *= cloud[..., None]
    np.clip(small, 0, 1, out=small)
    return cv2.resize(small, (gw * grain, gh * grain), interpolation=cv2.INTER_LINEAR)[:h, :w]


def gravel(rng, h: int, w: int) -> np.ndarray:
    """Pebbles: densely packed small stones of varied tone over a darker gap colour."""
    scale = 2 if max(h, w) > 700 else 1
    sh, sw = h // scale + 1, w // scale + 1
    base = random_colour(rng, (0.25, 0.55), (0.0, 0.3))
    canvas = np.empty((sh, sw, 3), np.float32)
    canvas[:] = base * 0.6
    size = rng.uniform(0.008, 0.025) * max(sh, sw)
    count = int(sh * sw / (size * size) * 1.3)
    centres = rng.random((count, 2)) * [sw, sh]
    axes = rng.uniform(0.5, 1.0, (count, 2)) * size
    angles = rng.uniform(0, 180, count)
    tones = np.clip(base[None, :] * rng.uniform(0.6, 1.6, (count, 1)) + rng.normal(0, 0.06, (count, 3)), 0, 1)
    for (cx, cy), (ax, ay), angle, tone in zip(centres, axes, angles, tones):
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(ax) + 1, int(ay) + 1), float(angle), 0, 360,
                    tone.tolist(), -1, cv2.LINE_8)
    return cv2.resize(canvas, (sw * scale, sh * scale), interpolation=cv2.INTER_LINEAR)[:h, :w]


def grass(rng, h: int, w: int) -> np.ndarray:
    """Coarse grain of blades: a lawn (green or dry) seen from above, blades at every angle."""
    dry = rng.random() < 0.35
    base = np.array([0.45, 0.4, 0.2] if dry else [0.18, 0.35, 0.1], np.float32) * rng.uniform(0.7, 1.3)
    scale = 2 if max(h, w) > 700 else 1
    sh, sw = h // scale + 1, w // scale + 1
    canvas = np.empty((sh, sw, 3), np.float32)
    canvas[:] = base * 0.55
    length = rng.uniform(0.03, 0.08) * max(sh, sw)
    count = int(sh * sw / (length * 3.0))
    starts = rng.random((count, 2)) * [sw, sh]
    angles = rng.normal(rng.uniform(0, np.pi), 0.6, count)
    lengths = length * rng.uniform(0.5, 1.2, count)
    ends = starts + np.stack([np.cos(angles), np.sin(angles)], 1) * lengths[:, None]
    tones = np.clip(base[None, :] * rng.uniform(0.5, 1.8, (count, 1)), 0, 1)
    widths = rng.integers(1, 4, count)
    for s, e, tone, width in zip(starts.astype(int), ends.astype(int), tones, widths):
        cv2.line(canvas, (int(s[0]), int(s[1])), (int(e[0]), int(e[1])), tone.tolist(), int(width), cv2.LINE_AA)
    return cv2.resize(canvas, (sw * scale, sh * scale), interpolation=cv2.INTER_LINEAR)[:h, :w]


def speckle(rng, h: int, w: int) -> np.ndarray:
    """Coarse speckle: terrazzo or granite worktop, chips of a few colours in a binder."""
    binder = random_colour(rng, (0.45, 0.85), (0.0, 0.3))
    chips = [random_colour(rng, (0.1, 0.9), (0.0, 0.8)) for _ in range(int(rng.integers(2, 5)))]
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = binder
    size = rng.uniform(0.006, 0.03) * max(h, w)
    count = int(h * w / (size * size) * rng.uniform(0.2, 0.5))
    picks = rng.integers(0, len(chips), count)
    centres = (rng.random((count, 2)) * [w, h]).astype(int)
    radii = (rng.uniform(0.3, 1.0, (count, 2)) * size).astype(int) + 1
    angles = rng.uniform(0, 180, count)
    for (cx, cy), (rx, ry), angle, pick in zip(centres, radii, angles, picks):
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(rx), int(ry)), float(angle), 0, 360, chips[pick].tolist(), -1)
    return np.clip(canvas * (1 + 0.06 * noise_field(rng, h, w, 4)[..., None]), 0, 1)


def _rotated_coords(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates along and across a random direction."""
    angle = rng.uniform(0, np.pi)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * gx + s * gy, -s * gx + c * gy


@drawn_smaller
def stripes(rng, h: int, w: int) -> np.ndarray:
    """Printed or woven stripes of two to four colours, any direction and period."""
    colours = [random_colour(rng, (0.1, 0.9), (0.0, 0.9)) for _ in range(int(rng.integers(2, 5)))]
    along, _ = _rotated_coords(rng, h, w)
    period = rng.uniform(0.02, 0.12) * max(h, w)
    band = np.floor(along / period * len(colours)).astype(np.int64) % len(colours)
    surface = np.stack(colours)[band]
    return np.clip(surface * (1 + 0.04 * noise_field(rng, h, w, 3)[..., None]), 0, 1)


@drawn_smaller
def checks(rng, h: int, w: int) -> np.ndarray:
    """Gingham (two colours, overlapping bands darker) or tartan (several set widths) cloth."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    period = rng.uniform(0.03, 0.15) * max(h, w)
    ground = random_colour(rng, (0.75, 0.95), (0.0, 0.2))
    if rng.random() < 0.5:  # gingham: half-weight in single bands, full where they cross
        ink = random_colour(rng, (0.15, 0.5), (0.3, 1.0))
        bx = ((gx / period) % 1 < 0.5).astype(np.float32)
        by = ((gy / period) % 1 < 0.5).astype(np.float32)
        weight = 0.5 * (bx + by)
        surface = _mix(ground, ink, weight)
    else:  # tartan: bands of several widths and colours, warp and weft averaged
        setts = rng.uniform(0.1, 0.5, int(rng.integers(3, 6)))
        edges = np.cumsum(setts / setts.sum())
        colours = np.stack([random_colour(rng, (0.1, 0.8), (0.2, 1.0)) for _ in setts])
        ix = np.searchsorted(edges, (gx / period) % 1)
        iy = np.searchsorted(edges, (gy / period) % 1)
        surface = 0.5 * (colours[np.minimum(ix, len(setts) - 1)] + colours[np.minimum(iy, len(setts) - 1)])
    # twill: fine diagonal thread relief over the pattern
    thread = rng.uniform(2.5, 6)
    relief = np.sin((gx + gy) * (2 * np.pi / thread)) * rng.uniform(0.03, 0.1)
    return np.clip(surface * (1 + relief[..., None]), 0, 1).astype(np.float32)


@drawn_smaller
def weave(rng, h: int, w: int) -> np.ndarray:
    """Plain-weave fabric, hessian or a woven placemat: visible over-under threads."""
    colour = random_colour(rng, (0.25, 0.85), (0.0, 0.5))
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    pitch = rng.uniform(0.006, 0.025) * max(h, w)
    u, v = gx / pitch, gy / pitch
    warp = np.abs(np.sin(np.pi * u))
    weft = np.abs(np.sin(np.pi * v))
    over = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    relief = over * warp + (1 - over) * weft
    slub = noise_field(rng, h, w, max(w, h) / pitch / 3)  # uneven yarn thickness
    shade = 0.55 + 0.45 * relief + 0.12 * slub
    return np.clip(colour[None, None, :] * shade[..., None], 0, 1).astype(np.float32)


@drawn_smaller
def wood(rng, h: int, w: int) -> np.ndarray:
    """Floorboards or a table top: growth rings distorted by noise, plank seams, varnish tone."""
    light = random_colour(rng, (0.45, 0.75), (0.0, 0.0)) * np.array([1.15, 0.9, 0.62], np.float32)
    dark = light * rng.uniform(0.4, 0.7)
    along, across = _rotated_coords(rng, h, w)
    plank = rng.uniform(0.12, 0.35) * max(h, w)
    index = np.floor(across / plank)
    ring = rng.uniform(0.008, 0.03) * max(h, w)
    warp = fractal(rng, h, w, 3, 3) * rng.uniform(2, 6)
    grain = 0.5 + 0.5 * np.sin((across + warp * ring + index * 37.0) / ring * 2 * np.pi
                               + 0.002 * along * np.sin(index))
    figure = grain ** rng.uniform(1.5, 4)
    surface = _mix(light, dark, figure * rng.uniform(0.6, 1.0))
    seam = (np.abs(across / plank - np.round(across / plank)) * plank < 1.2).astype(np.float32)
    plank_tone = 1 + 0.12 * np.sin(index * 12.9898)
    surface = surface * plank_tone[..., None] * (1 - 0.5 * seam[..., None])
    return np.clip(surface, 0, 1).astype(np.float32)


@drawn_smaller
def marble(rng, h: int, w: int) -> np.ndarray:
    """Marble or stone slab: turbulent veins across a clouded ground."""
    ground = random_colour(rng, (0.2, 0.92), (0.0, 0.3))
    vein = random_colour(rng, (0.05, 0.9), (0.0, 0.4))
    along, _ = _rotated_coords(rng, h, w)
    turbulence = fractal(rng, h, w, 2.5, 5, 0.55, turbulent=True)
    veins = np.abs(np.sin(along / (rng.uniform(0.1, 0.4) * max(h, w)) * np.pi + turbulence * rng.uniform(5, 10)))
    veins = (1 - veins) ** rng.uniform(4, 12)
    cloud = fractal(rng, h, w, 4, 4) * rng.uniform(0.05, 0.2)
    surface = _mix(ground, vein, np.clip(veins, 0, 1)) * (1 + cloud[..., None])
    return np.clip(surface, 0, 1).astype(np.float32)


BACKDROP_PHOTOS = ("brick", "grass", "gravel", "coffee", "rocket", "camera", "moon", "page", "text",
                   "hubble_deep_field", "immunohistochemistry", "astronaut", "chelsea")


@functools.lru_cache(maxsize=None)
def sample_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled sample photographs as float32 RGB in [0, 1]."""
    import skimage.data  # only the photo families need scikit-image

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3]).astype(np.float32) / 255.0


def photo_region(rng, h: int, w: int, name: str, zoom: tuple[float, float] = (0.4, 1.0)) -> np.ndarray:
    """A random crop of a sample photograph (of the frame's aspect), resized to fill the frame."""
    photo = sample_photo(name)
    ph, pw = photo.shape[:2]
    aspect = w / h
    fraction = rng.uniform(*zoom)
    cw = min(pw, ph * aspect) * fraction
    ch = cw / aspect
    x0 = rng.uniform(0, pw - cw)
    y0 = rng.uniform(0, ph - ch)
    crop = photo[int(y0):int(y0 + ch) + 1, int(x0):int(x0 + cw) + 1]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)


def garment_polygon(rng, cx: float, cy: float, size: float) -> list[tuple[float, float]]:
    """Outline of a made-up garment, shoe or bag (not a catalog item), centred at (cx, cy)."""
    kind = int(rng.integers(4))
    if kind == 0:  # top with sleeves
        pts = [(-0.2, -0.5), (0.2, -0.5), (0.5, -0.3), (0.4, -0.1), (0.3, -0.2), (0.3, 0.5), (-0.3, 0.5),
               (-0.3, -0.2), (-0.4, -0.1), (-0.5, -0.3)]
    elif kind == 1:  # trousers
        pts = [(-0.3, -0.5), (0.3, -0.5), (0.35, 0.5), (0.1, 0.5), (0.0, -0.1), (-0.1, 0.5), (-0.35, 0.5)]
    elif kind == 2:  # shoe
        pts = [(-0.5, 0.0), (-0.2, -0.05), (0.0, -0.3), (0.25, -0.3), (0.3, 0.0), (0.5, 0.1), (0.5, 0.2),
               (-0.5, 0.2)]
    else:  # bag
        pts = [(-0.4, -0.2), (-0.2, -0.2), (-0.15, -0.45), (0.15, -0.45), (0.2, -0.2), (0.4, -0.2), (0.45, 0.4),
               (-0.45, 0.4), (-0.4, -0.2), (-0.1, -0.2), (-0.08, -0.35), (0.08, -0.35), (0.1, -0.2)]
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    jitter = rng.normal(0, 0.03, (len(pts), 2))
    return [(cx + size * (c * (x + jx) - s * (y + jy)), cy + size * (s * (x + jx) + c * (y + jy)))
            for (x, y), (jx, jy) in zip(pts, jitter)]


WORDS = ("SALE", "receipt", "Total 24.99", "cotton 100%", "made in", "keys", "hello", "No. 7", "size M",
         "wash 30", "ticket", "Monday")


def draw_clutter(rng, surface: np.ndarray, count: int) -> np.ndarray:
    """Other things lying about: made-up garments, cards, coins, pens, printed words."""
    h, w = surface.shape[:2]
    canvas = Image.fromarray((np.clip(surface, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    short = min(h, w)
    for _ in range(count):
        kind = int(rng.integers(5))
        colour = tuple(int(v) for v in (random_colour(rng, (0.05, 0.95), (0.0, 1.0)) * 255))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.12, 0.45) * short
        if kind == 0:
            draw.polygon(garment_polygon(rng, cx, cy, size), fill=colour)
        elif kind == 1:  # card or phone
            draw.rounded_rectangle((cx, cy, cx + size * 0.6, cy + size), radius=size * 0.06, fill=colour)
        elif kind == 2:  # coin or lid
            r = size * rng.uniform(0.1, 0.3)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour, outline=(40, 40, 40))
        elif kind == 3:  # pen or cable
            angle = rng.uniform(0, 2 * np.pi)
            draw.line((cx, cy, cx + np.cos(angle) * size, cy + np.sin(angle) * size), fill=colour,
                      width=max(2, int(size * 0.05)))
        else:
            font = ImageFont.load_default(size=max(10, int(size * rng.uniform(0.12, 0.3))))
            draw.text((cx, cy), str(rng.choice(WORDS)), fill=colour, font=font)
    return np.asarray(canvas, np.float32) / 255.0
