"""Vectors no larger than they need to be: the catalog's vectors projected by plain PCA (centred,
no whitening) to fewer dimensions, against catalog R@1, the shopper-photo ratios, the near-duplicate
thresholds, the time of a 10^4 Flat scan and a 1,000-px photo search end to end.

    python -m benchmarks.vector_size [--catalog DIR] [--model CKPT] [--dims 128,256,512]
                                     [--recall-dims 64,96,128,192,256,384,512,768,1024]
                                     [--photos 200] [--scan-queries 500] [--shopper-items 500]
                                     [--quality-items 200] [--duplicate-items 500] [--out reports/vector-size]

PCA: index.catalog.projection (what `python -m index build --project-dims N` stores with a catalog):
the mean and the top principal directions of the catalog's own stored vectors (fitted on all of
them, no labels; a second fit on a random half only, the other half never seen, says how much
fitting on the evaluated vectors flatters R@1). A vector is projected as (v - mean) @ P and
L2-normalised again, so search stays cosine; no whitening (it costs shoppers' photos:
reports/rerank/whitening-tradeoff.md). Nothing shipped changes: the model and the catalog folder are
read only; the projected catalogs live in this process.

Measured, per dimension (2048 = the vectors as shipped):
- catalog R@1: leave-one-out over every item, labels product_id (index.quality.evaluation.recall_at_k,
  the product's one Recall@k; what `python -m index evaluate` reports);
- a 10^4 Flat scan: one query at a time over the catalog's 10^4 projected vectors (faiss.IndexFlatIP,
  one OpenMP thread), p50 of `--scan-queries` searches for the 10 nearest (projected catalog items as
  queries);
for the dimensions timed end to end (`--dims`):
- the shopper-photo ratios: the first renderer's photos (benchmarks.shopper_photos' report sample,
  its first `--shopper-items` items: plain light backdrop, cluttered with the automatic crop, cluttered
  with the product's box), embedded once facing either way, projected, searched as a search ranks
  them (index.search.grouping.rank_results); fine R@1 over the same items' native 28-px R@1, and the
  change against 2048-d with a 95% paired bootstrap interval;
- the Quality page's shopper Recall@1 (training.shopper_recall, `--quality-items` items, seed
  `--quality-seed`), its photos sent through the projection;
- the near-duplicate thresholds: `--duplicate-items` catalog items, a store copy of each kind
  (benchmarks.store_copies) and the item's own photo again, embedded as a build embeds them; the share
  of copies and of the catalog's nearest-other-item pairs at each threshold the product uses (hygiene's
  0.85 candidates and 0.97 vectors-alone links, hiding at 0.95 / 0.98, the photo's own copy at 0.995),
  and the projected threshold that links as many copies as each 2048-d one;
- a 1,000-px photo search end to end on one thread (torch, FAISS, BLAS, OpenCV): `--photos` shopper photos of
  900-1,000 px (benchmarks.shopper_render, items of the Fashion-MNIST training set, half on light
  backdrops, half cluttered), JPEG bytes in, SearchService.search(bytes, k=10) out: decode, the
  checks, normalisation, both facings through the model, the projection, the search with exact
  re-scoring, the category guess and the query confidence. Every photo is searched in every
  configuration one after another (the order rotated photo by photo), so a busy machine slows them
  alike; 10 photos of warm-up each. Wall-clock and CPU time (time.process_time) are both kept:
  on a shared machine the CPU time is what a search costs, without the waits for a core.

Writes OUT/report.md and OUT/report.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

# One thread for BLAS too (numpy's matrix products: the projection, the re-scoring), set before numpy
# loads it: a BLAS thread pool spinning beside the search costs more than the product it splits.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.reporting import write_report  # noqa: E402
from benchmarks.shopper_render import render  # noqa: E402
from embedder.files import markdown_table  # noqa: E402
from index.catalog.choose import choose_index  # noqa: E402
from index.catalog.loaded import Catalog  # noqa: E402
from index.catalog.projection import fit_pca, project  # noqa: E402
from index.catalog.tune import build_index  # noqa: E402
from index.importers import load_fashion_mnist_arrays  # noqa: E402
from index.quality.evaluation import recall_at_k  # noqa: E402
from index.search.service import SearchService  # noqa: E402

CATALOG, MODEL = Path("catalogs/fashion-mnist-test"), Path("models/coinsp-fmnist.pt")
LABEL = "product_id"
KEEP_POINTS = 0.3  # catalog R@1 may fall by at most this many points


# ----------------------------------------------------------------------------- the projection

class ProjectedEmbedder:
    """The catalog's embedder whose search vectors are projected (the category head still reads the
    raw features); everything else is the embedder's own."""

    def __init__(self, embedder, mean: np.ndarray, basis: np.ndarray):
        self._embedder, self._mean, self._basis = embedder, mean, basis

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def vectors(self, features: torch.Tensor) -> np.ndarray:
        return project(self._embedder.vectors(features), self._mean, self._basis)

    def embed_uint8(self, batch: torch.Tensor) -> np.ndarray:
        return self.vectors(self._embedder.features_uint8(batch))


