"""A colour product benchmark with identity (Stanford Online Products in spirit), on the store's path.

    python -m benchmarks.colour_products [--train-families 200 --test-families 50 --variants 4 --photos 4]
    python -m benchmarks.colour_products --validate   # the head's settings, chosen on training products only

Products come in families whose members differ subtly (benchmarks/colour_products_render.py): one
Fashion-MNIST silhouette, close shades of the colours, the pattern a little finer or coarser, the print
moved, resized or of another shape or colour, the cut a little wider or narrower. Each product is
photographed several ways (pose, light, backdrop, crop, scale). Categories (tops, bottoms, dresses,
footwear, bags) are the only training label; product identity is used only for evaluation (and by
Opt, the reference); test families (their silhouettes and products) are never seen in training.
Shopper-style photos of the test products (real scenes behind them, dim tinted light, blur, JPEG)
are a second query set.

Every row trains on the same cached features of the frozen EfficientNet-Lite0 ImageNet trunk
(training/cached_features.py: each training photo's views embedded once) with the same head, epochs,
batch and views (training/head_training.py, the settings `python -m training.store` uses): frozen
(no training), Cos, CoInsP**, Opt (product labels). Retrieval: leave-one-out product Recall@k over
the test products' catalog photos; shopper photos query those catalog photos.

--validate holds out a quarter of the TRAINING families as validation products, trains on the rest
and compares the head's candidate settings there (the test products are not read): the store's
defaults were chosen from that table (reports/colour-products/validation.md).

Writes reports/colour-products/report.{json,md}, including the rates the Catalog page uses for its
time estimate.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.colour_products_render import Subtlety, draw_product, family_products, photograph, save, scenes
from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.embed import Embedder
from embedder.mask import default_mask
from embedder.preprocess import Preprocessing
from index.importers import load_fashion_mnist_arrays
from training.cached_features import EARLIER_AUGMENTATIONS, ViewSettings, cached_or_built
from training.head_training import HeadSettings, recall, train_head, whitened_head

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {0: "tops", 2: "tops", 4: "tops", 6: "tops", 1: "bottoms", 3: "dresses", 5: "footwear", 7: "footwear",
          9: "footwear", 8: "bags"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FROZEN = "Frozen EfficientNet-Lite0 (ImageNet)"
WHITENED = "Instance whitening alone (the head's first layer, no training, no label)"
ROWS = (("Cos*", "cos"), ("CoInsP**", "coinsp"), ("Opt* (product labels, reference)", "opt"))
OPT, OPT_CLOSED = "Opt* (product labels, reference)", "Product whitening (product labels, closed form, reference)"
RENDER_VERSION = "families-3"  # part of the photos' folder name: a changed renderer never reuses old photos
VALIDATION_SHARE = 0.25  # of the training families, held out by --validate


def family_items(train_families: int, test_families: int) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images giving the families' silhouettes: training and test families never share one, and the
    test families stay the same whatever the number of training families."""
    order = np.random.default_rng(0).permutation(60_000)
    return order[test_families:test_families + train_families], order[:test_families]


def make_photos(folder: Path, items: np.ndarray, shapes: np.ndarray, labels: np.ndarray, variants: int, photos: int,
                side: int, seed: int, shopper: bool) -> tuple[list[str], list[int], list[str], list[int]]:
    """Renders every family's products; returns (paths, product ids, categories, family ids).
    A product's id is family item x 100 + its number in the family."""
    planned = []
    for item in items:
        category = GROUPS[int(labels[item])]
        for p in range(variants):
            for v in range(photos):
                name = f"{'shopper' if shopper else 'catalog'}-{v}.jpg"
                planned.append((folder / category / f"{item:05d}-{p}" / name, int(item) * 100 + p, category, int(item)))
    columns = [list(c) for c in zip(*planned)] if planned else [[], [], [], []]
    columns[0] = [str(p) for p in columns[0]]
    if all(Path(path).is_file() for path in columns[0]):  # rendered by an earlier run: the same seeds give the same photos
        return tuple(columns)  # type: ignore[return-value]
    rng = np.random.default_rng(seed)
    scene_images = scenes()
    at = 0
    for item in items:
        for product in family_products(int(item), int(item), variants):
            drawn = draw_product(product, shapes[item])
            for v in range(photos):
                save(photograph(drawn, rng, shopper=shopper and v == 0, side=side, scene_images=scene_images),
                     Path(planned[at][0]))
                at += 1
    return tuple(columns)  # type: ignore[return-value]


