"""Catalog hygiene with planted faults: does it find them, and how fast?

    python -m benchmarks.hygiene              # the default catalog's photos (Fashion-MNIST test, 10,000)
    python -m benchmarks.hygiene --calibrate  # 10,000 *training* photos: where the default settings come from

Into a copy of the catalog's manifest it plants 50 copies of items under a wrong category (the
file copied byte for byte, the category another store category) and 50 store copies of each kind
of benchmarks/store_copies.py (re-encoded, resized, shifted, re-lit, cropped, mirrored, watermarked,
bordered), each of its own source item, builds a catalog from that manifest with the product's
build, and runs the hygiene reports on it (OMP_NUM_THREADS threads, default 2):

- mis-categorised: how many planted wrong-category items the report's top 100 holds;
- duplicates: per kind, the share of planted copies grouped with the item they copy; and the
  duplicate groups holding no planted row (distinct items grouped: false groups);
- the time of the reports at 10^4 items, and at 10^5: the catalog's vectors tiled ten times, each
  copy jittered with Gaussian noise and re-normalised (about 0.83 cosine between copies of one
  item), metadata repeated (every row's photo decoded); only for the timing.

With --calibrate the same is done on the first 10,000 training photos (other items, and copies
drawn from them) for a grid of duplicate thresholds (vectors alone), and of candidate cosines and
pixel correlations (the pixel check: each candidate pair checked once for the whole grid); the
defaults in index/quality/hygiene.py are chosen there, never on the test photos.
Reports: reports/hygiene/ (hygiene.md, hygiene.json; calibration.md, calibration.json; the planted
catalog's hygiene CSVs).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # the timings are for two cores: set before numpy loads BLAS

import faiss
import numpy as np
import pandas as pd
from PIL import Image

from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog
from benchmarks.store_copies import KINDS, copy_of
import index.quality.near_duplicates as near_duplicates
from index.quality.hygiene import hygiene_report, report_from_vectors
from index.quality.hygiene_report import duplicate_rule, frame_markdown
from index.quality.near_duplicates import CANDIDATE_NEIGHBOURS
from index.quality.neighbours import DEFAULT_NEIGHBOURS, neighbours_of
from index.quality.photo_prints import PhotoPrints
from benchmarks.reporting import write_report
from index.catalog.store import IMAGE_PATH_COLUMN
from index.importers import FASHION_MNIST_DIR, import_fashion_mnist
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, read_manifest

PLANTED = 50
TOP = 100  # the mis-categorised report's head a merchandiser reads
SCALED_ITEMS = 100_000
JITTER = 0.45  # noise norm per copy relative to the unit vector: cosine between two copies ~ 1 / (1 + 0.45^2)
CALIBRATION_THRESHOLDS = (0.96, 0.97, 0.98)
CALIBRATION_CANDIDATES = (0.80, 0.85)
CALIBRATION_PIXELS = (0.988, 0.990, 0.991, 0.992, 0.993, 0.994, 0.995, 0.996)
RECALL_GOALS = {"re-encoded": 0.95, "resized": 0.95, "shifted": 0.95, "re-lit": 0.95, "mirrored": 0.95,
                "cropped": 0.8, "bordered": 0.8, "watermarked": 0.8}
EARLIER_FALSE_GROUPS = 58  # the rule before store copies, on the same test photos: see write_reports
# The previous rule (unaligned-scale 32-px thumbnails, 3 descriptor neighbours, correlation >= 0.997;
# index/quality/duplicates.py at commit a21ee1c) on the same planted test catalog and model 341a32a2a4787e12:
PREVIOUS_FALSE_GROUPS = 51
PREVIOUS_RECALL = {"re-encoded": 0.96, "resized": 0.92, "shifted": 0.36, "re-lit": 1.00, "cropped": 0.14,
                   "mirrored": 0.96, "watermarked": 0.86, "bordered": 0.22}


def plant_faults(manifest: Path, out: Path, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """A copy of the manifest's images and rows in `out`, plus the planted rows; returns the new
    manifest and the truth table (path, fault, source_path, ...). Faults: PLANTED copies of items
    under a wrong category (the file copied byte for byte, another store category) and PLANTED
    store copies of each kind (benchmarks.store_copies), every planted row from its own source item."""
    table = read_manifest(manifest)
    rng = np.random.default_rng(seed)
    faults = ["wrong_category"] + [f"copy:{kind}" for kind in KINDS]
    chosen = rng.choice(len(table), PLANTED * len(faults), replace=False)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(manifest.parent / "images", out / "images")
    (out / "planted").mkdir()
    categories = sorted(table[CATEGORY_COLUMN].unique())
    rows, truth = [], []
    for n, row in enumerate(chosen):
        source, fault = table.iloc[row], faults[n // PLANTED]
        copy = source.copy()
        if fault == "wrong_category":  # the same file listed again under another category
            name = f"planted/wrong-{n:03d}{Path(source[PATH_COLUMN]).suffix}"
            shutil.copyfile(manifest.parent / source[PATH_COLUMN], out / name)
            copy[CATEGORY_COLUMN] = rng.choice([c for c in categories if c != source[CATEGORY_COLUMN]])
        else:
            kind = fault.split(":", 1)[1]
            name = f"planted/{kind}-{n:03d}.jpg"
            copy_of(Image.open(manifest.parent / source[PATH_COLUMN]), kind, rng).save(out / name, quality=95)
        copy[PATH_COLUMN] = name
        rows.append(copy)
        truth.append({"path": name, "fault": fault, "source_path": source[PATH_COLUMN],
                      "true_category": source[CATEGORY_COLUMN], "planted_category": copy[CATEGORY_COLUMN]})
    planted_manifest = out / "manifest.csv"
    pd.concat([table, pd.DataFrame(rows)], ignore_index=True).to_csv(planted_manifest, index=False)
    truth = pd.DataFrame(truth)
    truth.to_csv(out / "planted.csv", index=False)  # kept apart from the manifest: the reports never see it
    return planted_manifest, truth


def score(report, metadata: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """How many planted faults each report holds, and the duplicate groups among distinct items."""
    id_of = dict(zip(metadata[PATH_COLUMN], metadata["id"]))
    wrong = truth[truth["fault"] == "wrong_category"]
    wrong_ids = {id_of[p] for p in wrong["path"]}
    top = report.miscategorised.head(TOP)
    hits = top[top["id"].isin(wrong_ids)]
    suggested_right = int((hits["suggested_category"].to_numpy() ==
                           wrong.set_index(wrong["path"].map(id_of)).loc[hits["id"], "true_category"].to_numpy()).sum())
    group_of = dict(zip(report.duplicates["id"], report.duplicates["group"]))
    recall = {}
    for kind in KINDS:
        copies = truth[truth["fault"] == f"copy:{kind}"]
        recall[kind] = sum(1 for p, s in zip(copies["path"], copies["source_path"])
                           if id_of[p] in group_of and group_of[id_of[p]] == group_of.get(id_of[s])) / len(copies)
    planted_ids = {id_of[p] for p in truth["path"]}
    groups = report.duplicates.groupby("group")["id"].apply(lambda ids: bool(set(ids) & planted_ids))
    false_groups = groups.index[~groups.to_numpy()]
    return {"miscategorised_top100_planted": len(hits), "miscategorised_suggestion_right": suggested_right,
            "miscategorised_flagged": len(report.miscategorised), "recall": recall,
            "duplicate_groups": int(report.duplicates["group"].nunique()), "false_groups": int(len(false_groups)),
            "items_in_false_groups": int(report.duplicates["group"].isin(false_groups).sum())}


def planted_catalog(split: str, data: Path, catalogs: Path, model: Path, limit: int | None) -> tuple[Path, pd.DataFrame]:
    root = data / ("fashion-mnist-hygiene" if limit else "fashion-mnist")  # the calibration photos apart
    manifest = root / split / "manifest_store.csv"
    if not manifest.is_file():
        manifest = import_fashion_mnist(root, split, FASHION_MNIST_DIR, limit=limit)
    planted_manifest, truth = plant_faults(manifest, data / f"hygiene-planted-{split}")
    out = catalogs / f"hygiene-planted-{split}"
    started = time.perf_counter()
    print(build_catalog(planted_manifest, model, out, overwrite=True, progress=False).summary())
    print(f"built {out} in {time.perf_counter() - started:.1f} s")
    return out, truth


def scaled_vectors(vectors: np.ndarray, metadata: pd.DataFrame, items: int, seed: int = 0):
    """Tile the vectors to `items` rows, each copy jittered and re-normalised (for the timing only)."""
    rng = np.random.default_rng(seed)
    n, d = vectors.shape
    reps = -(-items // n)
    out = np.empty((reps * n, d), np.float32)
    for r in range(reps):
        block = vectors + rng.standard_normal((n, d), dtype=np.float32) * (JITTER / np.sqrt(d)) if r else vectors
        out[r * n:(r + 1) * n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    meta = pd.concat([metadata] * reps, ignore_index=True)
    meta["id"] = np.arange(len(meta))
    return out[:items], meta.iloc[:items]


def flat(row: dict) -> dict:
    """A grid row with its per-kind recall spread into columns."""
    out = {k: v for k, v in row.items() if k != "recall"}
    out.update({f"recall {kind}": value for kind, value in row.get("recall", {}).items()})
    return out


def remembered(match_scores):
    """match_scores that checks each pair of prints once (the grid's settings share the pairs)."""
    known: dict[tuple[int, int], float] = {}

    def scores(first, second):
        todo = [i for i, (a, b) in enumerate(zip(first, second)) if (id(a), id(b)) not in known]
        if todo:
            for i, value in zip(todo, match_scores([first[i] for i in todo], [second[i] for i in todo])):
                known[id(first[i]), id(second[i])] = float(value)
        return np.array([known[id(a), id(b)] for a, b in zip(first, second)], np.float32)
    return scores


def choose(grid: list[dict]) -> dict:
    """The rule: the most kinds of copy at 0.95 or above (the stricter goal for every kind: with 50
    copies of a kind a figure moves by a few hundredths between photo sets, so the kinds whose goal
    is 0.8 keep a margin), then the fewest duplicate groups among distinct items, then the highest
    mean recall, then the fewest pairs checked."""
    def met(row):
        return sum(row["recall"][kind] >= max(RECALL_GOALS.values()) for kind in KINDS)
    return min(grid, key=lambda r: (-met(r), r["false_groups"], -float(np.mean(list(r["recall"].values()))),
                                    r.get("pixel_pairs", 0)))


def run(args) -> dict:
    faiss.omp_set_num_threads(args.threads)
    split, limit = ("train", 10_000) if args.calibrate else ("test", None)
    folder, truth = planted_catalog(split, args.data, args.catalogs, args.model, limit)
    catalog = Catalog.load(folder)
    vectors = np.asarray(catalog.embeddings, np.float32)
    results = {"catalog": str(folder), "split": split, "items": len(catalog), "planted": PLANTED,
               "model_fingerprint": catalog.fingerprint, "threads": args.threads}
    if args.calibrate:  # one neighbour pass, one decoding of the photos, one check of each pair for the grid
        started = time.perf_counter()
        neighbours = neighbours_of(vectors, max(DEFAULT_NEIGHBOURS, CANDIDATE_NEIGHBOURS))
        results["neighbours_seconds"] = round(time.perf_counter() - started, 2)
        grid = []
        for threshold in CALIBRATION_THRESHOLDS:
            report = report_from_vectors(vectors, catalog.metadata, duplicate_threshold=threshold,
                                         pixel_threshold=None, neighbours=neighbours)
            grid.append({"duplicate_threshold": threshold, **score(report, catalog.metadata, truth)})
            print(flat(grid[-1]))
        results["grid"] = grid
        prints = PhotoPrints(catalog.metadata[IMAGE_PATH_COLUMN].to_numpy())
        near_duplicates.match_scores = remembered(near_duplicates.match_scores)
        pixel_grid = []
        for candidate in CALIBRATION_CANDIDATES:
            for pixel in CALIBRATION_PIXELS:
                report = report_from_vectors(vectors, catalog.metadata, neighbours=neighbours, prints=prints,
                                             candidate_threshold=candidate, pixel_threshold=pixel)
                f = report.facts
                pixel_grid.append({"candidate_threshold": candidate, "pixel_threshold": pixel,
                                   **score(report, catalog.metadata, truth), "pixel_pairs": f["pixel_pairs"],
                                   "duplicates_seconds": f["seconds"]["duplicates"]})
                print(flat(pixel_grid[-1]))
        results["pixel_grid"] = pixel_grid
        best = choose(pixel_grid)
        results["pixel_choice"] = {"candidate_threshold": best["candidate_threshold"],
                                   "pixel_threshold": best["pixel_threshold"]}
        return results
    started = time.perf_counter()
    report = hygiene_report(catalog)
    results["seconds_10k"] = round(time.perf_counter() - started, 2)
    results["load"] = round(os.getloadavg()[0], 1)
    results["steps_10k"] = report.facts["seconds"]
    results.update(score(report, catalog.metadata, truth))
    results["duplicate_rule"] = duplicate_rule(report.facts)
    results["pixel_pairs"] = report.facts.get("pixel_pairs")
    results["photos_decoded"] = report.facts.get("photos_decoded")
    report.write(args.out / "planted-test")
    truth.to_csv(args.out / "planted-test-truth.csv", index=False)
    if not args.skip_scaled:
        big, meta = scaled_vectors(vectors, catalog.metadata, SCALED_ITEMS)
        started = time.perf_counter()
        scaled = report_from_vectors(big, meta)
        results["seconds_100k"] = round(time.perf_counter() - started, 2)
        results["load_100k"] = round(os.getloadavg()[0], 1)
        results["steps_100k"] = scaled.facts["seconds"]
        results["neighbour_search_100k"] = scaled.facts["neighbour_search"]
        results["peak_rss_mb"] = _peak_rss_mb()
    return results


def _peak_rss_mb() -> float:
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_reports(results: dict, out: Path, calibrate: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = "calibration" if calibrate else "hygiene"
    command = "python -m benchmarks.hygiene" + (" --calibrate" if calibrate else "") + (
        " --skip-scaled" if not calibrate and "seconds_100k" not in results else "")
    lines = [f"# Catalog hygiene with planted faults{' (calibration, training photos)' if calibrate else ''}", "",
             f"`{command}` — {results['items']:,} items of `{results['catalog']}` (Fashion-MNIST {results['split']}, "
             f"store categories) with {PLANTED} wrong-category copies and {PLANTED} store copies of each kind "
             f"({', '.join(KINDS)}; benchmarks/store_copies.py) planted, {results['threads']} threads, model "
             f"`{results['model_fingerprint']}`.", ""]
    if calibrate:
        lines += ["Vectors alone (the fallback for unreadable photos), k = 10:", "",
                  frame_markdown(pd.DataFrame([flat(r) for r in results["grid"]])), "",
                  "The pixel check: pairs proposed by cosine >= `candidate_threshold` among the "
                  f"{CANDIDATE_NEIGHBOURS} nearest vectors or by the photos' descriptors, confirmed when the aligned "
                  "photos' gradient fields correlate at >= `pixel_threshold`. Rule: the most kinds of copy at "
                  "0.95 or above (the goal is 0.95, or 0.8 for cropped, bordered and watermarked copies: these keep "
                  "a margin), then the fewest duplicate groups among distinct items (`false_groups`), then the "
                  f"highest mean recall, then the fewest pairs checked; it picks {results['pixel_choice']}. "
                  f"Neighbours computed once ({results['neighbours_seconds']} s); the first row's "
                  "`duplicates_seconds` includes decoding every photo and checking every pair (later rows reuse "
                  "the checks).", "", frame_markdown(pd.DataFrame([flat(r) for r in results["pixel_grid"]])), ""]
    else:
        recall = results["recall"]
        lines += [
            "| figure | measured | before | goal |", "|---|---|---|---|",
            *[f"| {kind} copies grouped with the item they copy | {recall[kind]:.2f} ({round(recall[kind] * PLANTED)} "
              f"of {PLANTED}) | {PREVIOUS_RECALL[kind]:.2f} | >= {RECALL_GOALS[kind]:.2f} |" for kind in KINDS],
            f"| duplicate groups among distinct items (no planted row in them) | {results['false_groups']} "
            f"({results['items_in_false_groups']} items) | {PREVIOUS_FALSE_GROUPS} | <= {PREVIOUS_FALSE_GROUPS} |",
            f"| planted wrong-category items in the mis-categorised top {TOP} | {results['miscategorised_top100_planted']} "
            f"of {PLANTED} (neighbours suggest the true category for {results['miscategorised_suggestion_right']}) "
            "| 50 | >= 48 |",
            f"| time of all three reports at 10^4 items (2 cores shared with other work, load "
            f"{results.get('load', '?')}) | {results['seconds_10k']:.1f} s | | |",
            *([f"| time at 10^5 items (vectors tiled 10x with jitter, every row's photo decoded; load "
               f"{results.get('load_100k', '?')}) | {results['seconds_100k']:.1f} s (peak memory "
               f"{results['peak_rss_mb']:,.0f} MB) | | <= 120 s |"]
              if "seconds_100k" in results else []),
            "", f"Settings: k = {DEFAULT_NEIGHBOURS}; duplicates: {results['duplicate_rule']} (the candidates and the "
            "pixel threshold chosen on training photos with store copies: `calibration.md`); "
            f"{results['pixel_pairs']:,} candidate pairs checked, {results['photos_decoded']:,} photos decoded. "
            "`before`: the previous rule (index/quality/duplicates.py at commit a21ee1c: 32-px thumbnails of the "
            "whole frame and of the trimmed product slid over each other, 3 descriptor neighbours, correlation "
            ">= 0.997) run on the same planted catalog with the same model. Load: the machine's 1-minute load "
            "average when the step ended (2 cores; other work ran beside it).",
            f"`{EARLIER_FALSE_GROUPS}` is the rule before store copies (vector candidates confirmed by unaligned 32-px "
            "thumbnails at >= 0.995, which grouped 0 of 50 JPEG-55, shifted, brightened copies): the groups of its "
            "committed `planted-test-duplicates.csv` (commit a0a2884) holding no planted row.",
            f"Beyond the planted faults: {results['miscategorised_flagged']:,} items flagged as mis-categorised in all, "
            f"{results['duplicate_groups']:,} duplicate groups in all.", "",
            f"Steps at 10^4 (s): {results['steps_10k']}" + (f"; at 10^5 ({results['neighbour_search_100k']}): "
                                                             f"{results['steps_100k']}" if 'steps_100k' in results
                                                             else ""), "",
            "The planted catalog's own reports: `planted-test.md` and its CSVs; the planted rows: "
            "`planted-test-truth.csv`."]
    text = "\n".join(lines)
    write_report(out, name, results, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hygiene", description=__doc__.split("\n")[0])
    parser.add_argument("--calibrate", action="store_true", help="the grid of settings on 10,000 training photos")
    parser.add_argument("--model", type=Path, default=Path("models/coinsp-fmnist.pt"))
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--catalogs", type=Path, default=Path("catalogs"))
    parser.add_argument("--out", type=Path, default=Path("reports/hygiene"))
    parser.add_argument("--skip-scaled", action="store_true", help="no timing at 10^5 items")
    args = parser.parse_args(argv)
    args.threads = int(os.environ["OMP_NUM_THREADS"])
    args.out.mkdir(parents=True, exist_ok=True)
    write_reports(run(args), args.out, args.calibrate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