def projected_catalog(base: Catalog, vectors: np.ndarray) -> Catalog:
    """An in-memory catalog of the same items and metadata holding `vectors`, indexed by the rule
    of index.catalog.choose (Flat at 10^4 items)."""
    n, d = vectors.shape
    info = base.info.replace(feature_dim=d, index={})
    choice = choose_index(n, d, info.memory_budget_bytes)
    index, record = build_index(choice, vectors, base.metadata, info)
    return Catalog(None, info.replace(index=record), vectors, base.metadata, index)


# ----------------------------------------------------------------------------- measurements

def catalog_r1(vectors: np.ndarray, labels: np.ndarray) -> float:
    return float(recall_at_k(vectors, labels, ks=(1,)).overall[1])


def scan_p50_ms(vectors: np.ndarray, queries: int, seed: int) -> tuple[float, float]:
    """(wall, CPU) p50 in ms of one query's Flat scan for its 10 nearest, on one thread (CPU: the
    process's time, time.process_time)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    picks = np.random.default_rng(seed).choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    for row in picks[:20]:  # warm-up
        index.search(vectors[row:row + 1], 10)
    took, cpu = [], []
    for row in picks:
        started, started_cpu = time.perf_counter(), time.process_time()
        index.search(vectors[row:row + 1], 10)
        took.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return 1000 * float(np.median(took)), 1000 * float(np.median(cpu))


def shopper_jpegs(count: int, seed: int) -> list[bytes]:
    """`count` shopper photos whose long side is 900-1,000 px, JPEG bytes (quality 90)."""
    images, _ = load_fashion_mnist_arrays("train")
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        item = images[int(rng.integers(len(images)))]
        photo = render(item, rng, cluttered=len(out) % 2 == 1)
        if max(photo.image.size) < 900:
            continue
        buffer = io.BytesIO()
        photo.image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def end_to_end(services: dict[str, SearchService], photos: list[bytes], warmup: int = 10) -> dict[str, dict]:
    names = list(services)
    for data in photos[:warmup]:
        for name in names:
            services[name].search(data, k=10)
    total = {name: [] for name in names}
    cpu = {name: [] for name in names}
    search = {name: [] for name in names}
    for n, data in enumerate(photos):
        for name in names[n % len(names):] + names[:n % len(names)]:
            started, started_cpu = time.perf_counter(), time.process_time()
            results = services[name].search(data, k=10)
            total[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
            search[name].append(results.timing.search_s)
    return {name: {"p50_ms": 1000 * float(np.median(total[name])),
                   "p95_ms": 1000 * float(np.percentile(total[name], 95)),
                   "cpu_p50_ms": 1000 * float(np.median(cpu[name])),
                   "search_p50_ms": 1000 * float(np.median(search[name]))} for name in names}


# ----------------------------------------------------------------------------- shopper photos

SHOPPER_ROWS = ("native 28 px", "plain light backdrop", "cluttered, automatic crop", "cluttered, product's box")
DUPLICATE_THRESHOLDS = (0.85, 0.95, 0.97, 0.98, 0.995)  # hygiene's candidate cosine, the API's example
# hiding, hygiene's vectors-alone link, the Search page's hiding default, the photo's own copy


def shopper_views(embedder, items: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The first renderer's shopper photos (benchmarks.shopper_photos, its report sample: the first
    `items` of its 1,000 items, rendered alike) embedded once as a search embeds them, facing either
    way, with the 2048-d model: ({row: (facing, mirrored)}, product type per item)."""
    from PIL import Image

    from benchmarks.shopper_photos import FINE_NAMES, REPORT_SEED, embed_both_facings, render_set, sample_items

    train_images, train_labels = load_fashion_mnist_arrays("train")
    picks = sample_items(1000, REPORT_SEED)[:items]
    sample = train_images[picks]
    fine = np.array([FINE_NAMES[i] for i in train_labels[picks]])
    plain = render_set(sample, REPORT_SEED, cluttered=False)
    clutter = render_set(sample, REPORT_SEED, cluttered=True)
    views = {"native 28 px": embed_both_facings(embedder, [Image.fromarray(i).convert("RGB") for i in sample]),
             "plain light backdrop": embed_both_facings(embedder, [p.image for p in plain]),
             "cluttered, automatic crop": embed_both_facings(embedder, [p.image for p in clutter]),
             "cluttered, product's box": embed_both_facings(embedder, [p.image for p in clutter],
                                                            [p.box for p in clutter])}
    return views, fine


