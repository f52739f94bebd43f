"""How long a store's CoInsP head takes to train from cached trunk features, at a store's size.

    python -m benchmarks.head_training_time [--photos 10000 --views 4 --epochs 30]

Times training/head_training.py (the same settings as `python -m training.store`) on cached features
of the shape EfficientNet-Lite0 gives (1280-d unit vectors, float16) for --photos photos in 5
categories. The features are random: this measures time only, not retrieval (that is
benchmarks/colour_products.py). Writes reports/colour-products/head-training-time.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from training.head_training import HeadSettings, train_head

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.head_training_time", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--epochs", type=int, default=HeadSettings.epochs)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "colour-products" / "head-training-time.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(args.photos, args.views, args.dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=2, keepdims=True)
    categories = rng.integers(0, 5, args.photos)
    load_before = os.getloadavg()
    cpu_before = time.process_time()
    trained = train_head(features.astype(np.float16), categories, HeadSettings(epochs=args.epochs), progress=True)
    cpu_s = time.process_time() - cpu_before
    report = {"command": "python -m benchmarks.head_training_time " + " ".join(argv if argv is not None else sys.argv[1:]),
              "photos": args.photos, "views": args.views, "dim": args.dim, "epochs": args.epochs,
              "settings": {k: v for k, v in vars(trained.settings).items()}, "seconds": round(trained.seconds, 1),
              "cpu_seconds": round(cpu_s, 1),
              "cpu_seconds_extrapolated_to_10000_photos": round(cpu_s * 10_000 / args.photos, 1),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    per_epoch = trained.seconds / max(1, args.epochs)
    args.out.with_suffix(".md").write_text("\n".join([
        f"# A store's CoInsP** head trained from cached trunk features: {args.photos:,} photos", "",
        f"Command: `{report['command']}`  ",
        f"{args.photos:,} photos x {args.views} cached views of {args.dim}-d float16 features (random: time only), "
        f"{args.epochs} epochs, the settings of `python -m training.store` ({trained.settings.threads} thread(s), "
        f"{trained.settings.precision}).  ",
        f"Load average before {report['load_average_before']}, after {report['load_average_after']} on "
        f"{os.cpu_count()} cores (a shared machine: the wall clock includes the time other work held the cores).", "",
        "| photos | epochs | training s (wall) | s per epoch (wall) | CPU s (the process) | goal |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {args.photos:,} | {args.epochs} | {trained.seconds:.1f} | {per_epoch:.2f} | {cpu_s:.1f} | "
        "<= 600 s for 10,000 photos |", "",
        "The CPU time is close to what one quiet core takes (the head trains on one thread). "
        + ("" if args.photos == 10_000 else
           f"**Extrapolated, not measured:** 10,000 photos at the same CPU time per photo-epoch: "
           f"{report['cpu_seconds_extrapolated_to_10000_photos']:.0f} CPU s; a lower bound, since the instance "
           "classifier's logits (each photo against every photo's memory row) grow with the number of photos."),
        ""]))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
