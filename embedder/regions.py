"""Where the product is in a photo: the shopper's query box, connected regions of a mask, and
the automatic product crop for cluttered backgrounds.

All the measuring runs on small arrays (the photo shrunk to about 128 px), so a query pays a
few milliseconds, not a segmentation model.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from embedder.domain_settings import DomainSettings
from embedder.images import ImageError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels, x1/y1 exclusive


class BoxError(ImageError):
    """A query region that does not select part of the photo."""


def parse_box(text: str) -> Box:
    """'x0,y0,x1,y1' (the CLI and form-field spelling) -> a box; BoxError if it is not four numbers."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise BoxError(f"a box is four numbers x0,y0,x1,y1; got {text!r}")
    try:
        return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise BoxError(f"a box is four numbers x0,y0,x1,y1; got {text!r}") from None


def check_box(box: Sequence, width: int, height: int) -> tuple[int, int, int, int]:
    """Validate a query region against a width x height photo; returns whole-pixel bounds.

    The box must be four finite numbers with x0 < x1 and y0 < y1, and lie inside the photo
    (a fraction of a pixel outside is rounded in, so a box drawn to the edge is accepted)."""
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise BoxError(f"a box is four numbers (x0, y0, x1, y1); got {box!r}")
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in box):
        raise BoxError(f"a box is four numbers (x0, y0, x1, y1); got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise BoxError(f"box {box!r} has a value that is not a finite number")
    if x0 >= x1 or y0 >= y1:
        raise BoxError(f"box {box!r} is empty or reversed: it needs x0 < x1 and y0 < y1")
    if x0 < -0.5 or y0 < -0.5 or x1 > width + 0.5 or y1 > height + 0.5:
        raise BoxError(f"box {box!r} reaches outside the {width}x{height} photo")
    left, top = max(0, int(math.floor(x0 + 0.5))), max(0, int(math.floor(y0 + 0.5)))
    right, bottom = min(width, int(math.floor(x1 + 0.5))), min(height, int(math.floor(y1 + 0.5)))
    if right - left < 1 or bottom - top < 1:
        raise BoxError(f"box {box!r} selects less than one pixel of the photo")
    return left, top, right, bottom


def crop_to_box(image: Image.Image, box: Sequence | None) -> Image.Image:
    """The part of the photo inside the query region (the whole photo when box is None)."""
    if box is None:
        return image
    return image.crop(check_box(box, *image.size))


def label_regions(mask: np.ndarray, connectivity: int = 4) -> np.ndarray:
    """4- or 8-connected regions of a boolean mask: int32 labels (-1 outside the mask), each region
    labelled by its smallest pixel index (a label that says where the region starts, whatever
    order the labelling ran in)."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    flat = labels.reshape(-1)
    ids, first = np.unique(flat, return_index=True)  # each component's first pixel in row-major order
    starts = np.full(count, -1, np.int32)
    starts[ids] = first
    starts[0] = -1  # OpenCV's 0 is everything outside the mask
    return starts[labels]


def regions(mask: np.ndarray, connectivity: int = 4) -> list[dict]:
    """Each connected region of the mask: its label, pixel count, bounding box (x0, y0, x1, y1)
    in mask pixels, centroid, and how much of it lies on the mask's edge."""
    return region_stats(label_regions(mask, connectivity))


def region_stats(labels: np.ndarray) -> list[dict]:
    """As `regions`, for a label image (-1 outside every region)."""
    h, w = labels.shape
    found = labels[labels >= 0]
    if found.size == 0:
        return []
    ids, counts = np.unique(found, return_counts=True)
    ys, xs = np.nonzero(labels >= 0)
    lab = labels[ys, xs]
    order = np.searchsorted(ids, lab)
    out = []
    x_min = np.full(len(ids), w); x_max = np.zeros(len(ids), int)
    y_min = np.full(len(ids), h); y_max = np.zeros(len(ids), int)
    np.minimum.at(x_min, order, xs); np.maximum.at(x_max, order, xs)
    np.minimum.at(y_min, order, ys); np.maximum.at(y_max, order, ys)
    cx = np.bincount(order, xs, len(ids)) / counts
    cy = np.bincount(order, ys, len(ids)) / counts
    edge = (xs == 0) | (ys == 0) | (xs == w - 1) | (ys == h - 1)
    on_edge = np.bincount(order, edge, len(ids))
    for i, label in enumerate(ids):
        out.append({"label": int(label), "area": int(counts[i]),
                    "box": (int(x_min[i]), int(y_min[i]), int(x_max[i]) + 1, int(y_max[i]) + 1),
                    "centre": (float(cx[i]), float(cy[i])), "edge_pixels": int(on_edge[i])})
    return out


def specks(mask: np.ndarray, min_share: float, connectivity: int = 4) -> np.ndarray:
    """Pixels of the regions smaller than min_share of the mask (noise, JPEG ringing)."""
    labels = label_regions(mask, connectivity)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    small = ids[counts < min_share * mask.sum()]
    return np.isin(labels, small)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every enclosed hole filled (background not reachable from the edge)."""
    h, w = mask.shape
    outside = np.ones((h + 2, w + 2), np.uint8)  # a rim of background joins every edge-touching part
    outside[1:-1, 1:-1] = ~mask
    flood = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2, flags=4)
    return outside[1:-1, 1:-1] != 2


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """4-neighbour dilation, `steps` times (nothing grows in from beyond the photo's edge)."""
    if steps <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), _CROSS, iterations=steps, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)


