"""What single nuisances of a shopper's photo cost: `python -m benchmarks.photo_nuisances`

- Sharpness: held-out items drawn as photos of known sharpness (the 28-px item negated, dark on white,
  upscaled with bilinear (soft), nearest-neighbour or Lanczos (sharp), JPEG or not) searched with the
  normalisation's sharpening off and on (`DomainSettings.sharpen`): does it hurt a photo that was never soft?
- A drop shadow: the same rendered photos (benchmarks/shopper_render.py) with their shadow and with it
  switched off (the renderer's random draws unchanged), for both renderers.
- Close-ups: a dark product on a light table, the frame touching it or cutting into it, with the
  untrimmed photo's levelling into the catalog's polarity off and on (`DomainSettings.light_frame`).
- Cut-outs on transparency (a PNG of the product alone, as phones and catalogs make them) of dark, light
  and near-white products, laid on white (the decoder's rule before) and as decoded now.

Held-out items only (the `--tune` sample of benchmarks.shopper_photos, never its report photos), against
the default catalog with the shipped model; fine R@1 (same product type at rank 1).
"""
from __future__ import annotations

import argparse
import io
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.reporting import write_report  # noqa: E402
from benchmarks.shopper_photos import (TUNING_SEED, embed_all, embed_with, held_out_sample, render_set,  # noqa: E402
                                       scores)
from embedder import domain  # noqa: E402
from embedder.domain_settings import DomainSettings  # noqa: E402
from embedder.images import decode_image  # noqa: E402

SHARP_PHOTOS = [("bilinear x10 (soft), PNG", 10, Image.Resampling.BILINEAR, None),
                ("nearest-neighbour x10, PNG", 10, Image.Resampling.NEAREST, None),
                ("nearest-neighbour x10, JPEG 90", 10, Image.Resampling.NEAREST, 90),
                ("Lanczos x10, JPEG 90", 10, Image.Resampling.LANCZOS, 90),
                ("nearest-neighbour x4, JPEG 90", 4, Image.Resampling.NEAREST, 90)]


def uploaded(image: Image.Image, **save_options) -> Image.Image:
    """The image as an upload arrives: saved (format and quality in save_options) and decoded."""
    buffer = io.BytesIO()
    image.save(buffer, **save_options)
    return decode_image(buffer.getvalue())


def sharp_photo(item: np.ndarray, scale: int, method, quality: int | None) -> Image.Image:
    """The item as a dark product on white, upscaled without any blur, on a white margin."""
    product = Image.fromarray(255 - item).resize((28 * scale, 28 * scale), method)
    canvas = Image.new("L", (28 * scale + 80, 28 * scale + 60), 255)
    canvas.paste(product, (40, 30))
    if quality is None:
        return canvas.convert("RGB")
    return uploaded(canvas.convert("RGB"), format="JPEG", quality=quality)


CUT_OUT_COLOURS = [("dark grey", (0.1, 0.1, 0.1)), ("red", (0.6, 0.1, 0.1)), ("light grey", (0.85, 0.85, 0.85)),
                   ("near-white", (0.97, 0.97, 0.97))]


def cut_out(item: np.ndarray, colour, opaque: bool, on_white: bool) -> Image.Image:
    """The item as a product of `colour` on a transparent PNG (opacity = its intensity, or opaque
    wherever it reaches a fifth of full scale, shaded by it); on_white: laid on white before decoding."""
    shade = np.asarray(Image.fromarray(item).resize((280, 280), Image.Resampling.BICUBIC), np.float32) / 255
    rgba = np.zeros((280, 280, 4), np.float32)
    if opaque:
        rgba[..., :3] = np.asarray(colour, np.float32) * (0.6 + 0.4 * shade[..., None])
        rgba[..., 3] = np.clip(shade / 0.2, 0, 1)
    else:
        rgba[..., :3], rgba[..., 3] = colour, shade
    image = Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA")
    if on_white:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return uploaded(image, format="PNG")


def close_up(item: np.ndarray, margin: float) -> Image.Image:
    """The item as a dark product on a light table, framed `margin` of its size around its extent
    (negative: the frame cuts into it), upscaled 10x, JPEG 90."""
    shade = np.asarray(Image.fromarray(item).resize((280, 280), Image.Resampling.BICUBIC), np.float32) / 255
    ys, xs = np.nonzero(shade > 0.1)
    pad = round(margin * max(xs.max() - xs.min(), ys.max() - ys.min()))
    table = np.pad(shade, 300)
    crop = table[300 + ys.min() - pad:300 + ys.max() + 1 + pad, 300 + xs.min() - pad:300 + xs.max() + 1 + pad]
    rgb = 0.92 * (1 - crop[..., None]) + np.array([0.15, 0.1, 0.3], np.float32) * crop[..., None]
    return uploaded(Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)), format="JPEG", quality=90)