def frozen_trunk(size: int, precision: str | None) -> Embedder:
    backbone = build_backbone("efficientnet_lite0")
    load_imagenet_weights(backbone)
    pre = Preprocessing(size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, domain=True, polarity="keep")
    mask = default_mask()  # how the photos are cropped is part of what the cache holds
    return Embedder(backbone, pre, fingerprint=f"efficientnet-lite0-imagenet-{size}px-mask-"
                                               f"{mask.fingerprint if mask is not None else 'rules'}", precision=precision)


def validation_split(families: np.ndarray, seed: int = 0) -> np.ndarray:
    """Whether each training photo's family is held out for validation (a hash of the family: stable)."""
    unique = sorted(set(int(f) for f in families), key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    held = set(unique[:max(2, round(VALIDATION_SHARE * len(unique)))])
    return np.asarray([int(f) in held for f in families])


def candidate_settings(base: HeadSettings) -> dict[str, HeadSettings]:
    """The head's settings compared by --validate (CoInsP**), at the benchmark's budget (epochs, views)."""
    return {
        "defaults": base,
        "lr 3e-4": replace(base, lr=3e-4),
        "lr 1e-3": replace(base, lr=1e-3),
        "temperature 0.4 (the preset's)": replace(base, temperature=0.4),
        "temperature 0.05": replace(base, temperature=0.05),
        "no whitening": replace(base, whiten=None),
        "no whitening, lr 1e-3, temperature 0.4 (the earlier head)": replace(base, whiten=None, lr=1e-3, temperature=0.4),
        "whitening regularisation 0.01": replace(base, whiten=0.01),
        "whitening regularisation 0.3": replace(base, whiten=0.3),
        "proxies 0.05 x photos": replace(base, proxies_per_photo=0.05),
        "proxies 0.5 x photos": replace(base, proxies_per_photo=0.5),
        "coarse weight 0.1": replace(base, coarse_weight=0.1),
        "coarse weight 1": replace(base, coarse_weight=1.0),
    }


def first_hits(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per photo, leave-one-out: whether its nearest other photo (cosine) shows the same product."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return labels[similarity.argmax(1)] == labels


def family_bootstrap(better: np.ndarray, worse: np.ndarray, families: np.ndarray, draws: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of R@1(better) - R@1(worse) over resamples of whole families (the unit
    that varies between test sets): how far a difference measured on one set of families can be trusted."""
    names = np.unique(families)
    rows = [np.flatnonzero(families == f) for f in names]
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        chosen = np.concatenate([rows[i] for i in rng.integers(len(names), size=len(names))])
        differences.append(better[chosen].mean() - worse[chosen].mean())
    return float(np.mean(differences)), float(np.std(differences))


def train_cache_folder(work: Path, photos: int, views: ViewSettings) -> Path:
    return work / f"cache-train-{photos}-{views.views}-{'-'.join(views.augmentations)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.colour_products", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-families", type=int, default=200)
    parser.add_argument("--test-families", type=int, default=50)
    parser.add_argument("--variants", type=int, default=4, help="products per family")
    parser.add_argument("--photos", type=int, default=4, help="catalog photos per product")
    parser.add_argument("--side", type=int, default=160, help="px of the rendered photos")
    parser.add_argument("--size", type=int, default=128, help="the trunk's input size in px")
    parser.add_argument("--views", type=int, default=ViewSettings.views, help="cached views per training photo")
    parser.add_argument("--epochs", type=int, default=HeadSettings.epochs)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default=None, help="fp32, bf16 or auto (default: measured here)")
    parser.add_argument("--validate", action="store_true",
                        help="compare the head's settings on validation families held out of training (no test products)")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "colour-products")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "colour-products")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    command = " ".join(["python -m benchmarks.colour_products", *(argv if argv is not None else sys.argv[1:])])

    shapes, labels = load_fashion_mnist_arrays("train")
    train_items, test_items = family_items(args.train_families, args.test_families)
    photos_folder = args.work / f"photos-{RENDER_VERSION}-{args.side}px-{args.variants}x{args.photos}"
    at = time.perf_counter()
    train_paths, train_products, train_categories, train_families = make_photos(
        photos_folder / "train", train_items, shapes, labels, args.variants, args.photos, args.side, 1, False)
    render_s = time.perf_counter() - at
    trunk = frozen_trunk(args.size, args.precision)
    views = ViewSettings(views=args.views)
    train_cache = cached_or_built(train_paths, trunk, train_cache_folder(args.work, len(train_paths), views), views,
                                  progress=True)
    cache_s = train_cache.build_seconds  # when it was made (by this run or an earlier one); None: not recorded
    features = np.asarray(train_cache.features)
    categories = sorted(set(train_categories))
    codes = np.asarray([categories.index(c) for c in train_categories])
    fine = np.unique(np.asarray(train_products), return_inverse=True)[1]
    base = HeadSettings(epochs=args.epochs, precision=args.precision)
    if args.validate:
        other_views = ViewSettings(views=args.views, augmentations=EARLIER_AUGMENTATIONS)
        other = cached_or_built(train_paths, trunk, train_cache_folder(args.work, len(train_paths), other_views),
                                other_views, progress=True)
        return validate(args, command, features, np.asarray(other.features), codes, np.asarray(train_products),
                        np.asarray(train_families), base, started, load_before)

    at = time.perf_counter()
    test_paths, test_products, _, _ = make_photos(photos_folder / "test", test_items, shapes, labels, args.variants,
                                                  args.photos, args.side, 2, False)
    shopper_paths, shopper_products, _, _ = make_photos(photos_folder / "shopper", test_items, shapes, labels,
                                                        args.variants, 1, args.side, 3, True)
    render_s += time.perf_counter() - at
    test_cache = cached_or_built(test_paths, trunk, args.work / f"cache-test-{len(test_paths)}", ViewSettings(views=1),
                                 progress=True)
    shopper_cache = cached_or_built(shopper_paths, trunk, args.work / f"cache-shopper-{len(shopper_paths)}",
                                    ViewSettings(views=1), progress=True)
    test_plain, shopper_plain = test_cache.plain(), shopper_cache.plain()
    test_labels, shopper_labels = np.asarray(test_products), np.asarray(shopper_products)

    def scores(vectors) -> dict:
        gallery = vectors(test_plain)
        catalog = recall(gallery, test_labels, ks=(1, 5))
        shopper = recall(vectors(shopper_plain), shopper_labels, ks=(1, 5), gallery=gallery, gallery_labels=test_labels)
        return {"R@1": catalog[1], "R@5": catalog[5], "shopper_R@1": shopper[1], "shopper_R@5": shopper[5]}

    frozen_vectors = torch.nn.functional.normalize(test_plain, dim=1).numpy()
    rows = {FROZEN: {**scores(lambda t: torch.nn.functional.normalize(t, dim=1).numpy()), "train_s": 0.0}}
    whitened = whitened_head(features, base)
    rows[WHITENED] = {**scores(whitened.vectors), "train_s": round(whitened.seconds, 1)}
    histories = {}
    for label, preset in ROWS:
        trained = train_head(features, codes, replace(base, preset=preset), fine_labels=fine, progress=True)
        rows[label] = {**scores(trained.vectors), "train_s": round(trained.seconds, 1)}
        histories[label] = trained.history[-1]
        if preset == "coinsp":
            coinsp_vectors = trained.vectors(test_plain)
        print(label, rows[label], flush=True)
    closed = whitened_head(features, base, groups=np.asarray(train_products))
    rows[OPT_CLOSED] = {**scores(closed.vectors), "train_s": round(closed.seconds, 1)}

    frozen, coinsp, opt = (rows[k]["R@1"] for k in (FROZEN, "CoInsP**", OPT))
    test_families = test_labels // 100
    gain_mean, gain_sd = family_bootstrap(first_hits(coinsp_vectors, test_labels), first_hits(frozen_vectors, test_labels),
                                          test_families)
    try:
        validation = json.loads((args.out / "validation.json").read_text())
    except (OSError, ValueError):
        validation = None
    gap_share = (coinsp - frozen) / (opt - frozen) if opt > frozen else float("nan")
    head_s = rows["CoInsP**"]["train_s"]
    report = {
        "command": command,
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "head": asdict(base), "views": asdict(views), "render": RENDER_VERSION, "subtlety": asdict(Subtlety()),
        "trunk_precision": trunk.precision, "trunk_fingerprint": trunk.fingerprint,
        "train_products": len(set(train_products)), "test_products": len(set(test_products)),
        "train_photos": len(train_paths), "test_photos": len(test_paths), "shopper_photos": len(shopper_paths),
        "rows": rows, "last_epoch_losses": histories,
        "coinsp_minus_frozen_points": round(100 * (coinsp - frozen), 1),
        "coinsp_minus_frozen_family_bootstrap_points": {"mean": round(100 * gain_mean, 1), "sd": round(100 * gain_sd, 1)},
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
    lines = [f"# Colour products with identity: {report['train_products']} training products ({args.train_families} "
             f"families), {report['test_products']} test products ({args.test_families} families) never seen in "
             f"training, {args.photos} photos each", "",
             f"Command: `{command}`  ",
             f"Each family: {args.variants} products that differ subtly (close shades, pattern scale, the print moved or "
             "changed, the cut); each photo varies pose, light, backdrop, crop and scale. Categories are the only "
             "training label; leave-one-out product R@1 over the test products' catalog photos.  ",
             f"Trunk: EfficientNet-Lite0 ImageNet, frozen, {args.size} px input, {trunk.precision}; every row trains "
             f"the same head on the same cached features ({args.views} views per training photo), {args.epochs} "
             f"epochs, batch {base.batch_size}, the settings of `python -m training.store` (chosen on validation "
             "families of the training products: validation.md).  ",
             f"Load average before {report['load_average_before']}, after {report['load_average_after']} on "
             f"{os.cpu_count()} cores (a shared machine).", "",
             "| representation | product R@1 | R@5 | shopper photos R@1 | shopper R@5 | head training s |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['R@1']:.3f} | {v['R@5']:.3f} | {v['shopper_R@1']:.3f} | {v['shopper_R@5']:.3f} | "
              f"{v['train_s']:.1f} |" for k, v in rows.items()]
    lines += ["", f"CoInsP** minus frozen: **{report['coinsp_minus_frozen_points']:+.1f} points** product R@1; share of "
              f"the frozen-to-Opt* gap closed: **{gap_share:.0%}**; shopper photos over catalog photos (CoInsP**): "
              f"**{report['shopper_over_catalog_R@1']:.2f}x**. The gain over frozen, resampling whole test families "
              f"(2,000 draws): {100 * gain_mean:+.1f} +- {100 * gain_sd:.1f} points (one standard deviation).", ""]
    if validation is not None:
        val = validation["rows"]
        lines += [f"On the validation families of the training products (validation.md, `{validation['command']}`): "
                  f"frozen {val[FROZEN]:.3f}, instance whitening alone {val[WHITENED]:.3f}, CoInsP** "
                  f"{val['CoInsP**, defaults']:.3f}, Opt* {val[OPT + ', lr ' + format(base.lr, 'g')]:.3f}.", ""]
    lines += [
              f"Time: rendering {render_s:.0f} s (0 when an earlier run's photos were reused); caching the training "
              "photos' views " + ("not recorded (an earlier run's cache was reused)" if cache_s is None else
                                  f"{cache_s:.0f} s ({1000 * report['rates']['trunk_s_per_view']:.0f} ms a view)")
              + f"; CoInsP** head {head_s:.0f} s; whole run {report['seconds']['total']:.0f} s.",
              ""]
    (args.out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def validate(args, command: str, features: np.ndarray, other_views: np.ndarray, codes: np.ndarray,
             products: np.ndarray, families: np.ndarray, base: HeadSettings, started: float, load_before) -> int:
    """CoInsP**'s candidate settings, and Cos* and Opt* at three learning rates, trained on three quarters of the
    training families; product R@1 (leave-one-out) over the held-out quarter's photos (view 0). Never reads a
    test product."""
    held = validation_split(families)
    fit, val = np.flatnonzero(~held), np.flatnonzero(held)
    plain = torch.from_numpy(np.asarray(features[val, 0], np.float32))
    labels = products[val]
    fine = np.unique(products[fit], return_inverse=True)[1]

    def score(vectors) -> float:
        return recall(vectors(plain), labels, ks=(1,))[1]

    rows = {FROZEN: score(lambda t: torch.nn.functional.normalize(t, dim=1).numpy())}
    rows[WHITENED] = score(whitened_head(features[fit], base).vectors)
    rows[OPT_CLOSED] = score(whitened_head(features[fit], base, groups=products[fit]).vectors)
    print(rows, flush=True)
    runs = [(f"CoInsP**, {name}", replace(settings, preset="coinsp"), features)
            for name, settings in candidate_settings(base).items()]
    runs.append((f"CoInsP**, defaults, views {'+'.join(EARLIER_AUGMENTATIONS)} (the earlier cache)",
                 replace(base, preset="coinsp"), other_views))
    runs += [(f"{label}, lr {lr:g}", replace(base, preset=preset, lr=lr), features)
             for label, preset in ROWS if preset != "coinsp" for lr in (base.lr, 3e-4, 1e-3)]
    for label, settings, cached in runs:
        trained = train_head(cached[fit], codes[fit], settings, fine_labels=fine)
        rows[label] = score(trained.vectors)
        print(label, round(rows[label], 4), f"{trained.seconds:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validation.json").write_text(json.dumps({"command": command, "head": asdict(base), "rows": rows},
                                                         indent=1) + "\n")
    lines = [f"# Colour products: the head's settings compared on validation families ({len(set(families[held]))} of the "
             f"{len(set(families))} training families held out; the test families are not read)", "",
             f"Command: `{command}`  ",
             f"Trained on {len(fit)} photos of {len(set(products[fit]))} products, product R@1 leave-one-out over "
             f"{len(val)} photos of {len(set(labels))} validation products; {args.views} cached views "
             f"({'+'.join(ViewSettings().augmentations)} unless named), {base.epochs} epochs, batch {base.batch_size}; "
             f"defaults: lr {base.lr:g}, temperature {base.temperature}, instance whitening {base.whiten}, "
             f"proxies {base.proxies_per_photo} x photos, hidden {base.hidden}, head_dim {base.head_dim}.  ",
             f"Load average before {[round(x, 2) for x in load_before]}, after {[round(x, 2) for x in os.getloadavg()]}; "
             f"{time.perf_counter() - started:.0f} s.", "",
             "| head | validation product R@1 |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in rows.items()] + [""]
    (args.out / "validation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
