"""Families of shopper-photo conditions, designed independently of the product's tuned settings.

Each family turns one 28x28 Fashion-MNIST item (light on black: intensity = how much product is
there) into a phone photo of that product and records the product's exact mask. The product is
an opaque object whose outline is the item's coverage, clip(intensity / 0.25, 0, 1), and whose
appearance is a material colour shaded by the intensity (faint parts are lighter parts of the
product, not see-through). The photo goes through the camera (light, white balance, blur, noise,
the phone's noise reduction and sharpening, tilt) and JPEG, and is decoded as an upload is.

TUNING_FAMILIES may be used to choose settings; HELD_OUT_FAMILIES never are.

    python -m benchmarks.photo_families --out /tmp/families --per-family 4
"""
from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from benchmarks import photo_surfaces as surfaces
from benchmarks.photo_camera import (
    colour_cast, defocus, frame_size, jpeg_upload, lighting, motion_blur, phone_noise, tilt,
)
from benchmarks.photo_strangers import stranger_scene
from embedder.images import decode_image


@dataclass
class FamilyPhoto:
    image: Image.Image  # RGB, decoded from the bytes the phone would upload
    box: tuple[int, int, int, int]  # the product's true extent (x0, y0, x1, y1), x1/y1 exclusive
    mask: np.ndarray  # bool (H, W): the product's own pixels (coverage >= 0.5)
    family: str
    textured: bool  # textured, cluttered or photographic backdrop (False: plain)


@dataclass(frozen=True)
class Family:
    name: str
    textured: bool
    description: str
    render: Callable[[np.ndarray, np.random.Generator], FamilyPhoto]


def product_colour(rng, tone: str | None = None) -> np.ndarray:
    """A material colour: dark, mid, saturated or light."""
    tone = tone or str(rng.choice(["dark", "dark", "mid", "saturated"]))
    if tone == "dark":
        return surfaces.random_colour(rng, (0.03, 0.22), (0.0, 0.6))
    if tone == "mid":
        return surfaces.random_colour(rng, (0.3, 0.6), (0.0, 0.4))
    if tone == "saturated":
        return surfaces.random_colour(rng, (0.3, 0.55), (0.8, 1.0))
    return surfaces.random_colour(rng, (0.78, 0.95), (0.0, 0.3))


@dataclass
class Placed:
    """The product drawn into a frame: within `roi` its alpha (soft edge) and colour; its exact
    coverage mask over the whole frame."""
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 of the product's neighbourhood
    alpha: np.ndarray  # float32 (roi h, roi w)
    colour: np.ndarray  # float32 (roi h, roi w, 3)
    mask: np.ndarray  # bool (h, w)


