"""One photo's print for the near-duplicate check (index.quality.duplicates): what a store may
do to a photo it lists again (re-encoding, resizing, a shift of a few pixels, other lighting, a slight
crop, a mirror image, a watermark or a border) is compared on these prints, and their descriptors
propose the pairs worth comparing (index.quality.near_duplicates).

Each photo is decoded once into a PhotoPrint: its grey pixels at most WORK_SIDE a side (a photo as
small as a Fashion-MNIST one keeps every pixel), how many of them stand for one pixel of the file
(`scale`), and small descriptors that propose pairs the model's vectors miss (a border, a shift, a
mirror image or a watermark can move a vector far from the original's, and a catalog holds many
items of one type that all look alike at a glance):
- `whole`: the whole frame at DESCRIPTOR_SIDES["whole"] pixels;
- `moment`: the product taken out of a frame, centred on its centre of mass and scaled by its spread
  (a border of any colour, a resize);
these two blurred and made left-right symmetric (the photo plus its mirror image: a mirrored copy
has the same descriptor);
- `corners`: four views at the frame's scale, each with one corner of the product's box at a fixed
  place (top left, top right, bottom left, bottom right). A shift moves the product's box with it
  but may push part of the product out of the frame: the corner away from the cut stays where it
  was, so one of the four views of a shifted copy lines up with the original's (compared corner
  with corner).
Each descriptor is zero-mean and unit-norm.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from embedder.images import ImageError, decode_image

WORK_SIDE = 48  # pixels a side the photos are compared at, at most
DECODE_SIDE = 4 * WORK_SIDE  # photos are decoded at most this large (then shrunk by area)
DESCRIPTOR_SIDES = {"whole": 8, "moment": 16, "corner": 16}
DESCRIPTOR_BLUR = {"whole": 0.7, "moment": 1.0, "corner": 0.8}  # Gaussian sigma in descriptor pixels
CORNER_PLACE = 0.1  # where a corner view puts the product's corner: this share of the side in from its edges
MOMENT_REACH = 2.2  # the moment descriptor spans this many spreads of the product either way
DESCRIPTOR_FLOOR = 0.80  # descriptor correlation under which the descriptors propose no pair
TRIM_TOLERANCE = 0.12  # a pixel differs from the edge colour by more than this share of the photo's range ...
TRIM_SHARE = 0.04  # ... and a line with more than this share of such pixels belongs to the photo
DECODE_THREADS = 2


def uniform_box(smooth: np.ndarray, tolerance: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of what differs from the colour of the outer ring of pixels, when
    that ring is mostly one colour (a frame or a plain background); the whole photo otherwise."""
    h, w = smooth.shape
    ring = np.concatenate([smooth[0], smooth[-1], smooth[1:-1, 0], smooth[1:-1, -1]])
    colour = float(np.median(ring))
    if np.mean(np.abs(ring - colour) <= tolerance) < 0.6:
        return 0, h, 0, w
    differs = np.abs(smooth - colour) > tolerance
    rows = np.flatnonzero(differs.mean(axis=1) > TRIM_SHARE)
    cols = np.flatnonzero(differs.mean(axis=0) > TRIM_SHARE)
    if len(rows) == 0 or len(cols) == 0 or rows[-1] + 1 - rows[0] < 4 or cols[-1] + 1 - cols[0] < 4:
        return 0, h, 0, w
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def frame_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """The box inside a frame: the outer uniform lines when what lies inside them is mostly another
    uniform colour (a border added around the photo's own background); the whole photo otherwise (a
    plain margin around the product is the photo's own and stays). A 3x3 median takes out JPEG
    speckle without moving edges."""
    smooth = cv2.medianBlur(np.ascontiguousarray(grey, np.float32), 3)
    tolerance = TRIM_TOLERANCE * max(float(smooth.max() - smooth.min()), 1.0)
    h, w = smooth.shape
    top, bottom, left, right = uniform_box(smooth, tolerance)
    if (top, bottom, left, right) == (0, h, 0, w):
        return 0, h, 0, w
    inner = smooth[top:bottom, left:right]
    outer_ring = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    inner_ring = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    inner_colour = float(np.median(inner_ring))
    if (abs(float(np.median(outer_ring)) - inner_colour) > tolerance  # another colour inside the band ...
            and np.mean(np.abs(inner_ring - inner_colour) <= tolerance) >= 0.6):  # ... a background, not the product's edge
        return top, bottom, left, right
    return 0, h, 0, w


