"""Shoppers' photos under conditions nothing was tuned on: `python -m benchmarks.shopper_families`

Leave-families-out. The photo families (benchmarks/photo_families.py, written apart from the
training backdrops of training/composites.py) are split in two: settings are chosen on the
tuning families only (`--tune`; choosing on a held-out family is refused), and the report's
headline figures are the held-out families'. Every photo is searched as the product searches it
(index.search.service.SearchService: the check, the learned mask, the normalisation, both facings, the
confidence model), against the same items as native 28-px catalog images.

Items: Fashion-MNIST training items that no composite was ever made of
(training/composites.report_items), none in the default catalog. Per family and query kind:
fine R@1 (same product type), its ratio to native with a standard error, and how the weak-match
notice behaved (right answers without it, wrong answers with it); out-of-catalog photos with it;
the added latency of check, mask and normalisation on 1,000-px photos; the catalog's own R@1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # latency is quoted for one core

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.photo_families import FAMILIES, HELD_OUT_FAMILIES, TUNING_FAMILIES, out_of_catalog_photos, render_photo  # noqa: E402
from benchmarks.shopper_photos import FINE_NAMES, added_latency, catalog_loo, embed_with, loose_box  # noqa: E402
from benchmarks.shopper_render import render as own_render  # noqa: E402
from embedder.domain_settings import DomainSettings  # noqa: E402
from embedder.images import ImageError  # noqa: E402
from embedder.mask import default_mask  # noqa: E402
from index.search.grouping import rank_results  # noqa: E402
from index.importers import load_fashion_mnist_arrays  # noqa: E402
from index.search.service import SearchService  # noqa: E402
from training.composites import report_items  # noqa: E402

KINDS = ("automatic crop", "true box", "loose box")
OWN_RENDERER = {"own renderer, plain": False, "own renderer, cluttered": True}  # the renderer earlier settings were tuned on


def check_tuning_families(families) -> None:
    """Settings are chosen on tuning families only: a held-out family here is an error."""
    held = sorted(set(families) & set(HELD_OUT_FAMILIES))
    if held:
        raise ValueError(f"settings may only be chosen on tuning families; {', '.join(held)} "
                         f"{'is' if len(held) == 1 else 'are'} held out for the report")
    unknown = sorted(set(families) - set(TUNING_FAMILIES))
    if unknown:
        raise ValueError(f"not tuning families: {', '.join(unknown)} (tuning: {', '.join(TUNING_FAMILIES)})")


def ratio(right: np.ndarray, native: float) -> dict:
    """R@1 of a query set, its ratio to native and the ratio's standard error (binomial, native taken as exact:
    it is measured on the same items)."""
    r = float(right.mean()) if len(right) else float("nan")
    se = float(np.sqrt(r * (1 - r) / max(1, len(right))))
    return {"R@1": r, "x_native": r / native, "se_x": se / native, "queries": int(len(right))}


def photos_of(family: str, items: np.ndarray, seed: int) -> list:
    rng = np.random.default_rng([seed, sum(map(ord, family))])
    if family in OWN_RENDERER:
        return [own_render(item, rng, OWN_RENDERER[family], opaque=True) for item in items]
    return [render_photo(family, item, rng) for item in items]


def search_all(service: SearchService, photos, boxes, truth) -> dict:
    """Each photo searched as a shopper's (both facings, the confidence model): right at 1, notice shown."""
    right, weak, refused = [], [], 0
    for photo, box, label in zip(photos, boxes, truth):
        try:
            results = service.search(photo.image, k=1, box=box)
        except ImageError:
            refused += 1
            right.append(False)
            weak.append(True)
            continue
        right.append(bool(len(results.frame)) and results.frame["product_id"].iloc[0] == label)
        weak.append(bool(results.confidence.weak) if results.confidence is not None else False)
    return {"right": np.array(right, bool), "weak": np.array(weak, bool), "refused": refused}


