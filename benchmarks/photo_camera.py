"""What the phone does to a scene: light fall-off, white balance, blur, sensor noise with the
phone's own noise reduction and sharpening, a tilted camera, and the JPEG it uploads.

Scenes are float32 (h, w, 3) RGB in [0, 1] (linear enough for these purposes); every effect draws
only from the rng it is given.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def frame_size(rng: np.random.Generator, long_range: tuple[int, int] = (300, 1400)) -> tuple[int, int]:
    """(width, height): a phone frame (portrait or landscape, 9:16 to 16:9, or square)."""
    long_side = int(rng.integers(long_range[0], long_range[1] + 1))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, rng.uniform(1.0, 1.8)]))
    short_side = max(64, round(long_side / aspect))
    return (long_side, short_side) if rng.random() < 0.4 else (short_side, long_side)


def lighting(scene: np.ndarray, rng, gradient: float, vignette: float) -> np.ndarray:
    """Light from one side (a linear fall-off of up to `gradient`) and lens vignetting (in place)."""
    h, w = scene.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    fall, vig = rng.uniform(0.5, 1.0) * gradient, rng.uniform(0.5, 1.0) * vignette * 2
    # the gain is smooth: compute it on a coarse grid and stretch it
    gw, gh = max(2, w // 8), max(2, h // 8)
    gx = np.linspace(-0.5, 0.5, gw, dtype=np.float32)[None, :]
    gy = np.linspace(-0.5, 0.5, gh, dtype=np.float32)[:, None]
    ramp = np.float32(np.cos(angle)) * gx + np.float32(np.sin(angle)) * gy
    radius2 = (gx * np.float32(w / max(w, h))) ** 2 + (gy * np.float32(h / max(w, h))) ** 2
    gain = (1 - ramp * np.float32(fall)) * (1 - np.float32(vig) * radius2)
    gain = cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)
    scene *= gain[..., None]
    return scene


def colour_cast(scene: np.ndarray, rng, strength: float) -> np.ndarray:
    """A white-balance error: warm (tungsten, more red) or cool (shade, more blue), a little green/magenta."""
    warm = 1.0 if rng.random() < 0.5 else -1.0
    tint = rng.normal(0, 0.25)
    gains = np.array([1 + warm * strength, 1 + tint * strength, 1 - warm * strength], np.float32)
    gains /= gains.max() * rng.uniform(0.9, 1.05)
    scene *= gains
    return scene


def defocus(scene: np.ndarray, rng, amount: float = 1.0) -> np.ndarray:
    """Out of focus: a disc (aperture-shaped) blur of up to about 1% of the long side."""
    radius = max(1.0, amount * rng.uniform(0.003, 0.012) * max(scene.shape[:2]))
    if radius > 4:  # a wide blur leaves no fine detail: blur a smaller copy, the same disc in proportion
        h, w = scene.shape[:2]
        factor = radius / 4
        small = cv2.resize(scene, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
        return cv2.resize(_disc_blur(small, 4.0), (w, h), interpolation=cv2.INTER_LINEAR)
    return _disc_blur(scene, radius)


def _disc_blur(scene: np.ndarray, radius: float) -> np.ndarray:
    size = int(np.ceil(radius)) * 2 + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    disc = np.clip(radius + 0.5 - np.hypot(xx, yy), 0, 1).astype(np.float32)
    return cv2.filter2D(scene, -1, disc / disc.sum(), borderType=cv2.BORDER_REFLECT101)


def motion_blur(scene: np.ndarray, rng) -> np.ndarray:
    """Camera shake: a streak of up to about 1.5% of the long side in one direction."""
    length = max(3, int(rng.uniform(0.004, 0.015) * max(scene.shape[:2])))
    size = length | 1
    kernel = np.zeros((size, size), np.float32)
    angle = rng.uniform(0, np.pi)
    c, r = size // 2, (size - 1) / 2
    cv2.line(kernel, (int(round(c - np.cos(angle) * r)), int(round(c - np.sin(angle) * r))),
             (int(round(c + np.cos(angle) * r)), int(round(c + np.sin(angle) * r))), 1.0, 1, cv2.LINE_AA)
    return cv2.filter2D(scene, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT101)


def phone_noise(scene: np.ndarray, rng, sigma: float) -> np.ndarray:
    """Sensor noise, then what the phone does with it. Brightness noise is fine grain that grows
    with the light (shot noise); colour noise is blotchy and the phone smears it away with the
    colour detail; the brightness is smoothed a little and sharpened back."""
    h, w = scene.shape[:2]
    ycc = cv2.cvtColor(np.ascontiguousarray(scene, np.float32), cv2.COLOR_RGB2YCrCb)
    luma = ycc[..., 0]
    # two uniform draws summed: near enough Gaussian once the phone has filtered it, and many
    # times cheaper to draw than normal variates at 1.4 megapixels
    grain = rng.random((h, w), dtype=np.float32)
    grain += rng.random((h, w), dtype=np.float32)
    grain -= np.float32(1.0)
    grain *= np.float32(sigma * 2.449)  # unit standard deviation (the sum's is 1 / sqrt(6)), times sigma
    luma += grain * (np.sqrt(np.maximum(luma, 0)) + np.float32(0.4))
    # colour: noise and the phone's chroma noise reduction both live at a quarter of the size
    cw, ch = max(1, w // 4), max(1, h // 4)
    chroma = cv2.resize(ycc[..., 1:], (cw, ch), interpolation=cv2.INTER_AREA)
    chroma += rng.standard_normal((ch, cw, 2), dtype=np.float32) * np.float32(sigma * 1.5)
    strength = rng.uniform(0.5, 1.0)
    chroma = cv2.GaussianBlur(chroma, (0, 0), 0.5 + strength * 0.001 * max(h, w))
    ycc[..., 1:] = cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR)
    smooth = cv2.GaussianBlur(luma, (0, 0), 0.6 + strength)
    detail = luma - cv2.GaussianBlur(luma, (0, 0), 2.0)
    ycc[..., 0] = smooth + detail * np.float32(rng.uniform(0.3, 0.9))  # sharpening: edges (and some grain) back
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def tilt(scene: np.ndarray, mask: np.ndarray, rng, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """The camera tilted towards one side: the scene in perspective (the near side larger, spilling
    out of the frame, so no border is invented). The mask follows the same warp (its 0.5 level)."""
    h, w = scene.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src.copy()
    side = int(rng.integers(4))  # the near edge: top, right, bottom or left
    spread = amount * (w if side in (0, 2) else h) * 0.5
    a, b = [(0, 1), (1, 2), (2, 3), (3, 0)][side]
    axis = 0 if side in (0, 2) else 1
    direction = np.sign(src[b, axis] - src[a, axis])
    dst[a, axis] -= direction * spread
    dst[b, axis] += direction * spread
    dst += rng.normal(0, 0.01, (4, 2)).astype(np.float32) * [w, h]  # and a little roll
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(scene, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    warped_mask = cv2.warpPerspective(mask.astype(np.uint8) * np.uint8(255), matrix, (w, h),
                                      flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped, warped_mask >= 128


def jpeg_upload(scene: np.ndarray, rng) -> bytes:
    """The bytes the phone uploads: JPEG at quality 60-95 (one upload in ten a PNG screenshot)."""
    scaled = np.multiply(scene, 255, dtype=np.float32)
    scaled += 0.5
    pixels = Image.fromarray(np.clip(scaled, 0, 255, out=scaled).astype(np.uint8))
    buffer = io.BytesIO()
    if rng.random() < 0.1:
        pixels.save(buffer, format="PNG", compress_level=1)
    else:
        pixels.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)),
                    subsampling=int(rng.choice([0, 2, 2])))
    return buffer.getvalue()
