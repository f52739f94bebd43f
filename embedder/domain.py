"""Bring any photo into the catalog's domain: find the background from the border, trim to the
product, keep its aspect (a square padded with background), match the catalog's polarity and
levels.

Fashion-MNIST was made this way from Zalando's product photos (trimmed, longest edge fitted,
centred, negated), so a shopper's photo of a dark product on a white table becomes what the
model was trained on. An image already in the domain (a native 28-px catalog image: dark
border, already trimmed and centred) passes through unchanged: the same path serves training,
catalog building and queries.

Only when confident: a photo without a clear background (a border that is neither plain nor
set apart from the middle: noise, a full-frame texture, a product filling the frame edge to edge)
is left as it is, only fitted into the model's square; nothing is trimmed, masked or re-levelled,
so distinct photos stay distinct.

Measuring runs on the photo shrunk to ANALYSIS_SIDE px; only the final crop is resampled from
the full-resolution photo, straight to the model's size.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from PIL import Image

from embedder.domain_settings import DomainSettings
from embedder.images import LUMA, ImageError, as_rgb
from embedder.mask import ProductMask, default_mask
from embedder.regions import dilate, fill_holes, ranked_regions, with_context, within_region

ANALYSIS_SIDE = 128
MAX_OTHER_OBJECTS = 3  # other things in a photo offered to the shopper besides the automatic crop
OTHER_OBJECT_SHARE = 0.2  # ... each at least this share of the chosen product's area
SHARPEN_SIGMA, SHARPEN_FROM = 1.0, 2.0  # see DomainSettings.sharpen (embedder.domain_settings)
MASK_SIDE = 64  # the learned mask reads the analysis image shrunk to this (about 5 ms on one core)
MASK_FROM = 64  # ... and only photos at least this large: a catalog image (28 px) keeps the measured path


class UnusablePhotoError(ImageError):
    """A photo that holds nothing to search for (blank, uniform or tiny)."""


@dataclass
class Analysis:
    """What was measured on a photo (coordinates are fractions of the photo's width and height)."""
    background: np.ndarray  # (3, 3): per RGB channel the plane a + b*x + c*y, values 0..1
    noise: float  # median colour distance of the border's background pixels from that plane
    cluttered: bool
    box: tuple[float, float, float, float] | None  # the product's extent, None if nothing stands out
    mask: np.ndarray | None  # the product's share of each pixel (analysis grid) where the rest is masked off
    contrast: float  # how far the photo's colours spread (see photo_contrast), 0..1.7
    clear_background: bool = False  # False: no confident background; the photo is left as it is
    # The evidence for it: the product region's share of the photo, its share of all that stands
    # out, and the share of the border that stands out.
    product_share: float = 0.0
    coherence: float = 0.0
    border_product: float = 0.0
    # Without a query region: the other things that stand out as much as a product might (the
    # automatic crop's next candidates, at least OTHER_OBJECT_SHARE of the chosen one's area), best
    # first, as boxes like `box`: what else the shopper may have meant.
    others: list = field(default_factory=list)

    def background_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Background colour (H, W, 3) at relative coordinates xs (W,) and ys (H,)."""
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([c[0] + c[1] * gx + c[2] * gy for c in self.background], axis=-1).clip(0, 1)

    @property
    def light_background(self) -> bool:
        mean = self.background_at(np.array([0.5]), np.array([0.5]))[0, 0]
        return float(mean @ LUMA) > 0.5


def shrink(image: Image.Image, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """RGB float32 (H, W, 3) in 0..1 with the longest side at most `side` (never enlarged).
    16-bit and float images are scaled to their range as the decoder does, not clipped."""
    image = as_rgb(image)
    w, h = image.size
    scale = min(1.0, side / max(w, h))
    if scale < 1.0:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                             Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image, dtype=np.float32) / 255.0


def _border(h: int, w: int) -> np.ndarray:
    width = max(1, round(0.03 * max(h, w)))
    border = np.zeros((h, w), bool)
    border[:width] = border[-width:] = True
    border[:, :width] = border[:, -width:] = True
    return border


def fit_side(pixels: np.ndarray, side: int) -> np.ndarray:
    """pixels (H, W, C) resized (area average) so that the longest side is `side` (never enlarged)."""
    h, w = pixels.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return pixels
    return cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def mask_input(image: Image.Image, side: int = MASK_SIDE) -> np.ndarray:
    """A photo as the learned mask reads it: the analysis image shrunk to `side` (training composites
    take this same path, so the model learns on what queries give it)."""
    return fit_side(shrink(image), side)


def learned_foreground(pixels: np.ndarray, mask_model: ProductMask) -> np.ndarray:
    """The learned mask's probability of product (H, W) on the analysis grid `pixels`."""
    h, w = pixels.shape[:2]
    probability = mask_model.probability(fit_side(pixels, MASK_SIDE))
    return cv2.resize(probability, (w, h), interpolation=cv2.INTER_LINEAR)


def fit_background(pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Fit a smooth background (a plane per channel: plain and gradient backdrops) to the
    border; robust to the product touching the edge. Returns (planes, noise, outlier share)."""
    h, w, _ = pixels.shape
    border = _border(h, w)
    ys, xs = np.nonzero(border)
    rel_x = xs / max(1, w - 1)
    rel_y = ys / max(1, h - 1)
    design = np.stack([np.ones_like(rel_x), rel_x, rel_y], axis=1).astype(np.float32)
    values = pixels[ys, xs]  # (n, 3)
    keep = np.ones(len(values), bool)
    median = np.median(values, axis=0)
    keep = np.linalg.norm(values - median, axis=1) <= max(0.1, 3 * _spread(values - median))
    planes = np.zeros((3, 3), np.float32)
    for _ in range(2):
        if keep.sum() < 6:
            planes[:, 0] = median
            break
        solution, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        planes = solution.T.astype(np.float32)
        residual = np.linalg.norm(values - design @ solution, axis=1)
        keep = residual <= max(0.04, 3 * float(np.median(residual[keep])))
    residual = np.linalg.norm(values - design @ planes.T, axis=1)
    noise = float(np.median(residual[keep])) if keep.any() else float(np.median(residual))
    return planes, noise, float(1.0 - keep.mean())


def _spread(values: np.ndarray) -> float:
    """Robust standard deviation (1.4826 x median absolute deviation) of norms or values."""
    values = np.linalg.norm(values, axis=1) if values.ndim == 2 else np.abs(values)
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else 0.0


def palette(values: np.ndarray, size: int) -> np.ndarray:
    """k-means colours (size, 3) of values (n, 3): OpenCV's k-means++, seeded the same way for
    every photo so one photo always gives one answer."""
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1e-3)
    _, _, centres = cv2.kmeans(np.ascontiguousarray(values, np.float32), min(size, len(values)), None,
                               criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centres


def background_distance(pixels: np.ndarray, background: np.ndarray, settings: DomainSettings) -> tuple[np.ndarray, float]:
    """Each pixel's colour distance from the background (the plane plus the border's palette of
    tones around it), and the distance above which a pixel counts as product."""
    h, w, _ = pixels.shape
    residual = (pixels - background).reshape(-1, 3)
    border = _border(h, w).reshape(-1)
    centres = palette(residual[border], settings.palette_size)
    distance = np.full(h * w, np.inf, np.float32)
    for centre in centres:  # one pass per colour: no (pixels x colours x 3) array
        np.minimum(distance, np.linalg.norm(residual - centre, axis=1), out=distance)
    threshold = settings.palette_factor * float(np.quantile(distance[border], settings.palette_quantile))
    return distance.reshape(h, w), max(settings.min_contrast, threshold)


def photo_contrast(pixels: np.ndarray) -> float:
    """How far a photo's colours spread: the 99.5th percentile of the colour distance from its
    median colour, after a 3x3 blur (sensor noise and a few specks on a blank photo count for
    little; any product covering more than a speck counts in full)."""
    smooth = cv2.blur(pixels, (3, 3)) if min(pixels.shape[:2]) >= 3 else pixels
    colours = smooth.reshape(-1, 3)
    return float(np.quantile(np.linalg.norm(colours - np.median(colours, axis=0), axis=1), 0.995))


def analyse(image: Image.Image, settings: DomainSettings = DomainSettings(),
            within: tuple[float, float, float, float] | None = None, mask_model: ProductMask | None = None,
            offer_others: bool = True) -> Analysis:
    """Background, clutter and the product's extent of one photo.

    Without a confident background (see DomainSettings' confidence fields) the box is the whole
    photo (or the query region) and clear_background is False: nothing is to be trimmed.
    within: the shopper's query region (fractions of the photo): the product is whatever stands
    out inside it, measured against the background around it.
    mask_model: the learned product mask (default: the shipped one) where settings.product_finder
    asks for it; photos smaller than MASK_FROM (catalog images) always take the hand rules.
    offer_others: also find the other things beside the product (Analysis.others; a search skips them)."""
    pixels = shrink(image)
    h, w, _ = pixels.shape
    probability = None
    if settings.product_finder != "rules" and max(image.size) >= MASK_FROM and (within is None or settings.mask_in_box):
        mask_model = mask_model or default_mask()
        if mask_model is not None:
            probability = learned_foreground(pixels, mask_model)
    planes, noise, _ = fit_background(pixels)
    result = Analysis(planes, noise, False, (0.0, 0.0, 1.0, 1.0) if within is None else within, None,
                      photo_contrast(pixels))
    background = result.background_at(np.linspace(0, 1, w), np.linspace(0, 1, h))
    result.cluttered = noise > settings.clutter_noise  # a textured or busy backdrop

    @functools.cache  # asked for up to twice on the learned path (refinement, other things): measured once
    def rules() -> np.ndarray:  # what stands out from the border's background, by the hand rules
        if result.cluttered:
            distance, threshold = background_distance(pixels, background, settings)
        else:  # a plain backdrop (or a catalog image: the product may fill the border's palette)
            distance = np.linalg.norm(pixels - background, axis=2)
            threshold = max(settings.min_contrast, settings.noise_factor * noise)
        return distance > threshold
    if probability is not None and (settings.product_finder == "learned" or within is not None):
        foreground = probability > settings.mask_threshold  # the rules only where they are asked for (a few ms)
    else:
        foreground = rules()
    result.border_product = float(foreground[_border(h, w)].mean())
    if result.cluttered and settings.clutter_crop == "frame" and within is None:
        result.clear_background = True
        return result
    if within is not None:  # the shopper chose: everything that stands out inside the region
        inside = np.zeros((h, w), bool)
        inside[int(within[1] * h):int(np.ceil(within[3] * h)), int(within[0] * w):int(np.ceil(within[2] * w))] = True
        chosen = within_region(foreground, inside, settings)
        foreground = foreground & inside  # a new array: rules() keeps what it measured
        if settings.fill_of == "extent" and chosen.any():  # a loose box: the fill of what the product spans
            ys, xs = np.nonzero(chosen)
            span = np.zeros_like(inside)
            span[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        else:
            span = inside
        if chosen.sum() < settings.min_region_fill * span.sum() and result.border_product <= settings.max_border_product:
            result.clear_background = True  # the region as the shopper drew it (result.box), unmasked
            return result
        others = []
    else:  # the product is one region among others (a plain backdrop may hold a stray thing too)
        ranked = ranked_regions(foreground, min_share=settings.min_region_share, connectivity=settings.connectivity,
                                limit=1 + MAX_OTHER_OBJECTS, colours=pixels, neck_depth=settings.neck_depth,
                                neck_colour=settings.neck_colour)
        if probability is not None and settings.product_finder == "both" and ranked:
            # The hand rules' candidates, arbitrated by the learned mask: the one it most agrees with
            # wins, grown by the learned product pixels that touch it.
            learned = probability > settings.mask_threshold
            agreement = [float((r & learned).sum()) / float((r | learned).sum() or 1) for r in ranked]
            best = int(np.argmax(agreement))
            ranked = [ranked[best]] + ranked[:best] + ranked[best + 1:]
            ranked[0] = ranked[0] | (learned & dilate(ranked[0], 2))
        chosen = ranked[0] if ranked else None
        others = [r for r in ranked[1:] if chosen is not None and r.sum() >= OTHER_OBJECT_SHARE * chosen.sum()]
        if probability is not None and settings.product_finder == "learned":
            if chosen is None or float(probability[chosen].mean()) < settings.mask_confidence:
                # The mask sees no product it is sure of (noise, a drawing unlike any product): the rules decide.
                return analyse(image, replace(settings, product_finder="rules"), within, offer_others=offer_others)
            if settings.refine_on_plain and not result.cluttered:
                # On a plain backdrop the rules mark the product's own pixels exactly (the mask reads a 64-px
                # photo): theirs near the mask's product, unless they lose much of it (a light product's faint parts).
                exact = rules() & dilate(chosen, 2)
                if exact.sum() >= settings.refine_on_plain * chosen.sum():
                    chosen = exact
            # What else stands out, offered to the shopper, is what the rules find beside the product.
            beside = [] if not offer_others else ranked_regions(
                rules(), min_share=settings.min_region_share, connectivity=settings.connectivity,
                limit=1 + MAX_OTHER_OBJECTS, colours=pixels, neck_depth=settings.neck_depth, neck_colour=settings.neck_colour)
            others = [r for r in beside if (r & chosen).sum() < 0.5 * r.sum()
                      and r.sum() >= OTHER_OBJECT_SHARE * chosen.sum()][:MAX_OTHER_OBJECTS]
    if chosen is None or not chosen.any():
        return result
    result.product_share = float(chosen.sum() / (h * w))
    result.coherence = float(chosen.sum() / foreground.sum())
    result.clear_background = (result.product_share >= settings.min_product_share
                               and chosen.sum() >= settings.min_product_pixels
                               and result.coherence >= settings.min_coherence
                               and result.border_product <= settings.max_border_product)
    if not result.clear_background:
        return result
    if probability is not None:  # the learned mask says how much of each pixel is product
        result.mask = np.where(fill_holes(chosen), np.maximum(probability, chosen.astype(np.float32)), 0.0)
    elif result.cluttered and settings.clutter_crop == "region-mask":
        result.mask = fill_holes(dilate(chosen, 1))
    # On a shrunk photo the product's edge lies somewhere inside the outermost marked pixel
    # (only part of it is product): take its middle. A photo at full size keeps whole pixels.
    inset = 0.5 if max(image.size) > max(w, h) else 0.0
    result.box = _extent(chosen, inset)
    result.others = [_extent(other, inset) for other in others]
    return result


def _extent(pixels: np.ndarray, inset: float) -> tuple[float, float, float, float]:
    """The box of the marked pixels as fractions of the grid, each edge `inset` pixels in."""
    h, w = pixels.shape
    ys, xs = np.nonzero(pixels)
    return (xs.min() + inset) / w, (ys.min() + inset) / h, (xs.max() + 1 - inset) / w, (ys.max() + 1 - inset) / h


def refuse_unusable(image: Image.Image, *, min_side: int = 16, min_contrast: float = 0.04) -> None:
    """Raise UnusablePhotoError for a photo that holds nothing to search for: smaller than
    min_side, or its colours spread less than min_contrast (blank or uniform). Cheap (a shrink
    and a percentile): a query checks this before the normalisation measures the photo itself."""
    w, h = image.size
    if min(w, h) < min_side:
        raise UnusablePhotoError(f"the photo is too small ({w}x{h} pixels): use one at least "
                                 f"{min_side} pixels on each side that shows the product")
    if photo_contrast(shrink(image)) < min_contrast:
        raise UnusablePhotoError("the photo looks blank or uniform: nothing in it stands out from the "
                                 "background; use a photo that shows the product")


def check_photo(image: Image.Image, *, min_side: int = 16, min_contrast: float = 0.04) -> Analysis:
    """refuse_unusable, then the photo's analysis (where the product is). A photo without a
    clear background (a texture, a product filling the frame) is searched as it is."""
    refuse_unusable(image, min_side=min_side, min_contrast=min_contrast)
    return analyse(image)


def _placement(box, width: int, height: int, size: int, margin: float):
    """Pixel crop (left, top, right, bottom) of the product and its square side in photo pixels;
    None when the photo is already square, trimmed and centred to within one output pixel."""
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    side = max(1.0, x1 - x0, y1 - y0) / max(1e-6, 1.0 - 2 * margin)
    pixel = max(width, height) / size  # one output pixel, in photo pixels
    if (abs(width - height) <= pixel and side >= max(width, height) - pixel
            and abs((x0 + x1) / 2 - width / 2) <= pixel and abs((y0 + y1) / 2 - height / 2) <= pixel):
        return None
    left, top = int(np.floor(x0)), int(np.floor(y0))
    return (left, top, max(left + 1, int(np.ceil(x1))), max(top + 1, int(np.ceil(y1)))), side


def normalise(image: Image.Image, *, size: int, channels: int, polarity: str, margin: float = 0.0,
              settings: DomainSettings = DomainSettings(), region: tuple[int, int, int, int] | None = None,
              mask_model: ProductMask | None = None) -> np.ndarray:
    """RGB photo -> uint8 (C, size, size) in the catalog's domain.

    polarity: "light-on-dark" (the product bright on black, Fashion-MNIST), "dark-on-light", or
    "keep" (the photo's own colours; only trimmed and padded).
    region: the shopper's query region in whole pixels (embedder.regions.check_box): the product
    is found inside it, the background measured around it.
    A photo (or region) without a clear background is only fitted into the square, as it is."""
    image = as_rgb(image)
    within = None
    if region is not None:
        image, within = with_context(image, region, settings.context)
    analysis = analyse(image, settings, within, mask_model, offer_others=False)
    width, height = image.size
    placed = _placement(analysis.box, width, height, size, margin)
    if placed is None:  # nothing to trim: the whole frame, padded to a square
        crop, side = (0, 0, width, height), float(max(width, height))
    else:
        crop, side = placed
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    tw, th = max(1, round(size * cw / side)), max(1, round(size * ch / side))
    tw, th = min(tw, size), min(th, size)
    part = image.crop(crop).resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if not analysis.clear_background:
        return _as_it_is(part, size, channels, polarity, settings.light_frame)
    pixels = np.asarray(part, dtype=np.float32) / 255.0
    xs = (crop[0] + (np.arange(tw) + 0.5) * cw / tw) / width
    ys = (crop[1] + (np.arange(th) + 0.5) * ch / th) / height
    background = analysis.background_at(xs, ys)
    along_colour = (channels == 1 and polarity != "keep"
                    and (settings.signal == "colour" or (settings.signal == "colour-on-clutter" and analysis.cluttered)))
    if channels == 1 and not along_colour:
        pixels, background = (pixels @ LUMA)[..., None], (background @ LUMA)[..., None]
    if analysis.mask is not None:  # cluttered: what is not the product becomes background
        keep = mask_at(analysis.mask, xs, ys)[..., None]
        pixels = pixels * keep + background * (1 - keep)
    if along_colour:
        out = _colour_levels(pixels, background, polarity)
    else:
        darker = analysis.light_background if settings.contrast_sign == "backdrop" else _darker_than_background(pixels, background)
        out = _levels(pixels, background, polarity, darker)
    canvas_value = 0.0 if polarity == "light-on-dark" else 1.0
    if polarity == "keep":
        canvas = np.broadcast_to(background.mean(axis=(0, 1)), (size, size, out.shape[2])).copy()
    else:
        canvas = np.full((size, size, out.shape[2]), canvas_value, np.float32)
    _paste_centred(canvas, out)
    if settings.sharpen > 0 and polarity != "keep" and side / size >= SHARPEN_FROM:
        blurred = cv2.GaussianBlur(canvas, (0, 0), SHARPEN_SIGMA, borderType=cv2.BORDER_REPLICATE)
        canvas = canvas + settings.sharpen * (canvas - blurred.reshape(canvas.shape))
    return np.ascontiguousarray((canvas.clip(0, 1) * 255 + 0.5).astype(np.uint8).transpose(2, 0, 1))


def _as_it_is(part: Image.Image, size: int, channels: int, polarity: str, light_frame: float) -> np.ndarray:
    """The photo's own pixels, centred in the square; any padding in the colour of its edge. In a
    product-on-backdrop domain a photo whose frame is clearly light (a close-up of a product on a
    light table) is first levelled against that lightness as the catalog's background (_levels)."""
    if polarity in ("light-on-dark", "dark-on-light"):
        grey = np.asarray(part.convert("L"), np.float32)[..., None] / 255.0
        frame = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
        if frame > light_frame:
            signal = _levels(grey, np.full_like(grey, frame), polarity, light_background=True)
            canvas = np.full((size, size, 1), 0.0 if polarity == "light-on-dark" else 1.0, np.float32)
            _paste_centred(canvas, signal)
            return np.repeat((canvas * 255 + 0.5).astype(np.uint8).transpose(2, 0, 1), channels, axis=0)
    part = part.convert("L") if channels == 1 else part
    pixels = np.asarray(part, dtype=np.uint8).reshape(part.height, part.width, channels)
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    canvas = np.empty((size, size, channels), np.uint8)
    canvas[:] = np.median(edge, axis=0).round().astype(np.uint8)
    _paste_centred(canvas, pixels)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1))


def _paste_centred(canvas: np.ndarray, part: np.ndarray) -> None:
    """part (h, w, c) written into the middle of the square canvas (size, size, c)."""
    h, w = part.shape[:2]
    left, top = (canvas.shape[1] - w) // 2, (canvas.shape[0] - h) // 2
    canvas[top:top + h, left:left + w] = part


def mask_at(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The analysis-grid mask at relative coordinates xs (W,), ys (H,); a share of product is bilinear."""
    h, w = mask.shape
    if mask.dtype != bool:  # a share of product per pixel: sampled smoothly
        return cv2.remap(mask.astype(np.float32), *np.meshgrid((xs * w - 0.5).astype(np.float32),
                                                               (ys * h - 0.5).astype(np.float32)),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).clip(0, 1)
    ix = np.clip((xs * w).astype(int), 0, w - 1)
    iy = np.clip((ys * h).astype(int), 0, h - 1)
    return mask[np.ix_(iy, ix)].astype(np.float32)


def _darker_than_background(pixels: np.ndarray, background: np.ndarray) -> bool:
    """Whether the product is mostly darker than its background (a dark coat on a mid-grey table)
    rather than lighter (a white shirt on a dark one): the side carrying more of its signal."""
    difference = (background - pixels).mean(axis=2)
    return float(np.clip(difference, 0, None).sum()) >= float(np.clip(-difference, 0, None).sum())


def _colour_levels(pixels: np.ndarray, background: np.ndarray, polarity: str) -> np.ndarray:
    """One grey channel of the product's signal measured along its own colour difference from the
    background (the direction that carries most of it), strongest pixel at full scale."""
    difference = (pixels - background).reshape(-1, 3)
    weights = np.linalg.norm(difference, axis=1)
    direction = (difference * weights[:, None]).sum(axis=0)
    length = float(np.linalg.norm(direction))
    if length < 1e-6:
        signal = np.zeros(pixels.shape[:2] + (1,), np.float32)
    else:
        signal = (difference @ (direction / length)).reshape(pixels.shape[:2] + (1,)).clip(0, None)
    peak = float(signal.max())
    if peak > 0.05:
        signal = signal / peak
    signal = signal.clip(0, 1)
    return signal if polarity == "light-on-dark" else 1.0 - signal


def _levels(pixels: np.ndarray, background: np.ndarray, polarity: str, light_background: bool) -> np.ndarray:
    """The product's signal against its own background, in the catalog's polarity: the
    background goes to black (light-on-dark) or white (dark-on-light) and the strongest product
    pixel to full scale, as the catalog's images are."""
    if polarity == "keep":
        return pixels
    if light_background:  # dark product on light: darkness relative to the backdrop
        signal = (background - pixels) / np.maximum(background, 1e-3)
    else:
        signal = (pixels - background) / np.maximum(1.0 - background, 1e-3)
    signal = signal.clip(0, 1)
    peak = float(signal.max())
    if peak > 0.05:
        signal = signal / peak
    return signal if polarity == "light-on-dark" else 1.0 - signal