def erode(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """4-neighbour erosion, `steps` times (the photo's edge counts as inside)."""
    return ~dilate(~mask, steps)


def product_region(mask: np.ndarray, *, min_share: float = 0.02, connectivity: int = 4) -> np.ndarray | None:
    """The automatic product crop: the region most likely to be the product, with the pieces
    of it that a one-pixel gap separates (a product split by a faint stripe).

    Score = area x closeness to the centre x share of the region not cut by the photo's edge:
    clutter tends to be small, off-centre, or a surface running out of the frame. Things lying
    beside the product, even touching its box, stay out. Returns the chosen pixels of the
    mask, or None when nothing stands out."""
    ranked = ranked_regions(mask, min_share=min_share, connectivity=connectivity, limit=1)
    return ranked[0] if ranked else None


def ranked_regions(mask: np.ndarray, *, min_share: float = 0.02, connectivity: int = 4,
                   limit: int | None = None, colours: np.ndarray | None = None, neck_depth: int = 0,
                   neck_colour: float = 0.3) -> list[np.ndarray]:
    """The candidate regions of the automatic crop (see product_region), most likely product
    first, each as its pixels of the mask: the objects a shopper may have meant.

    colours + neck_depth > 0: where more than one region stands out, a region made of two things
    touching along a thin join is split there (see split_at_necks) before scoring."""
    h, w = mask.shape
    closed = erode(dilate(mask, 1), 1) | mask
    labels = label_regions(closed, connectivity)
    found = [r for r in region_stats(labels) if r["area"] >= min_share * closed.sum()]
    if neck_depth > 0 and colours is not None and len(found) > 1:
        labels = split_at_necks(labels, found, colours, mask, neck_depth, neck_colour, connectivity)
        found = [r for r in region_stats(labels) if r["area"] >= min_share * closed.sum()]
    if not found:
        return []
    diagonal = math.hypot(w, h)

    def score(r: dict) -> float:
        cx, cy = r["centre"]
        off_centre = math.hypot(cx - (w - 1) / 2, cy - (h - 1) / 2) / (diagonal / 2)
        x0, y0, x1, y1 = r["box"]
        perimeter = 2 * ((x1 - x0) + (y1 - y0))
        cut = min(1.0, r["edge_pixels"] / max(1, perimeter) * 2)
        return r["area"] * (1.0 - 0.8 * off_centre) * (1.0 - 0.7 * cut)

    out = []
    for r in sorted(found, key=score, reverse=True)[:limit]:  # stable: ties keep the regions' order, as max did
        pixels = mask & (labels == r["label"])
        if pixels.any():
            out.append(pixels)
    return out


def split_at_necks(labels: np.ndarray, candidates: list[dict], colours: np.ndarray, mask: np.ndarray, depth: int,
                   same_colour: float, connectivity: int = 4) -> np.ndarray:
    """The candidate regions (region_stats of labels) split where two things touch along a thin join
    (a product lying against a box).

    A region's core (what survives `depth` erosions) falls apart at such a join; each of the
    region's pixels goes to its nearest core piece, and pieces whose median colours lie within
    `same_colour` of each other join again (a garment's own narrow waist or strap is one colour).
    Returns new labels: split pieces get fresh labels, the rest keep theirs."""
    out = labels.copy()
    fresh = int(labels.size) + 1
    for r in candidates:
        x0, y0, x1, y1 = r["box"]
        if min(x1 - x0, y1 - y0) <= 2 * depth:  # nothing of it survives the erosions
            continue
        window = np.s_[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1]  # the region and a rim of outside
        region = labels[window] == r["label"]
        core = erode(region, depth) & region
        core_labels = label_regions(core, connectivity)
        pieces = np.unique(core_labels[core_labels >= 0])
        if len(pieces) < 2:
            continue
        # Each region pixel takes the label of the nearest core pixel.
        _, nearest = cv2.distanceTransformWithLabels((~core).astype(np.uint8), cv2.DIST_L2, 3,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        ys, xs = np.nonzero(core)
        index_of = np.zeros(len(ys) + 1, np.int64)
        # DIST_LABEL_PIXEL numbers core pixels 1..n in row-major order, as np.nonzero lists them.
        index_of[1:] = np.searchsorted(pieces, core_labels[ys, xs])
        piece_of = np.where(region, index_of[nearest], -1)
        shown, seen = colours[window], mask[window]
        colour = [np.median(shown[(piece_of == i) & seen], axis=0) if ((piece_of == i) & seen).any()
                  else np.full(3, np.inf) for i in range(len(pieces))]
        group = list(range(len(pieces)))

        def root(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i
        for i in range(len(pieces)):
            for j in range(i + 1, len(pieces)):
                if np.linalg.norm(colour[i] - colour[j]) <= same_colour:
                    group[root(j)] = root(i)
        roots = sorted({root(i) for i in range(len(pieces))})
        if len(roots) < 2:
            continue
        for kept in roots:
            members = [i for i in range(len(pieces)) if root(i) == kept]
            out[window][np.isin(piece_of, members)] = fresh
            fresh += 1
    return out


def context_view(region: tuple[int, int, int, int], width: int, height: int, share: float) -> tuple[int, int, int, int]:
    """The query region (whole pixels) grown by `share` of its size on each side, within the photo."""
    x0, y0, x1, y1 = region
    dx, dy = round((x1 - x0) * share), round((y1 - y0) * share)
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def with_context(image: Image.Image, region: tuple[int, int, int, int], share: float):
    """The query region (whole pixels) with `share` of its size around it, and where the region
    lies in that view (fractions): the background is measured on what surrounds the product."""
    x0, y0, x1, y1 = region
    view = context_view(region, image.width, image.height, share)
    vw, vh = view[2] - view[0], view[3] - view[1]
    within = ((x0 - view[0]) / vw, (y0 - view[1]) / vh, (x1 - view[0]) / vw, (y1 - view[1]) / vh)
    return image.crop(view), within


def within_region(foreground: np.ndarray, inside: np.ndarray, settings: DomainSettings) -> np.ndarray:
    """What inside the shopper's region is the product (see DomainSettings.region_choice).
    foreground: what stands out in the whole view, the region and the context around it."""
    choice = settings.region_choice
    candidates = foreground & inside
    if choice.startswith("inside"):  # a shopper's box holds the product whole: what runs far out of it is clutter
        labels = label_regions(foreground, settings.connectivity)
        ids = labels[foreground]
        total = np.bincount(ids, minlength=labels.size)
        within = np.bincount(labels[candidates], minlength=labels.size)
        clutter = (within > 0) & (within < (1.0 - settings.max_outside_share) * total)
        candidates = candidates & ~np.isin(labels, np.nonzero(clutter)[0])
    candidates &= ~specks(candidates, settings.min_region_share, settings.connectivity)
    if choice.endswith("product") and candidates.any():
        ys, xs = np.nonzero(inside)  # chosen as on a photo cropped to the region: its centre, its edges
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        picked = product_region(candidates[y0:y1, x0:x1], min_share=settings.min_region_share,
                                connectivity=settings.connectivity)
        candidates = np.zeros_like(candidates)
        if picked is not None:
            candidates[y0:y1, x0:x1] = picked
    return candidates
