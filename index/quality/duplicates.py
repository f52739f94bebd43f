"""Is this listing's photo a copy of that one? The pixel check behind the hygiene report's
near-duplicate groups (index.quality.hygiene), made to survive what stores do to a photo they list
again: re-encoding, resizing, a shift of a few pixels, other lighting, a slight crop, a mirror image,
a watermark or a border, and still refuse two distinct items that merely look alike.

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

Two prints are compared by `match_scores` (many pairs at once, in numpy) under two hypotheses of how
one photo's pixels map onto the other's: frame onto frame (re-encoded, re-lit, resized, mirrored,
watermarked copies), and pixel onto pixel of the files (a shift, a crop or a border keeps the
photo's scale: `scale` says where a reduction to WORK_SIDE changed it). The finer of the two is
brought down to the coarser's scale, so both hold the same detail. Then:
1. alignment: the correlation of the two photos blurred by ALIGN_SIGMA over their overlap, at every
   offset up to REACH of the side beyond their difference in size, as they are and with one
   mirrored (one inverse FFT per pair and orientation for all offsets, each photo's own FFT once
   per block of pairs; the overlaps' sums from indicator matrices);
2. the check, at the best offset only: the two overlapping regions cut out (what lies outside the
   overlap, a border or the gap a shift leaves, is not blurred into it), blurred by COMPARE_SIGMA,
   and the correlation of their gradient fields. Gradients weigh the edges and the print of a
   product, where distinct look-alikes differ, and not the large flat areas a silhouette shares
   with every item of its type; JPEG noise and resampling move them less than COMPARE_SIGMA.
   Where a photo was shrunk (a large photo, or the finer of two), a shift or a border may fall
   between two pixels: the overlap loses its outer pixel where it ends inside a photo, and the
   check is made again with the second photo moved by the fraction of a pixel the alignment's
   correlations point to.
The score of a pair is the best check over the hypotheses; 1.0 for the same pixels.
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
ALIGN_SIGMA = 0.7  # Gaussian blur (work pixels) for finding the offset
COMPARE_SIGMA = 1.3  # Gaussian blur (work pixels) before the gradients are compared
REACH = 0.14  # offsets searched beyond the difference in size, as a share of the longer side
MIN_OVERLAP = 0.7  # an offset counts when the overlap covers this share of the smaller photo ...
MIN_OVERLAP_LARGER = 0.5  # ... and this share of the larger one
SAME_PIXELS_AREA = (0.5, 2.0)  # file areas' ratio within which pixel-onto-pixel is tried (crop, border)
SCALE_TOLERANCE = 0.02  # hypotheses whose scales differ less than this are one
MIN_SIDE = 8  # a photo brought under this many pixels a side is not compared
DESCRIPTOR_SIDES = {"whole": 8, "moment": 16, "corner": 16}
DESCRIPTOR_BLUR = {"whole": 0.7, "moment": 1.0, "corner": 0.8}  # Gaussian sigma in descriptor pixels
CORNER_PLACE = 0.1  # where a corner view puts the product's corner: this share of the side in from its edges
MOMENT_REACH = 2.2  # the moment descriptor spans this many spreads of the product either way
DESCRIPTOR_FLOOR = 0.80  # descriptor correlation under which the descriptors propose no pair
TRIM_TOLERANCE = 0.12  # a pixel differs from the edge colour by more than this share of the photo's range ...
TRIM_SHARE = 0.04  # ... and a line with more than this share of such pixels belongs to the photo
PAIR_BLOCK = 1024  # pairs compared at once
DECODE_THREADS = 2


# ---------------------------------------------------------------- one photo

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


# ---------------------------------------------------------------- pairs of photos

def _blur(x: np.ndarray, sigma: float, border: int) -> np.ndarray:
    """Gaussian blur of each image of a stack (n, h, w), float32: the stack laid out as one tall
    image, each image first given its own border rows (`border`: cv2.BORDER_REFLECT_101 or
    cv2.BORDER_REFLECT) so that no image's blur reaches into the next one; one filter call."""
    n, h, w = x.shape
    size = max(3, int(round(sigma * 8 + 1)) | 1)
    r = min(size // 2, h - 1)
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_32F)
    mode = "reflect" if border == cv2.BORDER_REFLECT_101 else "symmetric"
    tall = np.pad(np.asarray(x, np.float32), ((0, 0), (r, r), (0, 0)), mode=mode).reshape(n * (h + 2 * r), w)
    if r < size // 2:  # an image shorter than the kernel: filter rows only, then columns image by image
        tall = cv2.sepFilter2D(tall, -1, kernel, np.ones((1, 1), np.float32), borderType=border)
        tall = tall.reshape(n, h + 2 * r, w)[:, r:r + h]
        return np.stack([cv2.sepFilter2D(np.ascontiguousarray(image), -1, np.ones((1, 1), np.float32), kernel,
                                         borderType=border) for image in tall])
    return cv2.sepFilter2D(tall, -1, kernel, kernel, borderType=border).reshape(n, h + 2 * r, w)[:, r:r + h]