def shopper_hits(catalog: Catalog, views: tuple[np.ndarray, np.ndarray], fine: np.ndarray) -> np.ndarray:
    """Per photo, whether its first result (index.search.grouping.rank_results, each item scored by
    the better facing, as a search does) shows its product."""
    from index.search.grouping import rank_results

    products = catalog.metadata[LABEL].astype(str).to_numpy()
    hits = np.zeros(len(fine), bool)
    for i, pair in enumerate(zip(*views)):
        found = rank_results(catalog, np.stack(pair), 1).frame
        hits[i] = len(found) > 0 and products[catalog.rows_of(found["id"].to_numpy()[:1])[0]] == fine[i]
    return hits


def shopper_ratios(hits: dict[str, np.ndarray]) -> dict[str, dict]:
    """fine R@1 and x native of each row (SHOPPER_ROWS) from per-photo hits."""
    native = float(hits["native 28 px"].mean())
    return {row: {"r1": float(h.mean()), "x_native": float(h.mean()) / native if native else float("nan")}
            for row, h in hits.items()}


def ratio_difference(base: dict[str, np.ndarray], other: dict[str, np.ndarray], samples: int = 2000,
                     seed: int = 0) -> dict[str, list[float]]:
    """Per shopper row, the 95% paired bootstrap interval (over items: the same resample for the shopper
    row and the native row, both projections) of other's x native minus base's, in points."""
    rng = np.random.default_rng(seed)
    n = len(base["native 28 px"])
    draws = rng.integers(0, n, (samples, n))

    def ratio(hits, row):
        native = hits["native 28 px"][draws].mean(axis=1)
        return hits[row][draws].mean(axis=1) / np.where(native > 0, native, np.nan)

    out = {}
    for row in SHOPPER_ROWS[1:]:
        delta = 100 * (ratio(other, row) - ratio(base, row))
        out[row] = [float(np.nanpercentile(delta, 2.5)), float(np.nanpercentile(delta, 97.5))]
    return out


def quality_shopper_recall(catalog: Catalog, embedder, items: int, seed: int) -> dict[str, float]:
    """The Quality page's shopper Recall@1 (training.shopper_recall: the catalog's own items made into
    shopper photos on plain and textured backdrops, searched with the item held out)."""
    from training.shopper_recall import shopper_recall

    table = shopper_recall(catalog, embedder, items=items, seed=seed).table
    return {name: float(row["R@1"]) for name, row in table.iterrows()}


# ----------------------------------------------------------------------------- near-duplicates

