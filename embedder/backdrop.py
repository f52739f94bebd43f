"""A colour product on one neutral backdrop: what a store's photos and a shopper's photos of the same
product share.

On the colour path (polarity "keep") embedder.domain.normalise trims a photo to the product and keeps
everything else as it was: the product's own backdrop (a pink studio sweep, a green wall, a shopper's
table or living room) fills the padding and the corners of the crop, and a frozen ImageNet trunk reads
that backdrop as much as the product, so a shopper's photo finds the catalog photos taken on a
similar backdrop, not the product's. Here the product found by the same analysis
(embedder.domain.analyse: the learned product mask, the hand rules on a plain backdrop) is cut out
with its soft edge and laid on one neutral grey, trimmed and centred in the model's square; catalog
photos and queries take the same path, so both sides agree. A photo without a clear product (a
texture, a product filling the frame) is searched as it is: the photo (or the shopper's region) fitted
into the square on the same grey, its own colours kept; the photo is analysed once either way.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from embedder.domain import analyse, mask_at, shrink
from embedder.domain_settings import DomainSettings
from embedder.images import as_rgb
from embedder.mask import ProductMask
from embedder.regions import dilate, fill_holes, with_context

NEUTRAL_GREY = 0.5  # the product's backdrop level (0..1), chosen on validation products (reports/colour-products/backdrops.md)
# The mask's product share mapped linearly from EDGE[0] (none of the photo kept) to EDGE[1] (all of it): the
# mask's soft rim, read off a 64-px photo, holds a ring of the old backdrop; a steeper ramp leaves less of it.
EDGE = (0.3, 0.7)
WHOLE = (0.0, 0.0, 1.0, 1.0)


def product_mask(image: Image.Image, settings: DomainSettings = DomainSettings(),
                 within: tuple[float, float, float, float] | None = None,
                 mask_model: ProductMask | None = None):
    """(box, mask) of the product in `image`: box as fractions of the photo, mask the product's share of
    each pixel on the analysis grid (embedder.domain.ANALYSIS_SIDE); None when no clear product stands
    out. Where the analysis kept no mask (a plain backdrop found by the hand rules), what differs from
    the fitted backdrop by more than the rules' threshold, holes filled."""
    analysis = analyse(image, settings, within, mask_model, offer_others=False)
    if not analysis.clear_background or analysis.box is None:
        return None
    mask = analysis.mask
    if mask is None:
        pixels = shrink(image)
        h, w = pixels.shape[:2]
        background = analysis.background_at(np.linspace(0, 1, w), np.linspace(0, 1, h))
        threshold = max(settings.min_contrast, settings.noise_factor * analysis.noise)
        mask = fill_holes(dilate(np.linalg.norm(pixels - background, axis=2) > threshold, 1))
        if not mask.any():
            return None
    return analysis.box, np.asarray(mask, np.float32)


def on_backdrop(image: Image.Image, *, size: int, grey: float = NEUTRAL_GREY, margin: float = 0.0,
                region: tuple[int, int, int, int] | None = None, settings: DomainSettings = DomainSettings(),
                mask_model: ProductMask | None = None, edge: tuple[float, float] = EDGE) -> np.ndarray:
    """RGB photo -> uint8 (3, size, size): the product cut out, trimmed, centred with its aspect kept and
    laid on the grey level `grey` (0..1). region: the shopper's query region in whole pixels, as
    normalise takes it. A photo without a clear product: the photo (or the region) as it is, fitted on
    the grey (for a square photo, or a region without margin, normalise's view of it)."""
    image, within = as_rgb(image), None
    if region is not None:
        image, within = with_context(image, region, settings.context)
    found = product_mask(image, settings, within, mask_model)
    if found is None:  # all of it kept: a mask of one pixel that is all product
        found = (within or WHOLE), np.ones((1, 1), np.float32)
    return compose(image, *found, size=size, grey=grey, margin=margin, edge=edge)


def compose(image: Image.Image, box: tuple[float, float, float, float], mask: np.ndarray, *, size: int,
            grey: float = NEUTRAL_GREY, margin: float = 0.0, edge: tuple[float, float] = EDGE) -> np.ndarray:
    """The product of `image` (its box and mask, product_mask's) cut out, fitted into the square `size`
    (aspect kept, `margin` of the side left free) and laid on `grey`: uint8 (3, size, size)."""
    width, height = image.size
    x0, y0 = int(np.floor(box[0] * width)), int(np.floor(box[1] * height))
    x1, y1 = max(x0 + 1, int(np.ceil(box[2] * width))), max(y0 + 1, int(np.ceil(box[3] * height)))
    cw, ch = x1 - x0, y1 - y0
    side = max(cw, ch) / (1.0 - 2 * margin)
    tw, th = min(size, max(1, round(size * cw / side))), min(size, max(1, round(size * ch / side)))
    part = np.asarray(image.crop((x0, y0, x1, y1)).resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0),
                      np.float32) / 255.0
    xs = (x0 + (np.arange(tw) + 0.5) * cw / tw) / width
    ys = (y0 + (np.arange(th) + 0.5) * ch / th) / height
    keep = ((mask_at(mask, xs, ys) - edge[0]) / max(edge[1] - edge[0], 1e-6)).clip(0, 1)[..., None]
    canvas = np.full((size, size, 3), grey, np.float32)
    left, top = (size - tw) // 2, (size - th) // 2
    canvas[top:top + th, left:left + tw] = part * keep + grey * (1 - keep)
    return np.ascontiguousarray((canvas.clip(0, 1) * 255 + 0.5).astype(np.uint8).transpose(2, 0, 1))