def place_product(item: np.ndarray, rng, w: int, h: int, colour: np.ndarray,
                  size: tuple[float, float] = (0.35, 0.9), near: tuple[int, int, int, int] | None = None) -> Placed:
    """Scale the item to `size` of the short side, rotate slightly, put it anywhere in the frame
    (near: with its centre on the edge of that box, so that it touches or overlaps what is there)."""
    intensity = np.asarray(item, np.float32) / 255.0
    if intensity.shape != (28, 28):
        raise ValueError(f"an item is a 28x28 array, got shape {intensity.shape}")
    coverage = np.clip(intensity / 0.25, 0, 1)
    ys, xs = np.nonzero(coverage >= 0.5)
    if len(ys) == 0:
        raise ValueError("the item has no product pixels (no intensity of 0.125 or more)")
    extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    scale = rng.uniform(*size) * min(w, h) / extent
    angle = np.deg2rad(rng.uniform(-12, 12))
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
    corners = np.array([[xs.min() - 0.5, ys.min() - 0.5], [xs.max() + 0.5, ys.min() - 0.5],
                        [xs.min() - 0.5, ys.max() + 0.5], [xs.max() + 0.5, ys.max() + 0.5]]) - centre
    half = np.abs(corners @ rot.T).max(axis=0)
    position = np.array([rng.uniform(min(half[0], w / 2), max(w - half[0], w / 2)),
                         rng.uniform(min(half[1], h / 2), max(h - half[1], h / 2))])
    if near is not None:
        nx0, ny0, nx1, ny1 = near
        side = int(rng.integers(4))
        t = rng.uniform(0, 1)
        edge = [(nx0 + t * (nx1 - nx0), ny0), (nx1, ny0 + t * (ny1 - ny0)),
                (nx0 + t * (nx1 - nx0), ny1), (nx0, ny0 + t * (ny1 - ny0))][side]
        outward = [(0, -1), (1, 0), (0, 1), (-1, 0)][side]
        position = np.clip(np.array(edge) + np.array(outward) * half * rng.uniform(0.5, 1.0), 0, [w - 1, h - 1])
    # warp only the product's neighbourhood: the frame may be 1400 px and the product small
    x0, y0 = np.floor(np.maximum(position - half - 3, 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(position + half + 3, [w, h])).astype(int)
    affine = np.hstack([rot, (position - [x0, y0] - rot @ centre)[:, None]]).astype(np.float32)
    roi = (int(x1 - x0), int(y1 - y0))
    # the item's rim is faint because the catalog photo was shrunk, not because the product is
    # lighter there: shade the rim (and beyond it, for the interpolation) like its inner neighbours
    shading = intensity.copy()
    for _ in range(2):
        shading = np.where(coverage < 1, cv2.dilate(shading, np.ones((3, 3), np.uint8)), intensity)
    both = cv2.warpAffine(np.dstack([coverage, shading]), affine, roi, flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cov_up, shade_up = both[..., 0], np.clip(both[..., 1], 0, 1)
    # cubic upsampling leaves an edge one item pixel wide; a lens resolves it in a pixel or two
    sharpness = scale / rng.uniform(0.8, 2.0)
    alpha = np.clip((cov_up - 0.5) * sharpness + 0.5, 0, 1)
    # faint parts of the item are lighter parts of the product
    strong = max(float(np.percentile(intensity[coverage >= 0.5], 90)), 0.2)
    depth = np.clip(shade_up / strong, 0, 1)[..., None]
    lighter = colour + (1 - colour) * rng.uniform(0.25, 0.7)
    darker = colour * rng.uniform(0.6, 0.9)
    colour_roi = (lighter * (1 - depth) + darker * depth).astype(np.float32)
    if rng.random() < 0.3:
        colour_roi = _printed(rng, colour_roi, scale)
    if rng.random() < 0.7:  # the material's own fine texture (knit, leather grain), half-size noise
        rh, rw = colour_roi.shape[:2]
        fine = rng.standard_normal((max(1, rh // 2), max(1, rw // 2)), dtype=np.float32)
        fine = cv2.resize(fine, (rw, rh), interpolation=cv2.INTER_LINEAR)
        colour_roi *= (1 + np.float32(rng.uniform(0.02, 0.08)) * fine)[..., None]
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = cov_up >= 0.5
    return Placed((int(x0), int(y0), int(x1), int(y1)), alpha, colour_roi, mask)


def _printed(rng, colour: np.ndarray, scale: float) -> np.ndarray:
    """A print on the product: stripes or dots of a second colour."""
    h, w = colour.shape[:2]
    ink = surfaces.random_colour(rng, (0.05, 0.95), (0.0, 1.0))
    gx, gy = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    period = scale * rng.uniform(1.5, 4)
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        on = ((np.cos(angle) * gx + np.sin(angle) * gy) / period % 1) < 0.4
    else:
        on = np.hypot((gx / period % 1) - 0.5, (gy / period % 1) - 0.5) < 0.25
    weight = on.astype(np.float32)[..., None] * rng.uniform(0.5, 0.9)
    return colour * (1 - weight) + ink * weight * (colour.mean(axis=2, keepdims=True) * 0.5 + 0.5)


def cast_shadow(backdrop: np.ndarray, placed: Placed, rng, hard: bool) -> np.ndarray:
    """Darken the backdrop under and beside the product: a lamp's hard or a window's soft shadow."""
    h, w = backdrop.shape[:2]
    short = min(h, w)
    dx, dy = rng.normal(0, 0.035 if hard else 0.02, 2) * short
    sigma = short * (rng.uniform(0.001, 0.004) if hard else rng.uniform(0.01, 0.04))
    strength = rng.uniform(0.3, 0.6) if hard else rng.uniform(0.15, 0.4)
    # the shadow's reach: the product's neighbourhood moved by the offset, widened by the blur
    x0, y0, x1, y1 = placed.roi
    reach = 3 * sigma + 2
    sx0, sy0 = max(0, int(min(x0, x0 + dx) - reach)), max(0, int(min(y0, y0 + dy) - reach))
    sx1, sy1 = min(w, int(max(x1, x1 + dx) + reach) + 1), min(h, int(max(y1, y1 + dy) + reach) + 1)
    if sx1 <= sx0 or sy1 <= sy0:
        return backdrop
    tx, ty = x0 - sx0 + dx, y0 - sy0 + dy
    if hard:
        shift = np.float32([[1, 0, tx], [0, 1, ty]])
        shadow = cv2.warpAffine(placed.alpha, shift, (sx1 - sx0, sy1 - sy0), flags=cv2.INTER_LINEAR)
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.6, sigma))
    else:  # a soft shadow has no detail to lose: blur it at a quarter size
        ah, aw = placed.alpha.shape
        small = cv2.resize(placed.alpha, (max(1, aw // 4), max(1, ah // 4)), interpolation=cv2.INTER_AREA)
        fx, fy = aw / small.shape[1] / 4, ah / small.shape[0] / 4
        shift = np.float32([[fx, 0, tx / 4], [0, fy, ty / 4]])
        shadow = cv2.warpAffine(small, shift, (max(1, (sx1 - sx0) // 4), max(1, (sy1 - sy0) // 4)),
                                flags=cv2.INTER_LINEAR)
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.6, sigma / 4))
        shadow = cv2.resize(shadow, (sx1 - sx0, sy1 - sy0), interpolation=cv2.INTER_LINEAR)
    backdrop[sy0:sy1, sx0:sx1] *= (1 - strength * shadow)[..., None]
    return backdrop


def composite(backdrop: np.ndarray, placed: Placed) -> np.ndarray:
    x0, y0, x1, y1 = placed.roi
    region = backdrop[y0:y1, x0:x1]  # a view: blended in place
    region += (placed.colour - region) * placed.alpha[..., None]
    return backdrop


def finish(scene: np.ndarray, mask: np.ndarray, family: str, textured: bool, rng) -> FamilyPhoto:
    """JPEG (or now and then PNG) as the phone uploads it, decoded as the product decodes it."""
    image = decode_image(jpeg_upload(scene, rng))
    return photo_from(image, mask, family, textured)


def photo_from(image: Image.Image, mask: np.ndarray, family: str, textured: bool) -> FamilyPhoto:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise ValueError("the product left the frame")
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return FamilyPhoto(image=image, box=box, mask=mask, family=family, textured=textured)


# ---- families -------------------------------------------------------------------------------------

def _light_paper(rng) -> np.ndarray:
    grey = rng.uniform(0.72, 0.97)
    return np.clip(grey * (1 + rng.normal(0, 0.03, 3)), 0, 1).astype(np.float32)


def _scene(item, rng, backdrop_fn, tone=None, shadow: str | None = "soft", size=(0.35, 0.9), beside: int = 0):
    """Frame, backdrop and product (with `beside` other garments lying around it): (scene, mask)."""
    w, h = frame_size(rng)
    backdrop = backdrop_fn(rng, h, w)
    placed = place_product(item, rng, w, h, product_colour(rng, tone), size)
    for k in range(beside):  # the first touches the product, the others lie anywhere
        other = place_product(_other_item(item, rng), rng, w, h, product_colour(rng), (0.25, 0.6),
                              near=placed.roi if k == 0 else None)
        backdrop = composite(cast_shadow(backdrop, other, rng, hard=False), other)
    if shadow is not None:
        backdrop = cast_shadow(backdrop, placed, rng, hard=shadow == "hard")
    return composite(backdrop, placed), placed.mask


def studio_soft_shadow(item, rng):
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.plain(r, h, w, _light_paper(r)))
    return finish(lighting(scene, rng, 0.08, 0.1), mask, "studio_soft_shadow", False, rng)


def hard_shadow(item, rng):
    def card(r, h, w):
        return surfaces.plain(r, h, w, surfaces.random_colour(r, (0.55, 0.9), (0.0, 0.5)))
    scene, mask = _scene(item, rng, card, shadow="hard")
    return finish(lighting(scene, rng, 0.15, 0.15), mask, "hard_shadow", False, rng)


def uneven_light(item, rng):
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.plain(r, h, w, _light_paper(r), 0.06))
    return finish(lighting(scene, rng, rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)), mask, "uneven_light", False, rng)


def low_light_noise(item, rng):
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.plain(r, h, w, _light_paper(r)))
    # a dim room: the phone's gain brings the exposure most of the way back, and the noise with it
    scene = lighting(scene, rng, 0.2, 0.3) * rng.uniform(0.45, 0.85)
    scene = phone_noise(scene, rng, rng.uniform(0.04, 0.1))
    return finish(scene, mask, "low_light_noise", False, rng)


def white_balance(item, rng):
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.plain(r, h, w, _light_paper(r)))
    scene = colour_cast(lighting(scene, rng, 0.1, 0.15), rng, rng.uniform(0.15, 0.35))
    return finish(scene, mask, "white_balance", False, rng)


def blurred(item, rng):
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.plain(r, h, w, _light_paper(r)))
    scene = defocus(scene, rng) if rng.random() < 0.5 else motion_blur(scene, rng)
    return finish(lighting(scene, rng, 0.1, 0.1), mask, "blurred", False, rng)