def duplicate_vectors(embedder, catalog: Catalog, items: int, seed: int) -> dict:
    """Store copies (benchmarks.store_copies: every kind, one copy per sampled item) and the item's own
    photo again, embedded as a catalog build embeds them, with the sampled items' rows."""
    from benchmarks.store_copies import KINDS, copy_of
    from embedder.images import decode_image

    rows = np.sort(np.random.default_rng(seed).choice(len(catalog.ids), size=min(items, len(catalog.ids)),
                                                       replace=False))
    images = [decode_image(p) for p in catalog.metadata["image_path"].to_numpy()[rows]]
    rng = np.random.default_rng(seed + 1)
    copies = {kind: embedder.embed_images([copy_of(im, kind, rng) for im in images]) for kind in KINDS}
    return {"rows": rows, "own photo": embedder.embed_images(images), "copies": copies}


def duplicate_figures(stored: np.ndarray, dup: dict, transform) -> dict:
    """Cosines of store copies to their item, of the item's own photo re-embedded to its stored
    vector, and of each catalog item to its nearest other item, under `transform` (a projection or
    the identity); per threshold the share at or above it; and per threshold the projected threshold
    that keeps the 2048-d copies' share (filled in by the caller)."""
    catalog_vectors = transform(stored)
    index = faiss.IndexFlatIP(catalog_vectors.shape[1])
    index.add(catalog_vectors)
    scores, ids = index.search(catalog_vectors, 2)
    own_row = np.arange(len(catalog_vectors))
    nearest_other = np.where(ids[:, 0] == own_row, scores[:, 1], scores[:, 0])  # exact copies may come first
    items = catalog_vectors[dup["rows"]]
    copies = {kind: np.einsum("ij,ij->i", items, transform(v)) for kind, v in dup["copies"].items()}
    pooled = np.concatenate(list(copies.values()))
    own = np.einsum("ij,ij->i", items, transform(dup["own photo"]))
    share = {str(t): {"copies": float((pooled >= t).mean()), "own photo": float((own >= t).mean()),
                      "nearest other item": float((nearest_other >= t).mean())} for t in DUPLICATE_THRESHOLDS}
    per_kind = {kind: {"p5": float(np.percentile(c, 5)), "median": float(np.median(c))} for kind, c in copies.items()}
    return {"share_at_or_above": share, "copies_median": float(np.median(pooled)), "own_photo_min": float(own.min()),
            "nearest_other_median": float(np.median(nearest_other)), "per_kind": per_kind,
            "_pooled": pooled, "_nearest": nearest_other}


def matched_thresholds(base: dict, other: dict) -> dict:
    """Per threshold t: the threshold on `other`'s cosines that links the same share of copies as t
    does on `base`'s, and the share of items whose nearest other item reaches it there (false links
    when the catalog holds no duplicates) against base's at t."""
    out = {}
    for t in DUPLICATE_THRESHOLDS:
        share = float((base["_pooled"] >= t).mean())
        matched = float(np.quantile(other["_pooled"], 1 - share)) if 0 < share < 1 else float("nan")
        out[str(t)] = {"copies_share": share, "threshold": matched,
                       "nearest_other_at_t": float((base["_nearest"] >= t).mean()),
                       "nearest_other_at_matched": float((other["_nearest"] >= matched).mean())
                       if np.isfinite(matched) else float("nan")}
    return out


# ----------------------------------------------------------------------------- report

def smallest(rows: list[dict], timed: list[int]) -> dict:
    """The smallest dimensions whose catalog R@1 is at most KEEP_POINTS below the first row's (the
    vectors as shipped), fitted on all items / on half; also among the dimensions timed end to end,
    and among those whose shopper ratios (x native, in points) are also within KEEP_POINTS.
    Points are rounded to 1e-6 first: 30 queries of 10,000 are 0.3 points, not 0.30000000000000027."""
    def close(a: float, b: float) -> bool:
        return round(100 * (a - b), 6) <= KEEP_POINTS

    def within(key: str, among) -> int | None:
        ok = [r["dims"] for r in rows if r["dims"] in among and close(rows[0][key], r[key])]
        return min(ok) if ok else None

    def keeps_all(row: dict) -> bool:
        base = rows[0].get("shopper")
        return (row["dims"] in timed and close(rows[0]["r1"], row["r1"]) and base is not None and "shopper" in row
                and all(close(base[name]["x_native"], row["shopper"][name]["x_native"])
                        for name in SHOPPER_ROWS[1:]))

    everything = [r["dims"] for r in rows]
    passing = [r["dims"] for r in rows[1:] if keeps_all(r)]
    return {"smallest_within": within("r1", everything), "smallest_within_half": within("r1_half", everything),
            "smallest_timed_within": within("r1", timed),
            "smallest_keeping_shopper": min(passing) if passing else None}


