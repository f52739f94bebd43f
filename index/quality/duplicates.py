"""Is this listing's photo a copy of that one? The pixel check behind the hygiene report's
near-duplicate groups (index.quality.hygiene), made to survive what stores do to a photo they list again:
re-encoding, resizing, a shift of a few pixels, other lighting, a slight crop, a mirror image, a
watermark or a border.

Each photo is decoded once into a PhotoPrint:
- `whole`: the whole frame, grey, shrunk to SIDE pixels a side and blurred (resizing, re-encoding);
- `trimmed`: the same after peeling off uniform rows and columns at the edges (a border of any
  colour, a plain margin), padded square with the background: a border or a shift of the whole
  product leaves it where it was;
- `descriptor`: the trimmed photo at DESCRIPTOR_SIDE pixels, made left-right symmetric (the photo
  plus its mirror image), zero-mean and unit-norm: a mirrored copy has the same descriptor, so the
  nearest descriptors propose pairs that the model's vectors do not (a border or a mirror image
  can move a vector far from the original's).

Two prints are compared by `match_scores` (many pairs at once, in numpy): the normalised
cross-correlation of the centre of one thumbnail (MARGIN pixels off each side) slid over the other
(so a shift, or a crop up to the margin, costs nothing), both ways round, as they are and with one
mirrored, on the unframed and on the trimmed thumbnails; the best value. The correlations at every
shift come from one FFT product per variant, the sliding windows' spreads from integral images.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from embedder.images import ImageError, decode_image

SIDE = 32  # thumbnail side in pixels
BLUR = 1.0  # Gaussian sigma in thumbnail pixels: takes out resampling and JPEG noise
MARGIN = 4  # pixels of one thumbnail left out when slid over the other: shifts and crops up to 12%
DESCRIPTOR_SIDE = 8
DESCRIPTOR_FLOOR = 0.80  # descriptor correlation under which the descriptors propose no pair
PAIR_BLOCK = 1024  # pairs compared at once (a few MB of spectra)
PEEL_TOLERANCE = 0.12  # an edge row is uniform when 90% of it lies within this share of the photo's range
DECODE_SIDE = 8 * SIDE  # photos are decoded at most this large (the thumbnails need no more)
DECODE_THREADS = 2


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32) - float(x.mean())
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 1e-6 else np.zeros_like(x)


def _spread(line: np.ndarray) -> tuple[float, float]:
    """(95th - 5th percentile, median) of a line of pixels."""
    ordered = np.sort(line)
    n = len(ordered) - 1
    return float(ordered[round(0.95 * n)] - ordered[round(0.05 * n)]), float(ordered[n // 2])


def peel(grey: np.ndarray, tolerance: float) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Peel uniform edge rows and columns, one side at a time, never below 6 pixels a side.
    Returns (content, unframed) bounds (top, bottom, left, right): `content` with every uniform
    line peeled (a frame, then a plain margin), `unframed` with only the outer lines whose colour
    differs from the last line peeled (a frame; the photo's own background stays)."""
    top, bottom, left, right = 0, grey.shape[0], 0, grey.shape[1]
    peeled: list[tuple[int, float]] = []
    changed = True
    while changed and bottom - top > 6 and right - left > 6:
        changed = False
        for side in range(4):
            line = (grey[top, left:right], grey[bottom - 1, left:right],
                    grey[top:bottom, left], grey[top:bottom, right - 1])[side]
            spread, colour = _spread(line)
            if spread <= tolerance:
                peeled.append((side, colour))
                top, bottom, left, right = (top + (side == 0), bottom - (side == 1),
                                            left + (side == 2), right - (side == 3))
                changed = True
    frame = [0, grey.shape[0], 0, grey.shape[1]]  # top, bottom, left, right
    for side, colour in peeled:
        if abs(colour - peeled[-1][1]) <= tolerance:
            break
        frame[side] += 1 if side in (0, 2) else -1
    return (top, bottom, left, right), (frame[0], frame[1], frame[2], frame[3])


def _shrink(grey: np.ndarray, side: int) -> np.ndarray:
    larger = max(grey.shape) > side
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA if larger else cv2.INTER_LINEAR)


@dataclass
class PhotoPrint:
    views: np.ndarray  # (2, SIDE, SIDE) float16, blurred: the unframed photo and the trimmed product
    descriptor: np.ndarray  # (DESCRIPTOR_SIDE**2,) float32, mirror-symmetric, unit norm