def tilted(item, rng):
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.plain(r, h, w, _light_paper(r)))
    scene, mask = tilt(scene, mask, rng, rng.uniform(0.1, 0.25))
    return finish(lighting(scene, rng, 0.15, 0.2), mask, "tilted", False, rng)


def light_on_light(item, rng):
    def pale(r, h, w):
        return surfaces.plain(r, h, w, surfaces.random_colour(r, (0.8, 0.97), (0.0, 0.25)))
    scene, mask = _scene(item, rng, pale, tone="light")
    return finish(lighting(scene, rng, 0.1, 0.15), mask, "light_on_light", False, rng)


def fine_grain(item, rng):
    surface = surfaces.carpet if rng.random() < 0.6 else surfaces.gravel
    scene, mask = _scene(item, rng, surface)
    return finish(lighting(scene, rng, 0.1, 0.15), mask, "fine_grain", True, rng)


def coarse_grain(item, rng):
    surface = surfaces.grass if rng.random() < 0.5 else surfaces.speckle
    scene, mask = _scene(item, rng, surface)
    return finish(lighting(scene, rng, 0.1, 0.15), mask, "coarse_grain", True, rng)


def woven(item, rng):
    surface = [surfaces.checks, surfaces.weave, surfaces.stripes][int(rng.integers(3))]
    scene, mask = _scene(item, rng, surface)
    return finish(lighting(scene, rng, 0.1, 0.15), mask, "woven", True, rng)