def run(args) -> dict:
    embedder, catalog, items, fine, coarse = held_out_sample(args)
    r1 = lambda vectors: scores(vectors, fine, coarse, catalog)["fine_R@1"]  # noqa: E731
    settings = DomainSettings()
    result = {"items": len(items), "seed": TUNING_SEED, "sharpen": settings.sharpen,
              "native": r1(embed_all(embedder, [Image.fromarray(i).convert("RGB") for i in items])),
              "sharp_photos": [], "shadow": [], "close_ups": [], "cut_outs": []}
    for name, scale, method, quality in SHARP_PHOTOS:
        photos = [sharp_photo(item, scale, method, quality) for item in items]
        result["sharp_photos"].append({"photos": name, "unsharpened": r1(embed_with(embedder, photos, replace(settings, sharpen=0.0))),
                                       "sharpened": r1(embed_with(embedder, photos, settings))})
        print(result["sharp_photos"][-1], flush=True)
    for opaque in (False, True):
        row = {"renderer": "opaque products" if opaque else "see-through products"}
        for label, scale in (("without shadow", 0.0), ("with shadow", 1.0)):
            photos = render_set(items, TUNING_SEED, False, opaque, shadow=True, shadow_scale=scale)
            row[label] = r1(embed_with(embedder, [p.image for p in photos], settings))
        result["shadow"].append(row)
        print(row, flush=True)
    for label, margin in (("framed 20% around it", 0.2), ("the frame touching it", 0.0),
                          ("the frame cutting 5% into it", -0.05), ("the frame cutting 10% into it", -0.1)):
        photos = [close_up(item, margin) for item in items]
        result["close_ups"].append({"photos": label, "untrimmed": sum(not domain.analyse(p, settings).clear_background for p in photos),
                                    "as it is": r1(embed_with(embedder, photos, replace(settings, light_frame=2.0))),
                                    "levelled": r1(embed_with(embedder, photos, settings))})
        print(result["close_ups"][-1], flush=True)
    for name, colour in CUT_OUT_COLOURS:
        for opaque in (False, True):
            row = {"product": name + (", opaque" if opaque else ", opacity = intensity")}
            for label, on_white in (("laid on white", True), ("as decoded", False)):
                row[label] = r1(embed_all(embedder, [cut_out(item, colour, opaque, on_white) for item in items]))
            result["cut_outs"].append(row)
            print(row, flush=True)
    return result


def markdown(result: dict) -> str:
    lines = ["# What single nuisances of a shopper's photo cost", "",
             f"`python -m benchmarks.photo_nuisances`: {result['items']} held-out Fashion-MNIST training items (seed "
             f"{result['seed']}, the `--tune` sample of benchmarks.shopper_photos), fine R@1 against the default catalog; "
             f"the same items as native 28-px images: {result['native']:.3f}.", "",
             "## Photos of known sharpness, the normalisation's sharpening off and on", "",
             f"| photos (dark on white) | sharpening off | sharpening {result['sharpen']} (default) |", "|---|---|---|"]
    lines += [f"| {r['photos']} | {r['unsharpened']:.3f} | {r['sharpened']:.3f} |" for r in result["sharp_photos"]]
    lines += ["", "## A soft drop shadow: the same rendered photos without and with it", "",
              "| renderer | without shadow | with shadow |", "|---|---|---|"]
    lines += [f"| {r['renderer']} | {r['without shadow']:.3f} | {r['with shadow']:.3f} |" for r in result["shadow"]]
    lines += ["", "## Close-ups on a light table: an untrimmed photo as it is, and levelled into the catalog's polarity", "",
              "| photos | untrimmed (no confident background) | as it is (before) | levelled (now) |", "|---|---|---|---|"]
    lines += [f"| {r['photos']} | {r['untrimmed']} of {result['items']} | {r['as it is']:.3f} | {r['levelled']:.3f} |"
              for r in result["close_ups"]]
    lines += ["", "## Products cut out on transparency", "",
              "| product | laid on white (before) | as decoded (white, or black behind a light product) |", "|---|---|---|"]
    lines += [f"| {r['product']} | {r['laid on white']:.3f} | {r['as decoded']:.3f} |" for r in result["cut_outs"]]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/coinsp-fmnist.pt")
    parser.add_argument("--catalog", default="catalogs/fashion-mnist-test")
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("reports/shopper-photos"))
    args = parser.parse_args(argv)
    result = run(args)
    write_report(args.out, "nuisances", result, markdown(result))


if __name__ == "__main__":
    main()
