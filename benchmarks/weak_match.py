"""How often the weak-match notice shows: shopper photos of products the catalog holds (their
product type) against photos of things it does not hold.

    python -m benchmarks.weak_match [--catalog catalogs/fashion-mnist-test] [--model models/coinsp-fmnist.pt]

Shopper photos are rendered from Fashion-MNIST *training* items (never in the default catalog)
by benchmarks.shopper_render, on plain light and on cluttered backdrops; out-of-catalog photos
are shapes no clothing catalog holds (rings, stars, scribbles, crosses, letters, digits)
rendered the same way. Each photo is searched as the app does (automatic product region); the
notice shows when its best score is below the catalog's calibrated weak-match score
(index.search.calibration). Writes reports/weak-match.md and .json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.shopper_render import render
from embedder.files import atomic_path
from index.importers import load_fashion_mnist_arrays
from index.search.service import SearchService, UnusablePhotoError

SHAPES = ("ring", "star", "scribble", "cross", "letters", "digit")


def shape(kind: str, seed: int) -> np.ndarray:
    """A 28-px light-on-black drawing of something a clothing catalog does not hold."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (28, 28))
    draw = ImageDraw.Draw(image)
    if kind == "ring":
        draw.ellipse((4 + int(rng.integers(0, 3)), 4, 24, 24 - int(rng.integers(0, 3))), outline=255, width=3)
    elif kind == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, 1)
        radii = np.where(np.arange(10) % 2 == 0, 11, 5)
        draw.polygon([(14 + r * np.cos(a), 14 + r * np.sin(a)) for r, a in zip(radii, angles)], fill=255)
    elif kind == "scribble":
        draw.line([tuple(int(v) for v in rng.integers(3, 25, 2)) for _ in range(8)], fill=255, width=2)
    elif kind == "cross":
        draw.line((4, 4, 24, 24), fill=255, width=3)
        draw.line((4, 24, 24, 4), fill=255, width=3)
    elif kind == "letters":
        draw.text((2, 8), "".join(rng.choice(list("AKXZ47"), 2)), fill=255, font_size=14)
    else:  # an 8
        draw.ellipse((9, 3, 19, 13), outline=255, width=2)
        draw.ellipse((8, 13, 20, 25), outline=255, width=2)
    return np.asarray(image)


def weak_rate(service: SearchService, items, seed: int, cluttered: bool, mirror: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    weak, best, refused = [], [], 0
    for item in items:
        try:
            confidence = service.search(render(item, rng, cluttered).image, k=1, mirror=mirror).confidence
        except UnusablePhotoError:
            refused += 1
            continue
        weak.append(confidence.weak)
        best.append(confidence.best_score)
    return {"photos": len(items), "weak_rate": round(float(np.mean(weak)), 4), "refused": refused,
            "best_score_p50": round(float(np.median(best)), 4)}


def run(args) -> dict:
    service = SearchService(args.catalog, args.model)
    calibration = service.catalog.info.calibration
    if calibration is None:
        raise SystemExit(f"{args.catalog} has no calibration yet: run `python -m index rebuild --catalog {args.catalog}`")
    images, _ = load_fashion_mnist_arrays("train")
    held = images[np.random.default_rng(args.seed).choice(len(images), args.photos, replace=False)]
    drawings = [shape(kind, seed) for kind in SHAPES for seed in range(args.shapes_each)]
    rows = {}
    for cluttered in (False, True):
        backdrop = "cluttered" if cluttered else "plain light"
        rows[f"in catalog, {backdrop}"] = weak_rate(service, held, args.seed + 1 + cluttered, cluttered, not args.no_mirror)
        rows[f"not in catalog, {backdrop}"] = weak_rate(service, drawings, args.seed + 3 + cluttered, cluttered, not args.no_mirror)
    return {"catalog": str(args.catalog), "model": str(args.model), "calibration": calibration.to_dict(),
            "weak_below": calibration.weak_below, "seed": args.seed, "rows": rows}


def markdown(report: dict) -> str:
    lines = ["# Weak-match notice: how often it shows", "",
             f"`python -m benchmarks.weak_match` on `{report['catalog']}`: the notice shows when a photo's best "
             f"score is below {report['weak_below']:.3f}, the 5th percentile of the catalog's items' scores to "
             f"their nearest other item of the same {report['calibration']['label']} "
             f"({report['calibration']['items']:,} items measured).", "",
             "In catalog: Fashion-MNIST training items (never in the catalog) as shopper photos; not in catalog: "
             f"drawn shapes ({', '.join(SHAPES)}) rendered the same way. Automatic product region.", "",
             "| queries | photos | weak-match notice | best score p50 | refused (nothing to search for) |",
             "|---|---|---|---|---|"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row['photos']} | {row['weak_rate']:.1%} | {row['best_score_p50']:.3f} | "
                     f"{row['refused']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.weak_match", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=Path("catalogs/fashion-mnist-test"))
    parser.add_argument("--model", type=Path, default=Path("models/coinsp-fmnist.pt"))
    parser.add_argument("--photos", type=int, default=200, help="shopper photos per backdrop")
    parser.add_argument("--shapes-each", type=int, default=10, help="drawings per shape and backdrop")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--out", type=Path, default=Path("reports/weak-match"))
    parser.add_argument("--no-mirror", action="store_true", help="search photos only as they are, not also mirrored")
    args = parser.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(report, indent=2)), (".md", markdown(report))):
        with atomic_path(args.out.with_suffix(suffix)) as tmp:
            Path(tmp).write_text(text)
    print(markdown(report))


if __name__ == "__main__":
    main()