def wood_and_stone(item, rng):
    surface = surfaces.wood if rng.random() < 0.5 else surfaces.marble
    scene, mask = _scene(item, rng, surface)
    return finish(lighting(scene, rng, 0.15, 0.2), mask, "wood_and_stone", True, rng)


def photo_backdrop(item, rng):
    name = str(rng.choice(surfaces.BACKDROP_PHOTOS))
    shadow = "soft" if rng.random() < 0.5 else None  # the photo's own light may cast none we could see
    scene, mask = _scene(item, rng, lambda r, h, w: surfaces.photo_region(r, h, w, name), shadow=shadow)
    return finish(scene, mask, "photo_backdrop", True, rng)


def _other_item(item: np.ndarray, rng) -> np.ndarray:
    """Another catalog-like garment (from Fashion-MNIST's training split), never the item itself."""
    others = _training_items()
    while True:
        other = others[int(rng.integers(len(others)))]
        if not np.array_equal(other, item) and (other >= 32).any():
            return other


@functools.lru_cache(maxsize=1)
def _training_items() -> np.ndarray:
    from index.importers import load_fashion_mnist_arrays

    return load_fashion_mnist_arrays("train")[0]


def clutter(item, rng):
    def table(r, h, w):
        base = surfaces.plain(r, h, w, surfaces.random_colour(r, (0.4, 0.9), (0.0, 0.4)))
        return surfaces.draw_clutter(r, base, int(r.integers(2, 7)))
    scene, mask = _scene(item, rng, table, beside=int(rng.integers(1, 3)))
    return finish(lighting(scene, rng, 0.1, 0.15), mask, "clutter", True, rng)