def _symmetric_unit(small: np.ndarray) -> np.ndarray:
    """The left half of the image plus its mirror image (the right half repeats it), zero-mean over
    the whole, unit norm: the descriptors of a photo and of its mirror image are the same."""
    small = small + small[:, ::-1]
    x = (small - small.mean())[:, :small.shape[1] // 2].reshape(-1)
    norm = float(np.linalg.norm(x))
    return (x / norm if norm > 1e-6 else np.zeros_like(x)).astype(np.float16)


def _square(grey: np.ndarray) -> np.ndarray:
    """The photo padded square with the median colour of its edge."""
    h, w = grey.shape
    if h == w:
        return grey
    ring = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    side = max(h, w)
    square = np.full((side, side), float(np.median(ring)), np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = grey
    return square


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.reshape(-1) - x.mean()
    norm = float(np.linalg.norm(x))
    return (x / norm if norm > 1e-6 else np.zeros_like(x)).astype(np.float16)


def _product_descriptors(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(moment, corners) of the photo without its frame: what differs from the background (the
    median of its edge) weighs each pixel; `moment` puts its centre of mass in the middle at the
    scale of its spread, each corner view puts one corner of its box (uniform_box) at CORNER_PLACE
    at the frame's scale."""
    top, bottom, left, right = frame_box(grey)
    inner = np.ascontiguousarray(grey[top:bottom, left:right])
    ring = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    background = float(np.median(ring))
    moments = cv2.moments(np.abs(inner - background))

    def view(side: int, zoom: float, y: float, x: float, at_y: float, at_x: float) -> np.ndarray:
        """The photo scaled by zoom with its point (y, x) at (at_y, at_x) of a side x side view."""
        source = cv2.GaussianBlur(inner, (0, 0), 0.5 / zoom) if zoom < 1 else inner
        warp = np.float32([[zoom, 0, at_x - zoom * x], [0, zoom, at_y - zoom * y]])
        return cv2.warpAffine(source, warp, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=background)

    side = DESCRIPTOR_SIDES["moment"]
    if moments["m00"] <= 1e-6:
        moment = np.zeros(side * (side // 2), np.float16)
    else:
        cy, cx = moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]
        spread = math.sqrt((moments["mu20"] + moments["mu02"]) / moments["m00"])
        middle = (side - 1) / 2
        moment = _symmetric_unit(cv2.GaussianBlur(view(side, side / (2 * MOMENT_REACH * max(spread, 1e-3)), cy, cx,
                                                       middle, middle), (0, 0), DESCRIPTOR_BLUR["moment"]))
    side = DESCRIPTOR_SIDES["corner"]
    smooth = cv2.medianBlur(inner, 3)
    b_top, b_bottom, b_left, b_right = uniform_box(smooth, TRIM_TOLERANCE * max(float(smooth.max() - smooth.min()), 1.0))
    zoom, near, far = side / max(inner.shape), CORNER_PLACE * side, (1 - CORNER_PLACE) * side
    corners = np.stack([_unit(cv2.GaussianBlur(view(side, zoom, y, x, at_y, at_x), (0, 0), DESCRIPTOR_BLUR["corner"]))
                        for y, at_y in ((b_top, near), (b_bottom, far)) for x, at_x in ((b_left, near), (b_right, far))])
    return moment, corners


@dataclass
class PhotoPrint:
    pixels: np.ndarray  # uint8 (h, w) grey, the long side at most WORK_SIDE
    scale: tuple[float, float]  # pixels per pixel of the file, down and across
    whole: np.ndarray  # float16 descriptors (see the module's docstring), unit norm
    moment: np.ndarray
    corners: np.ndarray  # (4, DESCRIPTOR_SIDES["corner"] ** 2): top left, top right, bottom left, bottom right


def print_of_grey(grey: np.ndarray, file_size: tuple[int, int] | None = None) -> PhotoPrint:
    """A photo's print from its grey pixels (any size); file_size (height, width): the photo file's
    own size when `grey` was decoded smaller (default: grey's size)."""
    grey = np.asarray(grey, np.float32)
    h, w = grey.shape
    shrink = min(1.0, WORK_SIDE / max(h, w))
    if shrink < 1:
        grey = cv2.resize(grey, (max(1, round(w * shrink)), max(1, round(h * shrink))), interpolation=cv2.INTER_AREA)
    pixels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    file_h, file_w = file_size or (h, w)
    side = DESCRIPTOR_SIDES["whole"]
    whole = cv2.GaussianBlur(cv2.resize(_square(grey), (side, side), interpolation=cv2.INTER_AREA), (0, 0),
                             DESCRIPTOR_BLUR["whole"])
    moment, corners = _product_descriptors(grey)
    return PhotoPrint(pixels, (pixels.shape[0] / file_h, pixels.shape[1] / file_w), _symmetric_unit(whole),
                      moment, corners)


def _file_size(path, decoded: Image.Image) -> tuple[int, int]:
    """(height, width) of the photo file, upright; the decoded size when the header disagrees."""
    w, h = decoded.size
    try:
        with Image.open(path) as image:
            fw, fh = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation turned a quarter
                fw, fh = fh, fw
    except Exception:  # noqa: BLE001 - the decoded size is a safe answer
        return h, w
    if fw < w or fh < h or abs(fw / fh - w / h) > 0.02 * (w / h) + 1.0 / min(w, h):
        return h, w
    return fh, fw


def photo_print(path) -> PhotoPrint:
    """The print of a photo file (embedder.images.decode_image: ImageError when it cannot be read).
    A photo decoded smaller than DECODE_SIDE was not reduced: the file's header is read only for
    larger ones."""
    image = decode_image(path, max_side=DECODE_SIDE)
    size = (image.height, image.width) if max(image.size) < DECODE_SIDE else _file_size(path, image)
    return print_of_grey(np.asarray(image.convert("L"), np.float32), size)


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