def _ranges(starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) float32 indicators of [starts[i], stops[i])."""
    at = np.arange(length)
    return ((at >= starts[:, None]) & (at < stops[:, None])).astype(np.float32)


def _rect_sums(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, U, V) sums of each image of x (n, h, w) over the rows of rows[u] and the columns of
    cols[v] (indicator matrices (U, h) and (V, w)): two matrix products, no integral image."""
    return np.matmul(np.matmul(rows, x), cols.T)


def _mirrored_spectrum(spectrum: np.ndarray, width: int, nx: int) -> np.ndarray:
    """The rfft2 (size (ny, nx)) of images `width` pixels wide mirrored left-right, from their own
    rfft2: X'(k, l) = exp(-2 pi i l (width - 1) / nx) conj(X(-k, l)) for real images."""
    ny = spectrum.shape[-2]
    flipped = np.conj(spectrum[..., (-np.arange(ny)) % ny, :])
    phase = np.exp(-2j * np.pi * np.arange(spectrum.shape[-1]) * (width - 1) / nx).astype(spectrum.dtype)
    return flipped * phase


def _aligned(a: np.ndarray, first: np.ndarray, b: np.ndarray, second: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For pairs of photos (a[first[i]], b[second[i]]) from stacks a (m1, h1, w1) and b (m2, h2, w2),
    float32 (each photo once, however many pairs it is in): the best correlation of the blurred
    photos over their overlap, the offset (u, v) where it is (b's pixel (y + u, x + v) lies on a's
    (y, x)), whether b is mirrored there, and the fraction of a pixel (down, across) by which a
    parabola through the neighbouring offsets' correlations puts the best offset further. The
    products for every offset come from one inverse FFT per pair and orientation; the overlaps'
    sums from indicator matrices."""
    n = len(first)
    _, h1, w1 = a.shape
    _, h2, w2 = b.shape
    reach = max(1, math.ceil(REACH * max(h1, w1, h2, w2)))
    us = np.arange(min(0, h2 - h1) - reach, max(0, h2 - h1) + reach + 1)
    vs = np.arange(min(0, w2 - w1) - reach, max(0, w2 - w1) + reach + 1)
    ny, nx = max(h2 - us[0], h1 + us[-1]), max(w2 - vs[0], w1 + vs[-1])
    ya0, ya1 = np.maximum(0, -us), np.minimum(h1, h2 - us)
    xa0, xa1 = np.maximum(0, -vs), np.minimum(w1, w2 - vs)
    area = np.maximum(ya1 - ya0, 0)[:, None] * np.maximum(xa1 - xa0, 0)[None, :]
    enough = (area >= MIN_OVERLAP * min(h1 * w1, h2 * w2)) & (area >= MIN_OVERLAP_LARGER * max(h1 * w1, h2 * w2))
    safe = np.maximum(area, 1).astype(np.float32)
    rows_a, cols_a = _ranges(ya0, ya1, h1), _ranges(xa0, xa1, w1)
    rows_b, cols_b = _ranges(ya0 + us, ya1 + us, h2), _ranges(xa0 + vs, xa1 + vs, w2)

    a = _blur(a, ALIGN_SIGMA, cv2.BORDER_REFLECT_101)
    b = _blur(b, ALIGN_SIGMA, cv2.BORDER_REFLECT_101)
    a = a - a.mean(axis=(1, 2), keepdims=True)  # constants change no correlation; centred, the sums
    b = b - b.mean(axis=(1, 2), keepdims=True)  # keep their digits in float32
    spectrum_a = np.conj(np.fft.rfft2(a, s=(ny, nx)))
    spectrum_b = np.fft.rfft2(b, s=(ny, nx))
    sa, saa = _rect_sums(a, rows_a, cols_a), _rect_sums(a * a, rows_a, cols_a)
    var_a = saa - sa * sa / safe
    best = np.full(n, -1.0)
    offset = np.zeros((n, 2), np.int64)
    mirrored = np.zeros(n, bool)
    fraction = np.zeros((n, 2))
    rows, cols = us % ny, vs % nx
    for flip in (False, True):
        view = np.ascontiguousarray(b[:, :, ::-1]) if flip else b
        spectra = _mirrored_spectrum(spectrum_b, w2, nx) if flip else spectrum_b
        products = np.fft.irfft2(spectrum_a[first] * spectra[second], s=(ny, nx))[:, rows][:, :, cols]
        sb, sbb = _rect_sums(view, rows_b, cols_b), _rect_sums(view * view, rows_b, cols_b)
        var_b = sbb - sb * sb / safe
        pa, pb = first, second
        spread = np.sqrt(np.maximum(var_a[pa], 0) * np.maximum(var_b[pb], 0))
        flat = (var_a[pa] <= 1e-3 * safe) | (var_b[pb] <= 1e-3 * safe)  # a uniform overlap matches nothing
        ncc = np.where(enough & ~flat, (products - sa[pa] * sb[pb] / safe) / np.maximum(spread, 1e-12), -1.0)
        at = ncc.reshape(n, -1).argmax(axis=1)
        value = ncc.reshape(n, -1)[np.arange(n), at]
        better = value > best
        best[better] = value[better]
        offset[better] = np.stack([us[at // len(vs)], vs[at % len(vs)]], axis=1)[better]
        mirrored[better] = flip
        fraction[better] = _peak_fraction(ncc, at // len(vs), at % len(vs))[better]
    return best, offset, mirrored, fraction


def _peak_fraction(surface: np.ndarray, iu: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """(n, 2) the vertex of the parabola through each peak and its two neighbours, down and across,
    within half a pixel; 0 where a neighbour is missing or not lower."""
    n, height, width = surface.shape
    padded = np.pad(surface, ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
    at = np.arange(n)
    centre = padded[at, iu + 1, iv + 1]
    out = np.zeros((n, 2))
    for axis, (before, after) in enumerate(((padded[at, iu, iv + 1], padded[at, iu + 2, iv + 1]),
                                            (padded[at, iu + 1, iv], padded[at, iu + 1, iv + 2]))):
        curve = before - 2 * centre + after
        usable = (before > -1.0) & (after > -1.0) & (curve < -1e-9)
        out[usable, axis] = np.clip(0.5 * (before - after)[usable] / curve[usable], -0.5, 0.5)
    return out


def _gradient_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of the gradient fields of two stacks of regions (n, h, w), each region blurred by
    COMPARE_SIGMA on its own (its edges reflected: nothing from outside the region enters it)."""
    fields = []
    for x in (a, b):
        x = _blur(x, COMPARE_SIGMA, cv2.BORDER_REFLECT)
        fields.append((x[:, 1:-1, 2:] - x[:, 1:-1, :-2], x[:, 2:, 1:-1] - x[:, :-2, 1:-1]))
    (ax, ay), (bx, by) = fields
    count = 2 * ax.shape[1] * ax.shape[2]

    def total(x):
        return x.sum(axis=(1, 2), dtype=np.float64)
    mean_a, mean_b = (total(ax) + total(ay)) / count, (total(bx) + total(by)) / count
    cross = total(ax * bx) + total(ay * by) - count * mean_a * mean_b
    norm = np.sqrt((total(ax * ax) + total(ay * ay) - count * mean_a ** 2) *
                   (total(bx * bx) + total(by * by) - count * mean_b ** 2))
    return np.where(norm > 1e-9, cross / np.maximum(norm, 1e-12), 0.0)


def _shrunk(x: np.ndarray, down: float, across: float) -> np.ndarray:
    """x shrunk by these exact factors (at most 1; the size rounded, the scale kept)."""
    if down >= 1.0 and across >= 1.0:
        return x
    return cv2.resize(x, None, fx=min(across, 1.0), fy=min(down, 1.0), interpolation=cv2.INTER_AREA)


def _hypotheses(a: PhotoPrint, b: PhotoPrint) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """The pair's pixels at a common scale, once per way b's pixels may map onto a's: frame onto
    frame, and pixel onto pixel of the files (when that differs and the files' areas are within
    SAME_PIXELS_AREA of each other). The finer photo is shrunk to the coarser's scale. The flag
    says whether both are the files' own pixels (no photo shrunk): then a shift, a crop or a
    border is a whole number of pixels; otherwise it may fall between two."""
    pa, pb = a.pixels, b.pixels
    (h1, w1), (h2, w2) = pa.shape, pb.shape
    frames = (h1 / h2, w1 / w2)  # a's pixels per pixel of b
    scales = [frames]
    same = (a.scale[0] / b.scale[0], a.scale[1] / b.scale[1])
    areas = (h2 / b.scale[0] * w2 / b.scale[1]) / (h1 / a.scale[0] * w1 / a.scale[1])
    if (SAME_PIXELS_AREA[0] <= areas <= SAME_PIXELS_AREA[1]
            and max(abs(s / f - 1) for s, f in zip(same, frames)) > SCALE_TOLERANCE):
        scales.append(same)
    out = []
    files_own = a.scale == (1.0, 1.0) and b.scale == (1.0, 1.0)
    for sy, sx in scales:
        x, y = _shrunk(pa, 1 / sy, 1 / sx), _shrunk(pb, sy, sx)
        if min(*x.shape, *y.shape) >= MIN_SIDE:
            out.append((x, y, files_own and x is pa and y is pb))
    return out


def _overlaps(a: np.ndarray, b: np.ndarray, offset, mirrored: bool, fraction=(0.0, 0.0), margin: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping regions of a and b (mirrored or not, moved by `fraction` of a pixel) at
    offset (u, v), `margin` pixels in from each side that is not both photos' own edge."""
    u, v = int(offset[0]), int(offset[1])
    if mirrored:
        b = b[:, ::-1]
    if fraction[0] or fraction[1]:  # b's pixel (y + u + fu, x + v + fv) onto a's (y, x)
        b = cv2.warpAffine(np.ascontiguousarray(b, np.float32), np.float32([[1, 0, fraction[1]], [0, 1, fraction[0]]]),
                           (b.shape[1], b.shape[0]), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
    (h1, w1), (h2, w2) = a.shape, b.shape
    y0, y1, x0, x1 = max(0, -u), min(h1, h2 - u), max(0, -v), min(w1, w2 - v)
    if margin:  # on the sides where the overlap ends inside either photo, not at both photos' edges
        y0, y1 = y0 + margin * (u != 0), y1 - margin * (h1 != h2 - u)
        x0, x1 = x0 + margin * (v != 0), x1 - margin * (w1 != w2 - v)
    return a[y0:y1, x0:x1], b[y0 + u:y1 + u, x0 + v:x1 + v]


SUBPIXEL = 0.1  # a fraction of a pixel under this is not worth moving a photo for


def match_scores(first: list[PhotoPrint], second: list[PhotoPrint]) -> np.ndarray:
    """The pixel score of each pair of prints (first[i], second[i]): under each hypothesis of how
    their pixels map, the photos aligned (offset, mirror image) by their blurred correlation, then
    the correlation of the gradient fields of the overlapping regions; the best hypothesis. Where a
    photo was shrunk, the alignment may fall between pixels: the check is also made with the
    second photo moved by the fraction the correlations point to, and the better kept. 1.0 for
    the same pixels; pairs with no usable hypothesis score -1."""
    order: dict[int, int] = {}  # each print's first appearance: pairs of one photo next to each
    for p in (*first, *second):  # other, so that a block aligns each photo once
        order.setdefault(id(p), len(order))
    out = np.full(len(first), -1.0, np.float32)
    jobs: list[tuple[int, np.ndarray, np.ndarray, bool]] = []
    for i in sorted(range(len(first)), key=lambda i: (order[id(first[i])], order[id(second[i])])):
        a, b = first[i].pixels, second[i].pixels
        if first[i].scale == second[i].scale and np.array_equal(a, b) and a.max() > a.min():
            out[i] = 1.0  # the same pixels (a file listed twice), not blank: nothing to align
            continue
        jobs += [(i, x, y, native) for x, y, native in _hypotheses(first[i], second[i])]
    found = np.full(len(jobs), -1.0)
    offsets = np.zeros((len(jobs), 2), np.int64)
    mirrored = np.zeros(len(jobs), bool)
    fractions = np.zeros((len(jobs), 2))
    # Shrunk photos are aligned by the first one's inner part (a pixel in from each side): its
    # outer pixels may mix in a border or a gap that is not in the other photo.
    inset = np.array([0 if native else 1 for _, _, _, native in jobs])
    aligning = [x[k:x.shape[0] - k, k:x.shape[1] - k] if k else x for (_, x, _, _), k in zip(jobs, inset)]
    buckets: dict[tuple, list[int]] = {}
    for j, (_, _, y, _) in enumerate(jobs):
        buckets.setdefault((aligning[j].shape, y.shape), []).append(j)
    for members in buckets.values():
        for at in range(0, len(members), PAIR_BLOCK):
            block = members[at:at + PAIR_BLOCK]
            stacks = []
            for images_of in (aligning, [job[2] for job in jobs]):  # each photo once per block, however
                index: dict[int, int] = {}  # many pairs it is in
                images = []
                for j in block:
                    if id(images_of[j]) not in index:
                        index[id(images_of[j])] = len(images)
                        images.append(images_of[j])
                stacks += [np.stack(images).astype(np.float32), np.array([index[id(images_of[j])] for j in block])]
            found[block], offsets[block], mirrored[block], fractions[block] = _aligned(*stacks)
    offsets -= inset[:, None]
    checks: list[int] = []  # job of each check
    regions: dict[tuple, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for j in np.flatnonzero(found > -1.0):
        moves = [(0.0, 0.0)]
        if not jobs[j][3] and np.abs(fractions[j]).max() >= SUBPIXEL:
            moves.append(tuple(fractions[j]))
        for move in moves:  # shrunk photos: the overlap's outer pixels may mix in what lies beyond it
            x, y = _overlaps(jobs[j][1], jobs[j][2], offsets[j], bool(mirrored[j]), move, margin=0 if jobs[j][3] else 1)
            if min(x.shape) >= MIN_SIDE:
                regions.setdefault(x.shape, []).append((len(checks), x, y))
                checks.append(int(j))
    checked = np.full(len(checks), -1.0)
    for group in regions.values():
        for at in range(0, len(group), PAIR_BLOCK):
            block = group[at:at + PAIR_BLOCK]
            checked[[c for c, _, _ in block]] = _gradient_correlation(
                np.stack([x for _, x, _ in block]).astype(np.float32), np.stack([y for _, _, y in block]).astype(np.float32))
    if checks:
        np.maximum.at(out, np.array([jobs[j][0] for j in checks]), checked.astype(np.float32))
    return np.minimum(out, 1.0)


def match_score(a: PhotoPrint, b: PhotoPrint) -> float:
    """match_scores of one pair."""
    return float(match_scores([a], [b])[0])


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