def night_fabric(item, rng):
    surface = [surfaces.checks, surfaces.carpet, surfaces.wood][int(rng.integers(3))]
    scene, mask = _scene(item, rng, surface)
    scene = colour_cast(lighting(scene, rng, 0.2, 0.3), rng, rng.uniform(0.15, 0.3)) * rng.uniform(0.4, 0.8)
    return finish(phone_noise(scene, rng, rng.uniform(0.03, 0.08)), mask, "night_fabric", True, rng)


def tilted_clutter(item, rng):
    def floor(r, h, w):
        return surfaces.draw_clutter(r, surfaces.marble(r, h, w), int(r.integers(2, 6)))
    scene, mask = _scene(item, rng, floor, beside=int(rng.integers(0, 2)))
    scene, mask = tilt(scene, mask, rng, rng.uniform(0.1, 0.25))
    scene = defocus(scene, rng, 0.6) if rng.random() < 0.5 else scene
    return finish(lighting(scene, rng, 0.2, 0.2), mask, "tilted_clutter", True, rng)


def _family(fn, textured: bool, description: str) -> Family:
    return Family(fn.__name__, textured, description, fn)


FAMILIES: dict[str, Family] = {f.name: f for f in [
    _family(studio_soft_shadow, False, "white or grey paper, soft window shadow, even light"),
    _family(hard_shadow, False, "coloured card, hard lamp shadow offset from the product"),
    _family(uneven_light, False, "light paper lit from one side, strong gradient and vignetting"),
    _family(low_light_noise, False, "dim room: under-exposed, sensor noise, phone denoise and sharpening"),
    _family(white_balance, False, "warm (tungsten) or cool (shade) colour cast over the whole photo"),
    _family(blurred, False, "out of focus (disc blur) or shaken (motion blur along a line)"),
    _family(tilted, False, "camera tilted: the whole scene in perspective"),
    _family(light_on_light, False, "a light product on a light backdrop"),
    _family(fine_grain, True, "carpet pile or gravel: fine multicolour grain at strong amplitude"),
    _family(coarse_grain, True, "grass blades or terrazzo/granite chips"),
    _family(woven, True, "fabric: gingham or tartan checks, plain weave, stripes"),
    _family(wood_and_stone, True, "floorboards with grain and seams, marble or stone veins"),
    _family(photo_backdrop, True, "a real photograph as the backdrop (scikit-image sample photos)"),
    _family(clutter, True, "other garments (one touching it), cards, coins, pens, printed words on a table"),
    _family(night_fabric, True, "textured surface at night: colour cast, noise and phone processing"),
    _family(tilted_clutter, True, "marble floor with things lying about, tilted camera, sometimes out of focus"),
]}

