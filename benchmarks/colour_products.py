"""A colour product benchmark with identity (Stanford Online Products in spirit), on the store's path.

    python -m benchmarks.colour_products [--train-products 300 --test-products 200 --photos 3 --size 128]

Products are drawn (benchmarks/colour_products_render.py): a Fashion-MNIST silhouette x colour, pattern,
print, logo and material; each is photographed several ways (pose, light, backdrop, crop, scale).
Categories (tops, bottoms, dresses, footwear, bags) are the only training label; product identity is
used only for evaluation (and by Opt, the reference); test products (and their silhouettes) are never
seen in training. Shopper-style photos of the test products (real scenes behind them, dim tinted light,
blur, JPEG) are a second query set.

Every row trains on the same cached features of the frozen EfficientNet-Lite0 ImageNet trunk
(training/cached_features.py: each training photo's views embedded once) with the same head, epochs
and batch (training/head_training.py): frozen (no training), Cos, CoInsP**, Opt (product labels).
Retrieval: leave-one-out product Recall@k over the test products' catalog photos; shopper photos
query those catalog photos. Writes reports/colour-products/report.{json,md}, including the rates the
Catalog page uses for its time estimate.
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

from benchmarks.colour_products_render import draw_product, photograph, random_product, save, scenes
from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.embed import Embedder
from embedder.preprocess import Preprocessing
from index.importers import load_fashion_mnist_arrays
from training.cached_features import ViewSettings, cached_or_built
from training.head_training import HeadSettings, recall, train_head

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {0: "tops", 2: "tops", 4: "tops", 6: "tops", 1: "bottoms", 3: "dresses", 5: "footwear", 7: "footwear",
          9: "footwear", 8: "bags"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ROWS = (("Cos", "cos"), ("CoInsP**", "coinsp"), ("Opt (product labels, reference)", "opt"))


def make_photos(folder: Path, items: np.ndarray, shapes: np.ndarray, labels: np.ndarray, photos: int, side: int,
                seed: int, shopper: bool) -> tuple[list[str], list[int], list[str]]:
    """Renders products from the items; returns (paths, product ids, categories)."""
    planned = [(folder / GROUPS[int(labels[item])] / f"{item:05d}" / f"{'shopper' if shopper else 'catalog'}-{v}.jpg",
                int(item), GROUPS[int(labels[item])]) for item in items for v in range(photos)]
    if all(path.is_file() for path, _, _ in planned):  # rendered by an earlier run: the same seeds give the same photos
        return [str(p) for p, _, _ in planned], [i for _, i, _ in planned], [c for _, _, c in planned]
    rng = np.random.default_rng(seed)
    scene_images = scenes()
    paths, products, categories = [], [], []
    for n, item in enumerate(items):
        product = random_product(int(item), np.random.default_rng(int(item)))
        drawn = draw_product(product, shapes[item])
        for v in range(photos):
            path = folder / GROUPS[int(labels[item])] / f"{item:05d}" / f"{'shopper' if shopper else 'catalog'}-{v}.jpg"
            save(photograph(drawn, rng, shopper=shopper and v == 0, side=side, scene_images=scene_images), path)
            paths.append(str(path))
            products.append(int(item))
            categories.append(GROUPS[int(labels[item])])
    return paths, products, categories


def frozen_trunk(size: int, precision: str | None) -> Embedder:
    backbone = build_backbone("efficientnet_lite0")
    load_imagenet_weights(backbone)
    pre = Preprocessing(size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, domain=True, polarity="keep")
    return Embedder(backbone, pre, fingerprint=f"efficientnet-lite0-imagenet-{size}px", precision=precision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.colour_products", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-products", type=int, default=200)
    parser.add_argument("--test-products", type=int, default=120)
    parser.add_argument("--photos", type=int, default=3, help="catalog photos per product")
    parser.add_argument("--side", type=int, default=160, help="px of the rendered photos")
    parser.add_argument("--size", type=int, default=128, help="the trunk's input size in px")
    parser.add_argument("--views", type=int, default=3, help="cached views per training photo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default=None, help="fp32, bf16 or auto (default: measured here)")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "colour-products")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "colour-products")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()

    shapes, labels = load_fashion_mnist_arrays("train")
    order = np.random.default_rng(0).permutation(len(shapes))
    train_items = order[:args.train_products]
    test_items = order[args.train_products:args.train_products + args.test_products]
    at = time.perf_counter()
    train_paths, train_products, train_categories = make_photos(args.work / "train", train_items, shapes, labels,
                                                                args.photos, args.side, 1, False)
    test_paths, test_products, _ = make_photos(args.work / "test", test_items, shapes, labels, args.photos, args.side,
                                               2, False)
    shopper_paths, shopper_products, _ = make_photos(args.work / "shopper", test_items, shapes, labels, 1, args.side,
                                                     3, True)
    render_s = time.perf_counter() - at

    trunk = frozen_trunk(args.size, args.precision)
    train_cache = cached_or_built(train_paths, trunk, args.work / "cache-train", ViewSettings(views=args.views), progress=True)
    cache_s = train_cache.build_seconds  # when it was made (by this run or an earlier one); None: not recorded
    test_cache = cached_or_built(test_paths, trunk, args.work / "cache-test", ViewSettings(views=1), progress=True)
    shopper_cache = cached_or_built(shopper_paths, trunk, args.work / "cache-shopper", ViewSettings(views=1), progress=True)
    test_plain, shopper_plain = test_cache.plain(), shopper_cache.plain()
    test_labels, shopper_labels = np.asarray(test_products), np.asarray(shopper_products)

    def scores(vectors) -> dict:
        gallery = vectors(test_plain)
        catalog = recall(gallery, test_labels, ks=(1, 5))
        shopper = recall(vectors(shopper_plain), shopper_labels, ks=(1, 5), gallery=gallery, gallery_labels=test_labels)
        return {"R@1": catalog[1], "R@5": catalog[5], "shopper_R@1": shopper[1], "shopper_R@5": shopper[5]}

    rows = {"Frozen EfficientNet-Lite0 (ImageNet)": {**scores(lambda t: torch.nn.functional.normalize(t, dim=1).numpy()),
                                                     "train_s": 0.0}}
    categories = sorted(set(train_categories))
    codes = np.asarray([categories.index(c) for c in train_categories])
    fine = np.unique(np.asarray(train_products), return_inverse=True)[1]
    features = np.asarray(train_cache.features)
    for label, preset in ROWS:
        trained = train_head(features, codes, HeadSettings(preset=preset, epochs=args.epochs, precision=args.precision),
                             fine_labels=fine, progress=True)
        rows[label] = {**scores(trained.vectors), "train_s": round(trained.seconds, 1)}
        print(label, rows[label], flush=True)

    frozen, coinsp, opt = (rows[k]["R@1"] for k in ("Frozen EfficientNet-Lite0 (ImageNet)", "CoInsP**",
                                                    "Opt (product labels, reference)"))
    gap_share = (coinsp - frozen) / (opt - frozen) if opt > frozen else float("nan")
    head_s = rows["CoInsP**"]["train_s"]
    report = {
        "command": "python -m benchmarks.colour_products " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "trunk_precision": trunk.precision, "train_photos": len(train_paths), "test_photos": len(test_paths),
        "shopper_photos": len(shopper_paths), "rows": rows,
        "coinsp_minus_frozen_points": round(100 * (coinsp - frozen), 1),
        "share_of_frozen_to_opt_gap": round(gap_share, 3),
        "shopper_over_catalog_R@1": round(rows["CoInsP**"]["shopper_R@1"] / max(coinsp, 1e-9), 3),
        "rates": {"trunk_s_per_view": None if cache_s is None else round(cache_s / (len(train_paths) * args.views), 4),
                  "head_s_per_photo_epoch": round(head_s / (len(train_paths) * args.epochs), 6)},
        "seconds": {"render": round(render_s, 1), "cache_train": None if cache_s is None else round(cache_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# Colour products with identity: {args.train_products} training products, {args.test_products} test "
             f"products never seen in training, {args.photos} photos each", "",
             f"Command: `{report['command']}`  ",
             f"Trunk: EfficientNet-Lite0 ImageNet, frozen, {args.size} px input, {trunk.precision}; every row trains "
             f"the same head on the same cached features ({args.views} views per training photo), {args.epochs} epochs, "
             f"batch 256.  ", f"Load average before {report['load_average_before']}, after "
             f"{report['load_average_after']} on {os.cpu_count()} cores (a shared machine).", "",
             "| representation | product R@1 | R@5 | shopper photos R@1 | shopper R@5 | head training s |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['R@1']:.3f} | {v['R@5']:.3f} | {v['shopper_R@1']:.3f} | {v['shopper_R@5']:.3f} | "
              f"{v['train_s']:.1f} |" for k, v in rows.items()]
    lines += ["", f"CoInsP** minus frozen: **{report['coinsp_minus_frozen_points']:+.1f} points** product R@1; share of "
              f"the frozen-to-Opt gap closed: **{gap_share:.0%}**; shopper photos over catalog photos (CoInsP**): "
              f"**{report['shopper_over_catalog_R@1']:.2f}x**.", "",
              f"Time: rendering {render_s:.0f} s (0 when an earlier run's photos were reused); caching the training "
              "photos' views " + ("not recorded (an earlier run's cache was reused)" if cache_s is None else
                                  f"{cache_s:.0f} s ({1000 * report['rates']['trunk_s_per_view']:.0f} ms a view)")
              + f"; CoInsP** head {head_s:.0f} s; whole run {report['seconds']['total']:.0f} s.",
              ""]
    (args.out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
