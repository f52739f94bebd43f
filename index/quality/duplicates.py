"""Is this listing's photo a copy of that one? The pixel check behind the hygiene report's
near-duplicate groups (index.quality.near_duplicates), made to survive what stores do to a photo they list
again: re-encoding, resizing, a shift of a few pixels, other lighting, a slight crop, a mirror image,
a watermark or a border, and still refuse two distinct items that merely look alike.

Each photo is decoded once into a PhotoPrint (index.quality.photo_prints): its grey pixels at most
WORK_SIDE a side and how many of them stand for one pixel of the file (`scale`).

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

import cv2
import numpy as np

from index.quality.photo_prints import PhotoPrint

ALIGN_SIGMA = 0.7  # Gaussian blur (work pixels) for finding the offset
COMPARE_SIGMA = 1.3  # Gaussian blur (work pixels) before the gradients are compared
REACH = 0.14  # offsets searched beyond the difference in size, as a share of the longer side
MIN_OVERLAP = 0.7  # an offset counts when the overlap covers this share of the smaller photo ...
MIN_OVERLAP_LARGER = 0.5  # ... and this share of the larger one
SAME_PIXELS_AREA = (0.5, 2.0)  # file areas' ratio within which pixel-onto-pixel is tried (crop, border)
SCALE_TOLERANCE = 0.02  # hypotheses whose scales differ less than this are one
MIN_SIDE = 8  # a photo brought under this many pixels a side is not compared
PAIR_BLOCK = 1024  # pairs compared at once


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