TUNING_FAMILIES = ("studio_soft_shadow", "uneven_light", "white_balance", "tilted",
                   "fine_grain", "woven", "clutter", "night_fabric")
HELD_OUT_FAMILIES = ("hard_shadow", "low_light_noise", "blurred", "light_on_light",
                     "coarse_grain", "wood_and_stone", "photo_backdrop", "tilted_clutter")


def render_photo(family: str, item: np.ndarray, rng: np.random.Generator) -> FamilyPhoto:
    """One photo of `item` under the named family's conditions."""
    if family not in FAMILIES:
        raise ValueError(f"unknown photo family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family].render(item, rng)


def out_of_catalog_photos(count: int, rng: np.random.Generator) -> list[Image.Image]:
    """Photos of things the catalog does not sell, framed as shoppers frame products."""
    return [decode_image(jpeg_upload(stranger_scene(rng), rng)) for _ in range(count)]


# ---- a look at the families -----------------------------------------------------------------------

def _thumbnail(photo: FamilyPhoto, height: int) -> Image.Image:
    """The photo with its mask outline (red) and box (green), scaled to `height`."""
    pixels = np.asarray(photo.image).copy()
    outline = photo.mask & ~cv2.erode(photo.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    outline = cv2.dilate(outline.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pixels[outline] = (255, 0, 0)
    x0, y0, x1, y1 = photo.box
    cv2.rectangle(pixels, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), max(1, pixels.shape[0] // 300))
    image = Image.fromarray(pixels)
    return image.resize((max(1, round(image.width * height / image.height)), height), Image.BILINEAR)


def write_examples(out: Path, per_family: int, seed: int, thumb: int = 160) -> dict[str, float]:
    """Write each family's example photos and masks (PNG) and a contact sheet; return each family's
    median CPU milliseconds per photo (the first photo of a family loads sample data once)."""
    import time

    from index.importers import load_fashion_mnist_arrays

    images, _ = load_fashion_mnist_arrays("test")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows, timings = [], {}
    for name in FAMILIES:
        row, spent = [], []
        for k in range(per_family):
            item = images[int(rng.integers(len(images)))]
            started = time.process_time()
            photo = render_photo(name, item, rng)
            spent.append(time.process_time() - started)
            photo.image.save(out / f"{name}_{k}.png", compress_level=1)
            Image.fromarray(photo.mask.astype(np.uint8) * 255).save(out / f"{name}_{k}_mask.png", compress_level=1)
            row.append(_thumbnail(photo, thumb))
        timings[name] = 1000 * float(np.median(spent)) if spent else float("nan")
        rows.append((name, row))
    strangers = out_of_catalog_photos(per_family, rng)
    for k, image in enumerate(strangers):
        image.save(out / f"out_of_catalog_{k}.png", compress_level=1)
    rows.append(("out_of_catalog", [i.resize((max(1, round(i.width * thumb / i.height)), thumb)) for i in strangers]))
    label = 150
    width = label + max(sum(t.width + 4 for t in row) for _, row in rows)
    sheet = Image.new("RGB", (width, len(rows) * (thumb + 4)), (255, 255, 255))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(sheet)
    for r, (name, row) in enumerate(rows):
        y = r * (thumb + 4)
        draw.text((4, y + thumb // 2), name, fill=(0, 0, 0))
        x = label
        for tile in row:
            sheet.paste(tile, (x, y))
            x += tile.width + 4
    sheet.save(out / "contact_sheet.png")
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the example photos and contact sheet")
    parser.add_argument("--per-family", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # timings are for one core, as the benchmark renders
    timings = write_examples(args.out, args.per_family, args.seed)
    for name, ms in timings.items():
        split = "tuning" if name in TUNING_FAMILIES else "held-out"
        print(f"{name:20s} {'textured' if FAMILIES[name].textured else 'plain':8s} {split:8s} {ms:7.1f} ms CPU per photo (median)")
    print(f"contact sheet: {args.out / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