def print_of_grey(grey: np.ndarray) -> PhotoPrint:
    """A photo's print from its grey pixels (float32, any size)."""
    grey = grey.astype(np.float32)
    smooth = cv2.GaussianBlur(grey, (0, 0), max(grey.shape) / 56.0)  # about half a pixel of a 28-px photo
    (top, bottom, left, right), (ft, fb, fl, fr) = peel(
        smooth, PEEL_TOLERANCE * max(float(smooth.max() - smooth.min()), 1.0))
    inner = grey[top:bottom, left:right]
    h, w = inner.shape
    ring = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    square = np.full((max(h, w),) * 2, float(np.median(ring)), np.float32)
    square[(max(h, w) - h) // 2:(max(h, w) - h) // 2 + h, (max(h, w) - w) // 2:(max(h, w) - w) // 2 + w] = inner
    views = np.stack([cv2.GaussianBlur(_shrink(x, SIDE), (0, 0), BLUR) for x in (grey[ft:fb, fl:fr], square)])
    small = cv2.GaussianBlur(_shrink(square, DESCRIPTOR_SIDE), (0, 0), 0.7)
    return PhotoPrint(views.astype(np.float16), _unit(small + small[:, ::-1]).reshape(-1))  # half: 10^5 prints in 400 MB


def photo_print(path) -> PhotoPrint:
    """The print of a photo file (embedder.images.decode_image: ImageError when it cannot be read)."""
    image = decode_image(path, max_side=DECODE_SIDE).convert("L")
    return print_of_grey(np.asarray(image, np.float32))


def _window_spreads(x: np.ndarray) -> np.ndarray:
    """(..., 2M+1, 2M+1): the root sum of squared deviations of every (SIDE-2M)-pixel window of x."""
    size = SIDE - 2 * MARGIN
    total = np.zeros((*x.shape[:-2], SIDE + 1, SIDE + 1), np.float64)
    squares = total.copy()
    total[..., 1:, 1:] = x.cumsum(-2).cumsum(-1)
    squares[..., 1:, 1:] = (x.astype(np.float64) ** 2).cumsum(-2).cumsum(-1)

    def box(c):
        return c[..., size:, size:] - c[..., :-size, size:] - c[..., size:, :-size] + c[..., :-size, :-size]
    return np.sqrt(np.maximum(box(squares) - box(total) ** 2 / size ** 2, 1e-9))


def _templates(x: np.ndarray) -> np.ndarray:
    """Spectra of the centres of x (MARGIN off each side), zero-mean, unit-norm, zero-padded to SIDE."""
    size = SIDE - 2 * MARGIN
    centre = x[..., MARGIN:SIDE - MARGIN, MARGIN:SIDE - MARGIN]
    centre = centre - centre.mean(axis=(-2, -1), keepdims=True)
    centre = centre / np.maximum(np.linalg.norm(centre, axis=(-2, -1), keepdims=True), 1e-6)
    padded = np.zeros(x.shape, np.float32)
    padded[..., :size, :size] = centre
    return np.fft.rfft2(padded)


def _slid(templates: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Best normalised cross-correlation of each template over its image, as it is or mirrored:
    (P, V) for templates (P, V, ...) spectra and images (P, V, SIDE, SIDE)."""
    best = np.full(images.shape[:2], -1.0)
    reach = 2 * MARGIN + 1
    for view in (images, np.ascontiguousarray(images[..., ::-1])):
        products = np.fft.irfft2(np.conj(templates) * np.fft.rfft2(view), s=(SIDE, SIDE))[..., :reach, :reach]
        ncc = products / _window_spreads(view)
        best = np.maximum(best, ncc.reshape(*ncc.shape[:2], -1).max(axis=-1))
    return best


def match_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The pixel score of each pair of prints' views, first (P, 2, SIDE, SIDE) against second: the
    best normalised cross-correlation over shifts up to MARGIN pixels, one way round or the other,
    mirrored or not, unframed or trimmed; 1.0 for the same pixels."""
    out = np.empty(len(first), np.float32)
    for at in range(0, len(first), PAIR_BLOCK):
        a, b = first[at:at + PAIR_BLOCK].astype(np.float32), second[at:at + PAIR_BLOCK].astype(np.float32)
        both = np.maximum(_slid(_templates(a), b), _slid(_templates(b), a))
        out[at:at + len(a)] = both.max(axis=1)
    return np.minimum(out, 1.0)


def match_score(a: PhotoPrint, b: PhotoPrint) -> float:
    """match_scores of one pair."""
    return float(match_scores(a.views[None], b.views[None])[0])


class PhotoPrints:
    """Prints of catalog rows, decoded on first use (DECODE_THREADS at once) and kept; rows whose
    photo cannot be read are remembered (None) and counted, never retried."""

    def __init__(self, paths):
        self.paths = paths
        self._cache: dict[int, PhotoPrint | None] = {}
        self.unreadable = 0

    def _read(self, row: int) -> PhotoPrint | None:
        try:
            return photo_print(self.paths[row])
        except (ImageError, OSError):
            return None

    def load(self, rows) -> None:
        """Decode the rows not decoded yet."""
        todo = sorted({int(r) for r in rows} - self._cache.keys())
        threads = max(1, min(DECODE_THREADS, os.cpu_count() or 1))
        with ThreadPoolExecutor(threads) as pool:
            for row, found in zip(todo, pool.map(self._read, todo, chunksize=256)):
                self._cache[row] = found
                self.unreadable += found is None

    def __call__(self, row: int) -> PhotoPrint | None:
        if row not in self._cache:
            self.load([row])
        return self._cache[row]

    def __len__(self) -> int:
        return len(self._cache)


def connected_groups(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The smallest row of each row's connected component over the links (first[i], second[i]):
    labels propagated along the links until none changes."""
    label = np.arange(n)
    if len(first) == 0:
        return label
    while True:
        low = np.minimum(label[first], label[second])
        before = label.copy()
        np.minimum.at(label, first, low)
        np.minimum.at(label, second, low)
        label = label[label]  # jump to the label's own label: halves the chains each round
        if np.array_equal(label, before):
            return label