def notice_quality(found: dict) -> dict:
    right, weak = found["right"], found["weak"]
    return {"right_without_notice": float(np.mean(~weak[right])) if right.any() else None,
            "wrong_with_notice": float(np.mean(weak[~right])) if (~right).any() else None}


def native_r1(service: SearchService, items: np.ndarray, truth: np.ndarray) -> float:
    right = []
    for item, label in zip(items, truth):
        frame = service.search(Image.fromarray(item).convert("RGB"), k=1).frame
        right.append(frame["product_id"].iloc[0] == label)
    return float(np.mean(right))


def run(args) -> dict:
    torch.set_num_threads(1)
    service = SearchService(args.catalog, args.model)
    images, labels = load_fashion_mnist_arrays("train")
    pool = report_items(len(images))
    families = [*OWN_RENDERER, *TUNING_FAMILIES, *HELD_OUT_FAMILIES]
    rows, started = {}, time.perf_counter()
    for f_index, family in enumerate(families):
        rng = np.random.default_rng([args.seed, f_index])
        picks = np.sort(rng.choice(pool, args.items, replace=False))
        items, truth = images[picks], np.array([FINE_NAMES[i] for i in labels[picks]])
        native = native_r1(service, items, truth)
        photos = photos_of(family, items, args.seed)
        row = {"group": ("tuned on earlier" if family in OWN_RENDERER else
                         "tuning" if family in TUNING_FAMILIES else "held out"),
               "textured": OWN_RENDERER.get(family, FAMILIES[family].textured if family in FAMILIES else False),
               "native_R@1": native}
        for kind in KINDS:
            boxes = [None if kind == "automatic crop" else p.box if kind == "true box" else loose_box(p.box, *p.image.size)
                     for p in photos]
            found = search_all(service, photos, boxes, truth)
            row[kind] = {**ratio(found["right"], native), **notice_quality(found), "refused": found["refused"]}
        rows[family] = row
        print(f"{family}: " + ", ".join(f"{k} {row[k]['x_native']:.3f}x" for k in KINDS)
              + f" ({time.perf_counter() - started:.0f}s)", flush=True)
    unlike = out_of_catalog_photos(args.unlike, np.random.default_rng(args.seed + 99))
    unlike_weak = []
    for image in unlike:
        try:
            unlike_weak.append(bool(service.search(image, k=1).confidence.weak))
        except ImageError:
            unlike_weak.append(True)  # refused outright: the shopper is told, no result shown
    big = [p for family in HELD_OUT_FAMILIES for p in photos_of(family, images[pool[:40]], args.seed + 7)
           if max(p.image.size) >= 900][:args.latency_photos]
    report = {"command": "python -m benchmarks.shopper_families " + " ".join(args.argv), "items_per_family": args.items,
              "model": args.model, "catalog": args.catalog, "settings": asdict(DomainSettings()),
              "mask_model": None if default_mask() is None else default_mask().fingerprint,
              "families": rows, "summary": summarise(rows),
              "out_of_catalog": {"photos": len(unlike), "with_notice": float(np.mean(unlike_weak))},
              "added_latency_1000px": added_latency(service.embedder, big),
              "catalog_leave_one_out": None if args.skip_catalog else
              {k: v for k, v in catalog_loo(service.embedder, service.catalog).items() if not k.endswith("vectors")}}
    if args.before:  # the same families and seed measured with the product before (another run)
        report["before"] = json.loads(Path(args.before).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return report


def summarise(rows: dict) -> dict:
    """Pooled held-out figures: plain and textured, each query kind (the mean of the families' ratios, with
    the standard error of that mean from the families' own), and the weakest family."""
    out = {}
    for textured in (False, True):
        chosen = [r for r in rows.values() if r["group"] == "held out" and r["textured"] == textured]
        for kind in KINDS:
            xs = np.array([r[kind]["x_native"] for r in chosen])
            ses = np.array([r[kind]["se_x"] for r in chosen])
            if len(xs):
                out[f"{'textured' if textured else 'plain'}, {kind}"] = {
                    "x_native": float(xs.mean()), "se_x": float(np.sqrt((ses ** 2).sum()) / len(xs)),
                    "families": len(xs)}
    held = {name: r["automatic crop"]["x_native"] for name, r in rows.items() if r["group"] == "held out"}
    if held:
        weakest = min(held, key=held.get)
        out["weakest held-out family, automatic crop"] = {"family": weakest, "x_native": held[weakest]}
    notice = [r["automatic crop"] for r in rows.values() if r["group"] == "held out"]
    out["notice, held out, automatic crop"] = {
        "right_without_notice": float(np.mean([n["right_without_notice"] for n in notice if n["right_without_notice"] is not None])),
        "wrong_with_notice": float(np.mean([n["wrong_with_notice"] for n in notice if n["wrong_with_notice"] is not None]))}
    return out


def markdown(report: dict) -> str:
    lines = ["# Shoppers' photos, leave-families-out", "",
             f"`{report['command']}`: {report['items_per_family']} items per family (Fashion-MNIST training items no "
             f"composite was made of), queried against `{report['catalog']}` with `{report['model']}` as the product "
             "searches (both facings; the weak-match notice from the model's confidence model). Ratios are to the same "
             "items as native 28-px images (± one standard error). Settings were chosen on the tuning families only.", "",
             "## Held out: the headline", "", "| held-out families | × native | ± se | families |", "|---|---|---|---|"]
    for name, row in report["summary"].items():
        if "se_x" in row:
            lines.append(f"| {name} | {row['x_native']:.3f} | {row['se_x']:.3f} | {row['families']} |")
    weakest = report["summary"].get("weakest held-out family, automatic crop")
    if weakest:
        lines += ["", f"Weakest held-out family with the automatic crop: {weakest['family']} ({weakest['x_native']:.3f}x)."]
    notice = report["summary"]["notice, held out, automatic crop"]
    lines += ["", f"Weak-match notice on held-out families (automatic crop): right answers without it "
              f"{notice['right_without_notice']:.3f}, wrong answers with it {notice['wrong_with_notice']:.3f}; "
              f"out-of-catalog photos with it {report['out_of_catalog']['with_notice']:.3f} "
              f"({report['out_of_catalog']['photos']} photos).", "",
              "## Every family", "",
              "| family | group | textured | native R@1 | automatic crop | true box | loose box | right w/o notice | wrong with notice |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["families"].items():
        cells = " | ".join(f"{row[k]['x_native']:.3f} ± {row[k]['se_x']:.3f}" for k in KINDS)
        auto = row["automatic crop"]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {name} | {row['group']} | {'yes' if row['textured'] else 'no'} | {row['native_R@1']:.3f} | "
                     f"{cells} | {fmt(auto['right_without_notice'])} | {fmt(auto['wrong_with_notice'])} |")
    before = report.get("before")
    if before:
        lines += ["", "## Before and after", "", f"Before: `{before['command']}` (model `{before['model']}`, "
                  f"catalog `{before['catalog']}`, mask model {before.get('mask_model') or 'none: the hand rules'}), "
                  "the same families, items and seed.", "",
                  "| family | group | automatic crop before → after | true box before → after | loose box before → after |",
                  "|---|---|---|---|---|"]
        for name, row in report["families"].items():
            old = before["families"].get(name)
            if old:
                lines.append(f"| {name} | {row['group']} | " + " | ".join(
                    f"{old[k]['x_native']:.3f} → {row[k]['x_native']:.3f}" for k in KINDS) + " |")
        for name, row in report["summary"].items():
            old = before["summary"].get(name, {})
            if "se_x" in row and "se_x" in old:
                lines.append(f"| held out: {name} | | {old['x_native']:.3f} → {row['x_native']:.3f} | | |")
        old_notice = before["summary"]["notice, held out, automatic crop"]
        lines += ["", f"Notice before: right answers without it {old_notice['right_without_notice']:.3f}, wrong answers "
                  f"with it {old_notice['wrong_with_notice']:.3f}, out-of-catalog photos with it "
                  f"{before['out_of_catalog']['with_notice']:.3f}."]
        if before.get("catalog_leave_one_out"):
            lines.append(f"The catalog's own leave-one-out R@1 before: {before['catalog_leave_one_out']['R@1_with']:.4f}.")
    lat = report["added_latency_1000px"]
    lines += ["", f"Added latency of the check, the learned mask and the normalisation (one core, {lat['photos']} held-out "
              f"photos of 900 px or more): p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms."]
    loo = report["catalog_leave_one_out"]
    if loo:
        lines.append(f"The catalog's own leave-one-out fine R@1: {loo['R@1_with']:.4f} ({loo['items']:,} items).")
    lines += ["", "Settings: `" + json.dumps(report["settings"]) + "`", ""]
    return "\n".join(lines)


def tune(args) -> None:
    """Candidate settings (--grid, DomainSettings as JSON) measured on the tuning families only."""
    check_tuning_families(args.families)
    torch.set_num_threads(1)
    service = SearchService(args.catalog, args.model)
    embedder, catalog = service.embedder, service.catalog
    images, labels = load_fashion_mnist_arrays("train")
    pool = report_items(len(images))
    rng = np.random.default_rng(args.seed + 1000)  # other items than the report's draw
    results = []
    sets = {}
    for family in args.families:
        picks = np.sort(rng.choice(pool, args.items, replace=False))
        sets[family] = (photos_of(family, images[picks], args.seed + 1000),
                        np.array([FINE_NAMES[i] for i in labels[picks]]))
    for grid in args.grid:
        settings = replace(DomainSettings(), **json.loads(grid))
        row = {"settings": json.loads(grid)}
        for family, (photos, truth) in sets.items():
            for kind in args.kinds:
                boxes = [None if kind == "automatic crop" else p.box if kind == "true box" else loose_box(p.box, *p.image.size)
                         for p in photos]
                vectors = embed_with(embedder, [p.image for p in photos], settings,
                                     None if kind == "automatic crop" else boxes)
                top = [rank_results(catalog, v[None], 1).frame["product_id"].iloc[0] for v in vectors]
                row[f"{family}, {kind}"] = float(np.mean(np.array(top) == truth))
        row["mean"] = float(np.mean([v for k, v in row.items() if k not in ("settings",)]))
        print(json.dumps(row), flush=True)
        results.append(row)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "tuning.json").write_text(json.dumps({"families": args.families, "items": args.items,
                                                           "results": results}, indent=2) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shopper_families", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/coinsp-fmnist.pt")
    parser.add_argument("--catalog", default="catalogs/fashion-mnist-test")
    parser.add_argument("--items", type=int, default=150, help="items per family")
    parser.add_argument("--unlike", type=int, default=200, help="out-of-catalog photos")
    parser.add_argument("--latency-photos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--out", default="reports/shopper-families")
    parser.add_argument("--before", help="a report.json of the same benchmark with the product before, shown beside")
    parser.add_argument("--rewrite", action="store_true", help="write OUT/report.md again from OUT/report.json (and --before)")
    parser.add_argument("--skip-catalog", action="store_true", help="skip the catalog's leave-one-out re-embedding")
    parser.add_argument("--tune", action="store_true", help="measure --grid settings on tuning families")
    parser.add_argument("--families", nargs="+", default=list(TUNING_FAMILIES), help="with --tune: tuning families only")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS[:2]), choices=KINDS,
                        help="with --tune: how the photos are searched")
    parser.add_argument("--grid", action="append", default=[], help="DomainSettings fields as JSON (with --tune)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.tune:
        args.grid = args.grid or ["{}"]
        tune(args)
    elif args.rewrite:  # the report of an earlier run written again, with --before beside it
        report = json.loads((Path(args.out) / "report.json").read_text())
        report["before"] = json.loads(Path(args.before).read_text()) if args.before else report.get("before")
        (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(args.out) / "report.md").write_text(markdown(report))
    else:
        run(args)


if __name__ == "__main__":
    main()
