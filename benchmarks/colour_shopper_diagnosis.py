"""Why shopper-style photos of colour products miss, photo by photo, on the validation families.

    python -m benchmarks.colour_shopper_diagnosis [--photos 200 --sheet 40]

The shopper-style photos of the validation products (benchmarks/colour_products.py --backdrops' set:
seed 4, never the test products) are rendered again with what the renderer knows (the product's true
alpha in the photo, whether it was mirrored, the light it was given), and each is searched among the
validation products' catalog photos (frozen EfficientNet-Lite0, the product on grey, as the store's
colour path has it) in ways that remove one cause of failure at a time:

- auto: the automatic crop (embedder/backdrop.on_backdrop), the photo as it is;
- auto + mirror: also its mirror image, the better view scoring (as SearchService searches a photo);
- true box: the product's true box given as the shopper's region;
- true mask: the product cut out with its true alpha (a perfect crop);
- true mask, light undone: the same, the light's contrast, brightness and tint divided out;
- true mask, light undone + mirror.

Each photo's row says how much of the true product the automatic crop kept (IoU of the crop's mask with
the true alpha) and the rank of its product under each treatment. Writes
reports/colour-products/shopper-diagnosis.{json,md} and a contact sheet of the first --sheet photos
(shopper photo, the automatic view, the true-mask view, a catalog photo of the product as the gallery
holds it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.colour_products import (ROOT, RENDER_VERSION, embedded, family_items, frozen_trunk, make_photos,
                                        validation_split)
from benchmarks.colour_products_render import draw_product, family_products, photograph, scenes
from embedder.backdrop import NEUTRAL_GREY, compose, on_backdrop, product_mask
from embedder.domain import mask_at
from embedder.images import decode_image
from index.importers import load_fashion_mnist_arrays

TREATMENTS = ("auto", "auto + mirror", "true box", "true mask", "true mask, light undone",
              "true mask, light undone + mirror")


def true_box(alpha: np.ndarray, threshold: float = 0.3) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(alpha > threshold)
    h, w = alpha.shape
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


def undo_light(image: Image.Image, light) -> Image.Image:
    mean, contrast, brightness, tint = light
    pixels = np.asarray(image, np.float32) / 255
    pixels = (pixels / (brightness * np.asarray(tint, np.float32)) - mean) / contrast + mean
    return Image.fromarray((pixels.clip(0, 1) * 255 + 0.5).astype(np.uint8))


def crop_iou(image: Image.Image, alpha: np.ndarray) -> float:
    """IoU of the automatic crop's product (its mask over its box) with the true product (alpha > 0.5)."""
    found = product_mask(image)
    if found is None:
        return 0.0
    box, mask = found
    h, w = alpha.shape
    ours = mask_at(mask, (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h) > 0.5
    inside = np.zeros((h, w), bool)
    inside[int(box[1] * h):int(np.ceil(box[3] * h)), int(box[0] * w):int(np.ceil(box[2] * w))] = True
    ours &= inside
    truth = alpha > 0.5
    return float((ours & truth).sum() / max((ours | truth).sum(), 1))


def rendered_again(items: np.ndarray, shapes: np.ndarray, variants: int, side: int, seed: int) -> list[dict]:
    """The records of make_photos' shopper photos (one a product), in make_photos' order."""
    rng = np.random.default_rng(seed)
    scene_images = scenes()
    records = []
    for item in items:
        for product in family_products(int(item), int(item), variants):
            record: dict = {}
            record["image"] = photograph(draw_product(product, shapes[item]), rng, shopper=True, side=side,
                                         scene_images=scene_images, record=record)
            records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.colour_shopper_diagnosis",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-families", type=int, default=200)
    parser.add_argument("--test-families", type=int, default=50)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--photos", type=int, default=4, help="catalog photos per product")
    parser.add_argument("--side", type=int, default=160)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sheet", type=int, default=40, help="photos on the contact sheet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "colour-products")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "colour-products")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    command = " ".join(["python -m benchmarks.colour_shopper_diagnosis", *(argv if argv is not None else sys.argv[1:])])
    shapes, labels = load_fashion_mnist_arrays("train")
    train_items, _ = family_items(args.train_families, args.test_families)
    folder = args.work / f"photos-{RENDER_VERSION}-{args.side}px-{args.variants}x{args.photos}"
    train_paths, train_products, _, train_families = make_photos(folder / "train", train_items, shapes, labels,
                                                                 args.variants, args.photos, args.side, 1, False)
    families, products = np.asarray(train_families), np.asarray(train_products)
    held = validation_split(families)
    held_items = np.asarray(sorted(set(int(f) for f in families[held])))
    shopper_paths, shopper_products, _, _ = make_photos(folder / "shopper-validation", held_items, shapes, labels,
                                                        args.variants, 1, args.side, 4, True)
    records = rendered_again(held_items, shapes, args.variants, args.side, 4)
    gallery_rows = np.flatnonzero(held)
    gallery_labels = products[gallery_rows]
    trunk = frozen_trunk(args.size, None, NEUTRAL_GREY)
    size, grey = args.size, NEUTRAL_GREY
    gallery_views = [trunk.preprocessing.to_uint8(decode_image(train_paths[i])) for i in gallery_rows]
    gallery = embedded(trunk, torch.from_numpy(np.stack(gallery_views))).numpy()

    views: dict[str, list[np.ndarray]] = {t: [] for t in TREATMENTS}
    ious, drift = [], []
    for path, record in zip(shopper_paths, records):
        image = decode_image(path)
        drift.append(float(np.abs(np.asarray(image, np.float32) - np.asarray(record["image"], np.float32)).mean()))
        alpha, box = record["alpha"], true_box(record["alpha"])
        region = (round(box[0] * image.width), round(box[1] * image.height), round(box[2] * image.width),
                  round(box[3] * image.height))
        auto = on_backdrop(image, size=size, grey=grey)
        views["auto"].append(auto)
        views["auto + mirror"].append(auto)
        views["true box"].append(on_backdrop(image, size=size, grey=grey, region=region))
        views["true mask"].append(compose(image, box, alpha, size=size, grey=grey))
        clean = compose(undo_light(image, record["light"]), box, alpha, size=size, grey=grey)
        views["true mask, light undone"].append(clean)
        views["true mask, light undone + mirror"].append(clean)
        ious.append(crop_iou(image, alpha))
    labels_q = np.asarray(shopper_products)
    ranks, r1 = {}, {}
    for name, arrays in views.items():
        batch = torch.from_numpy(np.stack(arrays))
        scores = embedded(trunk, batch).numpy() @ gallery.T
        if name.endswith("+ mirror"):
            scores = np.maximum(scores, embedded(trunk, batch.flip(-1)).numpy() @ gallery.T)
        rank = []
        for row, label in zip(scores, labels_q):
            order = gallery_labels[np.argsort(-row)]
            rank.append(int(np.flatnonzero(order == label)[0]) + 1)
        ranks[name], r1[name] = rank, float(np.mean(np.asarray(rank) == 1))
    catalog_r1 = float(np.mean([gallery_labels[np.argsort(-row)[1]] == label
                                for row, label in zip(gallery @ gallery.T, gallery_labels)]))
    ious_a = np.asarray(ious)
    bands = (("wrong object or none (IoU < 0.3)", ious_a < 0.3), ("partly (0.3-0.7)", (ious_a >= 0.3) & (ious_a < 0.7)),
             ("right object (IoU >= 0.7)", ious_a >= 0.7))
    by_band = {label: {"photos": int(m.sum()), **{t: float(np.mean(np.asarray(ranks[t])[m] == 1)) if m.any() else None
                                                  for t in TREATMENTS}} for label, m in bands}
    mirrored = np.asarray([r["mirrored"] for r in records])
    record_out = {"command": command, "photos": len(shopper_paths), "catalog_photos": len(gallery_rows),
                  "catalog_R@1_leave_one_out": catalog_r1, "R@1": r1, "by_crop": by_band,
                  "mirrored_photos": int(mirrored.sum()),
                  "auto_R@1_mirrored": float(np.mean(np.asarray(ranks["auto"])[mirrored] == 1)),
                  "auto_R@1_not_mirrored": float(np.mean(np.asarray(ranks["auto"])[~mirrored] == 1)),
                  "mean_abs_difference_rerendered": float(np.mean(drift)),
                  "photos_rows": [{"path": str(Path(p).relative_to(ROOT)) if Path(p).is_relative_to(ROOT) else p,
                                   "iou": round(i, 3), "mirrored": r["mirrored"],
                                   "brightness": round(r["light"][2], 2),
                                   "tint": [round(t, 2) for t in r["light"][3]],
                                   **{t: ranks[t][k] for t in TREATMENTS}}
                                  for k, (p, i, r) in enumerate(zip(shopper_paths, ious, records))],
                  "seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shopper-diagnosis.json").write_text(json.dumps(record_out, indent=1) + "\n")
    sheet(args.out / "shopper-diagnosis.jpg", shopper_paths[:args.sheet], views, gallery_views, gallery_labels,
          labels_q, size)
    lines = ["# Colour products: why shopper-style photos miss (validation families, frozen Lite0, product on grey)", "",
             f"Command: `{command}`  ",
             f"{len(shopper_paths)} shopper-style photos of the validation products (seed 4; the test products are not "
             f"read) query the {len(gallery_rows)} catalog photos of those products (their leave-one-out R@1: "
             f"{catalog_r1:.3f}). The photos were rendered again with the renderer's record (mean absolute difference "
             f"from the saved JPEGs {np.mean(drift):.2f} levels of 255). Load average {[round(x, 2) for x in os.getloadavg()]}; "
             f"{record_out['seconds']:.0f} s.", "",
             "| treatment | shopper R@1 | / catalog R@1 |", "|---|---:|---:|"]
    lines += [f"| {t} | {r1[t]:.3f} | {r1[t] / max(catalog_r1, 1e-9):.2f}x |" for t in TREATMENTS]
    lines += ["", "By how much of the product the automatic crop kept (IoU with the true product):", "",
              "| automatic crop | photos | " + " | ".join(TREATMENTS) + " |", "|---|---:|" + "---:|" * len(TREATMENTS)]
    lines += [f"| {label} | {v['photos']} | " + " | ".join("-" if v[t] is None else f"{v[t]:.3f}" for t in TREATMENTS)
              + " |" for label, v in by_band.items()]
    lines += ["", f"Mirrored shopper photos: {int(mirrored.sum())}; automatic-crop R@1 on them "
              f"{record_out['auto_R@1_mirrored']:.3f}, on the others {record_out['auto_R@1_not_mirrored']:.3f}.", "",
              f"Contact sheet (first {min(args.sheet, len(shopper_paths))} photos; per row: the shopper photo, the "
              "automatic view, the true-mask view, the true-mask view with the light undone, a catalog photo of the "
              "product as the gallery holds it): shopper-diagnosis.jpg.", ""]
    (args.out / "shopper-diagnosis.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def sheet(path: Path, paths, views, gallery_views, gallery_labels, labels_q, size: int) -> None:
    """One row per photo: the photo, its automatic view, its true-mask view (light kept, light undone), a
    catalog view of its product."""
    rows = []
    for k, p in enumerate(paths):
        photo = np.asarray(decode_image(p).resize((size, size)))
        catalog = gallery_views[int(np.flatnonzero(gallery_labels == labels_q[k])[0])].transpose(1, 2, 0)
        cells = [photo] + [views[t][k].transpose(1, 2, 0) for t in ("auto", "true mask", "true mask, light undone")]
        rows.append(np.concatenate(cells + [catalog], axis=1))
    if rows:
        Image.fromarray(np.concatenate(rows, axis=0)).save(path, quality=85)


if __name__ == "__main__":
    sys.exit(main())