def markdown(result: dict) -> str:
    base = result["rows"][0]
    lines = ["# Vectors no larger than they need to be: plain PCA of the catalog's vectors", "",
             f"`{result['command']}`: catalog `{result['catalog']}` (version {result['version']}, "
             f"{result['items']:,} items, {result['dim']}-d, model {result['fingerprint']}), "
             f"{result['photos']} shopper photos of 900-1,000 px (JPEG), torch, FAISS, BLAS and OpenCV on one thread, "
             f"{result['cpus']} CPUs shared with other work (load average {result['load_start']} at the start, "
             f"{result['load_end']} at the end); {result['seconds']:.0f} s.", "",
             "PCA: centred, the top principal directions of the catalog's own 10,000 stored vectors, no "
             "whitening; queries and catalog vectors projected alike and L2-normalised again. Fitting on the "
             "vectors it is then evaluated on is what a catalog would do (it has no other vectors); the column "
             "*fit on half* fits on a random half only and still evaluates all 10,000, so an overfit "
             "projection would show there.", "",
             "Times: p50 of wall-clock time and of the process's CPU time (`time.process_time`; torch, FAISS, "
             "BLAS and OpenCV run on one thread, so under load this is what a search costs, without the waits "
             "for a core).", "",
             "| dims | catalog R@1 (leave-one-out) | vs 2048 (points) | R@1, fit on half | "
             "10^4 Flat scan p50 wall / CPU | 1,000-px photo search p50 wall / CPU | p95 wall | "
             "of which search, p50 wall | float32 bytes per vector |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        e2e = row.get("end_to_end")
        timed = (f"{e2e['p50_ms']:.1f} / {e2e['cpu_p50_ms']:.1f} ms | {e2e['p95_ms']:.1f} ms | "
                 f"{e2e['search_p50_ms']:.1f} ms" if e2e else "- | - | -")
        lines.append(f"| {row['dims']} | {row['r1']:.4f} | {100 * (row['r1'] - base['r1']):+.2f} | "
                     f"{row['r1_half']:.4f} | {row['scan_p50_ms']:.2f} / {row['scan_cpu_p50_ms']:.2f} ms | "
                     f"{timed} | {4 * row['dims']:,} |")
    lines += ["", f"Smallest dimension keeping catalog R@1 within {KEEP_POINTS} points of the {base['dims']}-d "
              f"vectors: **{result['smallest_within']}** of those measured (fit on all items; "
              f"{result['smallest_within_half']} fitted on half); of those timed end to end: "
              f"**{result['smallest_timed_within']}**.", ""]
    lines += shopper_markdown(result) + duplicates_markdown(result)
    lines += ["Not measured here: a learned projection instead of PCA, product quantisation of the scoring copy, "
              "the query-confidence model and the weak-match calibration refitted on projected scores (the "
              "projected services above reuse the 2048-d ones). Nothing is adopted by this benchmark: the "
              "shipped model and the default catalog are as they were.", ""]
    return "\n".join(lines)


def shopper_markdown(result: dict) -> list[str]:
    rows = [r for r in result["rows"] if "shopper" in r]
    if not rows:
        return []
    base = rows[0]
    lines = ["## Shopper photos on projected vectors", "",
             f"The first renderer's shopper photos (`benchmarks.shopper_photos`' report sample, its first "
             f"{result['shopper_items']} items, rendered alike), each searched facing either way as a search does "
             "(index.search.grouping.rank_results), fine R@1 and x native (shopper R@1 over the same items' "
             "native 28-px R@1, both through the same projection). In brackets: the change against 2048-d in "
             "points of x native, with its 95% paired bootstrap interval (items resampled).", "",
             "| dims | native R@1 | " + " | ".join(f"{name}: R@1, x native" for name in SHOPPER_ROWS[1:]) + " |",
             "|---:|---:|" + "---|" * (len(SHOPPER_ROWS) - 1)]
    for row in rows:
        cells = []
        for name in SHOPPER_ROWS[1:]:
            fig = row["shopper"][name]
            cell = f"{fig['r1']:.3f}, {fig['x_native']:.3f}x"
            if row is not base:
                low, high = row["shopper_interval"][name]
                cell += (f" ({100 * (fig['x_native'] - base['shopper'][name]['x_native']):+.1f}; "
                         f"{low:+.1f} to {high:+.1f})")
            cells.append(cell)
        lines.append(f"| {row['dims']} | {row['shopper']['native 28 px']['r1']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", f"Smallest dimension keeping catalog R@1 and every shopper ratio within {KEEP_POINTS} points "
              f"(point estimates): **{result.get('smallest_keeping_shopper')}**.", ""]
    quality = [r for r in result["rows"] if "quality_shopper" in r]
    if quality:
        names = list(quality[0]["quality_shopper"])
        lines += ["The Quality page's shopper Recall@1 (`training.shopper_recall`, "
                  f"{result['quality_items']} items of the catalog, seed {result['quality_seed']}, item held out):", "",
                  "| dims | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        for row in quality:
            lines.append(f"| {row['dims']} | " + " | ".join(
                f"{row['quality_shopper'][n]:.3f}" + ("" if row is quality[0] else
                                                     f" ({100 * (row['quality_shopper'][n] - quality[0]['quality_shopper'][n]):+.1f})")
                for n in names) + " |")
        lines.append("")
    return lines


def duplicates_markdown(result: dict) -> list[str]:
    rows = [r for r in result["rows"] if "duplicates" in r]
    if not rows:
        return []
    lines = ["## Near-duplicate thresholds on projected vectors", "",
             f"{result['duplicate_items']} catalog items, each given a store copy of every kind "
             "(`benchmarks.store_copies`: re-encoded, resized, shifted, re-lit, cropped, mirrored, watermarked, "
             "bordered) and its own photo embedded again, as a build embeds them. Per threshold: the share of "
             "copies whose cosine to their item reaches it / the share of the catalog's 10,000 items whose "
             "nearest other item reaches it (the catalog's own near-duplicates and false links). Thresholds: "
             "0.85 hygiene's candidate pairs, 0.95 and 0.98 hiding (the API's example, the Search page's "
             "default), 0.97 hygiene's vectors-alone link, 0.995 the photo's own copy.", "",
             "| dims | copies, median cosine | own photo, lowest | " +
             " | ".join(f"≥ {t}: copies / nearest other" for t in DUPLICATE_THRESHOLDS) + " |",
             "|---:|---:|---:|" + "---:|" * len(DUPLICATE_THRESHOLDS)]
    for row in rows:
        fig = row["duplicates"]
        lines.append(f"| {row['dims']} | {fig['copies_median']:.4f} | {fig['own_photo_min']:.4f} | " + " | ".join(
            f"{fig['share_at_or_above'][str(t)]['copies']:.3f} / {fig['share_at_or_above'][str(t)]['nearest other item']:.3f}"
            for t in DUPLICATE_THRESHOLDS) + " |")
    matched = [r for r in rows if "matched" in r["duplicates"]]
    if matched:
        lines += ["", "The threshold on projected vectors that links the same share of copies as each 2048-d "
                  "threshold, and the share of items whose nearest other item reaches it (2048-d at the "
                  "threshold -> projected at the matched one): equal shares mean the projection keeps the "
                  "check's separation and only the number moves.", "",
                  "| dims | " + " | ".join(f"{t}" for t in DUPLICATE_THRESHOLDS) + " |",
                  "|---:|" + "---|" * len(DUPLICATE_THRESHOLDS)]
        for row in matched:
            cells = []
            for t in DUPLICATE_THRESHOLDS:
                m = row["duplicates"]["matched"][str(t)]
                cells.append("-" if not np.isfinite(m["threshold"]) else
                             f"{m['threshold']:.4f} ({m['nearest_other_at_t']:.3f} -> {m['nearest_other_at_matched']:.3f})")
            lines.append(f"| {row['dims']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vector_size", description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", type=Path, default=CATALOG)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--dims", default="128,256,512", help="dimensions timed end to end (besides 2048)")
    parser.add_argument("--recall-dims", default="64,96,128,192,256,384,512,768,1024",
                        help="dimensions whose R@1 and scan time are measured")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--scan-queries", type=int, default=500)
    parser.add_argument("--shopper-items", type=int, default=500,
                        help="first renderer's shopper photos (benchmarks.shopper_photos' report sample), 0: none")
    parser.add_argument("--quality-items", type=int, default=200,
                        help="items of the Quality page's shopper Recall@k (training.shopper_recall), 0: none")
    parser.add_argument("--quality-seed", type=int, default=7)
    parser.add_argument("--duplicate-items", type=int, default=500,
                        help="catalog items given a store copy of every kind (benchmarks.store_copies), 0: none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/vector-size"))
    parser.add_argument("--report-only", action="store_true", help="write OUT/report.md again from OUT/report.json")
    args = parser.parse_args(argv)
    if args.report_only:
        result = json.loads((args.out / "report.json").read_text())
        result.update(smallest(result["rows"], [r["dims"] for r in result["rows"][1:] if "end_to_end" in r]))
        write_report(args.out, "report", result, markdown(result))
        return 0
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(0)  # OpenCV (the photo's normalisation) in the calling thread too
    started, load_start = time.perf_counter(), round(os.getloadavg()[0], 1)

    base = SearchService(args.catalog, args.model)
    vectors = np.ascontiguousarray(base.catalog.embeddings, np.float32)
    labels = base.catalog.metadata[LABEL].astype(str).to_numpy()
    n, d = vectors.shape
    timed = sorted({int(x) for x in args.dims.split(",")})
    dims = sorted({int(x) for x in args.recall_dims.split(",")} | set(timed))
    half = np.sort(np.random.default_rng(args.seed).choice(n, size=n // 2, replace=False))

    r1 = catalog_r1(vectors, labels)
    scan = scan_p50_ms(vectors, args.scan_queries, args.seed)
    rows = [{"dims": d, "r1": r1, "r1_half": r1, "scan_p50_ms": scan[0], "scan_cpu_p50_ms": scan[1]}]
    print(f"{d} dims (as shipped): R@1 {rows[0]['r1']:.4f}, 10^4 scan p50 {rows[0]['scan_p50_ms']:.2f} ms", flush=True)
    projections = {}
    mean, directions = fit_pca(vectors)
    half_mean, half_directions = fit_pca(vectors[half])
    for dim in dims:
        basis, half_basis = np.ascontiguousarray(directions[:, :dim]), np.ascontiguousarray(half_directions[:, :dim])
        projected = project(vectors, mean, basis)
        scan = scan_p50_ms(projected, args.scan_queries, args.seed)
        row = {"dims": dim, "r1": catalog_r1(projected, labels),
               "r1_half": catalog_r1(project(vectors, half_mean, half_basis), labels),
               "scan_p50_ms": scan[0], "scan_cpu_p50_ms": scan[1]}
        rows.append(row)
        if dim in timed:
            projections[dim] = (mean, basis, projected)
        print(f"{dim} dims: R@1 {row['r1']:.4f} (fit on half {row['r1_half']:.4f}), "
              f"10^4 scan p50 {row['scan_p50_ms']:.2f} ms", flush=True)

    catalogs = {d: base.catalog}
    embedders = {d: base.embedder}
    for dim, (mean, basis, projected) in projections.items():
        catalogs[dim] = projected_catalog(base.catalog, projected)
        embedders[dim] = ProjectedEmbedder(base.embedder, mean, basis)
    services = {dim: base if dim == d else SearchService.from_parts(catalogs[dim], embedders[dim], base.categories,
                                                                     base.query_confidence) for dim in catalogs}
    by_dims = {row["dims"]: row for row in rows}

    if args.shopper_items:
        views, fine = shopper_views(base.embedder, args.shopper_items)
        print(f"shopper photos: {len(fine)} items x {len(views)} rows embedded", flush=True)
        hits = {}
        for dim, catalog in catalogs.items():
            transform = (lambda v: v) if dim == d else (lambda v, m=projections[dim][0], b=projections[dim][1]: project(v, m, b))
            hits[dim] = {row: shopper_hits(catalog, (transform(a), transform(b)), fine) for row, (a, b) in views.items()}
            by_dims[dim]["shopper"] = shopper_ratios(hits[dim])
            print(f"{dim} dims: shopper x native " + ", ".join(f"{row} {v['x_native']:.3f}"
                                                            for row, v in by_dims[dim]["shopper"].items()), flush=True)
        for dim in catalogs:
            if dim != d:
                by_dims[dim]["shopper_interval"] = ratio_difference(hits[d], hits[dim], seed=args.seed)

    if args.quality_items:
        for dim, catalog in catalogs.items():
            by_dims[dim]["quality_shopper"] = quality_shopper_recall(catalog, embedders[dim], args.quality_items,
                                                                     args.quality_seed)
            print(f"{dim} dims: Quality page shopper R@1 {by_dims[dim]['quality_shopper']}", flush=True)

    if args.duplicate_items:
        dup = duplicate_vectors(base.embedder, base.catalog, args.duplicate_items, args.seed)
        figures = {d: duplicate_figures(vectors, dup, lambda v: np.asarray(v, np.float32))}
        for dim, (mean, basis, _) in projections.items():
            figures[dim] = duplicate_figures(vectors, dup, lambda v, m=mean, b=basis: project(v, m, b))
            figures[dim]["matched"] = matched_thresholds(figures[d], figures[dim])
        for dim, fig in figures.items():
            by_dims[dim]["duplicates"] = {k: v for k, v in fig.items() if not k.startswith("_")}
            print(f"{dim} dims: duplicates {json.dumps(by_dims[dim]['duplicates']['share_at_or_above'])}", flush=True)

    photos = shopper_jpegs(args.photos, args.seed) if args.photos else []
    if photos:
        print(f"end to end: {len(photos)} photos x {len(services)} configurations", flush=True)
        timings = end_to_end(services, photos)
        for row in rows:
            if row["dims"] in timings:
                row["end_to_end"] = timings[row["dims"]]
                print(f"{row['dims']} dims: end to end p50 {timings[row['dims']]['p50_ms']:.1f} ms, CPU "
                      f"{timings[row['dims']]['cpu_p50_ms']:.1f} ms (search {timings[row['dims']]['search_p50_ms']:.1f} ms)",
                      flush=True)

    result = {"command": " ".join(["python -m benchmarks.vector_size", *(sys.argv[1:] if argv is None else argv)]),
              "catalog": str(args.catalog), "version": base.catalog.info.version, "items": n, "dim": d,
              "fingerprint": base.embedder.fingerprint, "label": LABEL, "photos": len(photos),
              "shopper_items": args.shopper_items, "quality_items": args.quality_items,
              "quality_seed": args.quality_seed, "duplicate_items": args.duplicate_items,
              "cpus": os.cpu_count(), "load_start": load_start, "load_end": round(os.getloadavg()[0], 1),
              "seconds": time.perf_counter() - started, "keep_points": KEEP_POINTS, "rows": rows,
              **smallest(rows, timed)}
    print(markdown_table(["dims", "R@1", "R@1 fit on half", "scan p50 ms (CPU)", "end to end p50 ms (CPU)"],
                         [[r["dims"], f"{r['r1']:.4f}", f"{r['r1_half']:.4f}",
                           f"{r['scan_p50_ms']:.2f} ({r['scan_cpu_p50_ms']:.2f})",
                           f"{r['end_to_end']['p50_ms']:.1f} ({r['end_to_end']['cpu_p50_ms']:.1f})"
                           if "end_to_end" in r else "-"] for r in rows]))
    write_report(args.out, "report", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
