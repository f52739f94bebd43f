"""What a model's input is, measured on the training manifest's images rather than assumed from
the backbone: grey or colour, the input size, the per-channel mean and std, and the catalog's
polarity and margin (the fields of embedder.preprocess.Preprocessing).

A seeded sample of the manifest's images (decoded through embedder.images, the one decoder)
decides channels, size, polarity and margin. The mean and std are taken over every training image
at the chosen settings: training decodes them all anyway (training.data caches the decoded set for
the run that follows), and a few hundred images estimate Fashion-MNIST's mean only to about
+-0.007, not to the three decimals stored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from embedder.domain import analyse, shrink
from embedder.images import ImageError, decode_image
from embedder.preprocess import Preprocessing
from index.manifest import read_manifest, resolve_image_paths
from training.data import load_training_set

SAMPLE = 400  # images looked at for channels, size, polarity and margin
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # what ImageNet weights expect
# An image is in colour when this share of its pixels differ between channels by more than
# COLOUR_SPREAD (JPEG noise on grey photos stays below it); the catalog is when COLOUR_SHARE of
# its images are: a few coloured products are enough for colour to tell products apart.
COLOUR_SPREAD = 0.06
COLOUR_PIXELS = 0.01
COLOUR_SHARE = 0.05
# A grey catalog has a polarity when at least MIN_PLAIN_SHARE of its images have a plain border
# (the rest: the product fills the frame, or a busy backdrop) and POLARITY_AGREEMENT of those agree.
MIN_PLAIN_SHARE = 0.4
POLARITY_AGREEMENT = 0.8
# smallcnn pools twice (resnet18's CIFAR stem not at all): 28 px leaves a 7 x 7 map for a 4 x 4
# grid; beyond 64 px they see little more of a product and cost the square of the side.
SMALLCNN_SIZES = (28, 64)
# The ImageNet stems (stride 32 to the last map) need 32 px for a 1 x 1 map; 224 px is what the
# pretrained weights were trained at, and larger images are shrunk to it.
IMAGENET_SIZES = (32, 224)
# Pretrained weights see small images better enlarged, but only to about half their training size:
# frozen EfficientNet-Lite0 on 1,000 seeded Fashion-MNIST training images (28 px), fine-class R@1
# 0.655 / 0.775 / 0.790 / 0.789 at 32 / 64 / 112 / 224 px; 224 px costs 4 times 112's compute for nothing.
PRETRAINED_SIZES = (112, 224)
MAX_MARGIN = 0.25


@dataclass(frozen=True)
class InputChoice:
    preprocessing: Preprocessing
    why: str  # what was chosen and why, for the start of training


def choose_input(manifest: str | Path, backbone: str, *, pretrained: bool = False, stem: str = "imagenet",
                 given: dict | None = None, cache_dir: str | Path = ".cache", seed: int = 0) -> InputChoice:
    """The input settings for `backbone` trained on `manifest`. `given`: Preprocessing fields set by
    hand (they win over what is measured). A pretrained backbone gets 3 channels and ImageNet's mean
    and std, which its weights expect. Nothing is read when `given` leaves nothing to measure."""
    given = dict(given or {})
    unknown = set(given) - {f.name for f in dataclasses.fields(Preprocessing)}
    if unknown:
        raise ValueError(f"unknown input settings {sorted(unknown)}")
    notes = {key: "given" for key in given}
    if pretrained:
        for key, value in (("channels", 3), ("mean", IMAGENET[0]), ("std", IMAGENET[1])):
            if key not in given:
                given[key], notes[key] = value, "ImageNet weights"
    sampled = {"channels", "size", "polarity", "margin"} - set(given)
    if sampled:
        looks = _look_at(Path(manifest), seed)
        measured = _from_sample(looks, backbone, pretrained, stem, "channels" in given)
        for key in sampled:
            given[key], notes[key] = measured[key]
    pre = Preprocessing(**{**given, "mean": (0.5,), "std": (0.5,)})  # the pixels do not depend on mean/std
    if "mean" not in given or "std" not in given:
        mean, std, count = _pixel_statistics(manifest, pre, cache_dir)
        for key, value in (("mean", mean), ("std", std)):
            if key not in given:
                given[key], notes[key] = value, f"all {count:,} training images"
    pre = Preprocessing(**given)
    if min(len(pre.mean), len(pre.std)) < pre.channels:
        raise ValueError(f"give a mean and a std for each of the {pre.channels} channels")
    return InputChoice(pre, _describe(pre, notes))


@dataclass
class _Look:
    side: int  # the image's long side
    colour: bool
    light_border: bool | None  # None: no plain border (a photo's own backdrop, clutter, or the product fills it)
    product_side: float | None  # the product's long side as a share of the image's, where there is a plain border


def _look_at(manifest: Path, seed: int) -> list[_Look]:
    paths = resolve_image_paths(read_manifest(manifest), manifest.parent)
    order = np.random.default_rng(seed).permutation(len(paths))
    looks, failed = [], 0
    for i in order:  # unreadable images are replaced by the next ones in the seeded order
        if len(looks) == SAMPLE:
            break
        try:
            looks.append(_look(decode_image(paths[i])))
        except ImageError:
            failed += 1
    if not looks:
        raise ValueError(f"none of the {failed} images of {manifest} looked at could be read, so its input "
                         "settings cannot be measured")
    return looks


def _look(image: Image.Image) -> _Look:
    pixels = shrink(image)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    colour = float((spread > COLOUR_SPREAD).mean()) > COLOUR_PIXELS
    analysis = analyse(image)
    plain = analysis.clear_background and not analysis.cluttered
    product_side = None
    if plain:
        x0, y0, x1, y1 = analysis.box
        w, h = image.size
        product_side = max((x1 - x0) * w, (y1 - y0) * h) / max(w, h)
    return _Look(max(image.size), colour, analysis.light_background if plain else None, product_side)


def _from_sample(looks: list[_Look], backbone: str, pretrained: bool, stem: str, channels_given: bool) -> dict:
    """{field: (value, why)} for channels, size, polarity and margin."""
    n = len(looks)
    coloured = sum(look.colour for look in looks)
    in_colour = coloured >= COLOUR_SHARE * n
    measured = {} if channels_given else {"channels": (3 if in_colour else 1,
                                                             f"{coloured / n:.0%} of {n} sampled images in colour")}
    typical = int(np.median([look.side for look in looks]))
    if backbone == "smallcnn" or (backbone == "resnet18" and stem == "cifar"):  # no downsampling stem: small images
        low, high = SMALLCNN_SIZES
    else:
        low, high = PRETRAINED_SIZES if pretrained else IMAGENET_SIZES
    size = min(max(typical, low), high)
    measured["size"] = (size, f"images typically {typical} px; {'pretrained ' if pretrained else ''}{backbone} "
                                f"takes {low}-{high}")
    plain = [look for look in looks if look.light_border is not None]
    light = sum(look.light_border for look in plain)
    if in_colour:
        # Re-levelling (embedder.domain) stretches each channel apart and would shift the colours
        # shoppers search by: colour photos are only trimmed and padded.
        measured["polarity"] = ("keep", "colour photos keep their colours")
    elif len(plain) < MIN_PLAIN_SHARE * n:
        measured["polarity"] = ("keep", f"only {len(plain)} of {n} have a plain border")
    elif max(light, len(plain) - light) >= POLARITY_AGREEMENT * len(plain):
        majority = light >= len(plain) - light
        measured["polarity"] = ("dark-on-light" if majority else "light-on-dark",
                                f"{max(light, len(plain) - light)} of {len(plain)} plain borders "
                                f"{'light' if majority else 'dark'}")
    else:
        measured["polarity"] = ("keep", f"plain borders mixed: {light} light, {len(plain) - light} dark")
    sides = [look.product_side for look in plain]
    margin = 0.0
    if sides:  # the background catalog images leave around their product
        margin = round(min(MAX_MARGIN, max(0.0, (1.0 - float(np.median(sides))) / 2)), 2)
        margin = margin if margin >= 0.02 else 0.0  # a pixel's rounding is no margin
    measured["margin"] = (margin, f"median product {np.median(sides):.0%} of the frame" if sides else "no plain borders")
    return measured


def _pixel_statistics(manifest: str | Path, pre: Preprocessing, cache_dir: str | Path) -> tuple[tuple, tuple, int]:
    """Per-channel mean and std (3 decimals) of every image as training sees it."""
    images = load_training_set(manifest, pre, cache_dir=cache_dir).images.numpy()
    total = np.zeros(pre.channels)
    squares = np.zeros(pre.channels)
    for start in range(0, len(images), 1024):  # float64 sums a chunk at a time: exact and small
        chunk = images[start:start + 1024].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += (chunk ** 2).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return (tuple(round(float(m), 3) for m in mean), tuple(round(max(float(s), 1e-3), 3) for s in std), len(images))


def _describe(pre: Preprocessing, notes: dict) -> str:
    grey = "grey, 1 channel" if pre.channels == 1 else f"{pre.channels} channels"
    numbers = lambda values: "/".join(f"{v:.3f}" for v in values[:pre.channels])  # noqa: E731
    return (f"input: {pre.size} px ({notes['size']}), {grey} ({notes['channels']}), {pre.polarity} "
            f"({notes['polarity']}), margin {pre.margin:.2f} ({notes['margin']}); mean {numbers(pre.mean)} "
            f"std {numbers(pre.std)} ({notes['mean']})")
