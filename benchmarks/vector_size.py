"""Vectors no larger than they need to be: the catalog's vectors projected by plain PCA (centred,
no whitening) to fewer dimensions, against catalog R@1, the time of a 10^4 Flat scan and a
1,000-px photo search end to end.

    python -m benchmarks.vector_size [--catalog DIR] [--model CKPT] [--dims 128,256,512]
                                     [--recall-dims 64,96,128,192,256,384,512,768,1024]
                                     [--photos 200] [--scan-queries 500] [--out reports/vector-size]

PCA: the mean and the top principal directions of the catalog's own stored vectors (fitted on all
of them, no labels; a second fit on a random half only, the other half never seen, says how much
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
from index.catalog.tune import build_index  # noqa: E402
from index.importers import load_fashion_mnist_arrays  # noqa: E402
from index.quality.evaluation import recall_at_k  # noqa: E402
from index.search.service import SearchService  # noqa: E402

CATALOG, MODEL = Path("catalogs/fashion-mnist-test"), Path("models/coinsp-fmnist.pt")
LABEL = "product_id"
KEEP_POINTS = 0.3  # catalog R@1 may fall by at most this many points


# ----------------------------------------------------------------------------- the projection

def fit_pca(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), P (d, d)): the principal directions of `vectors`, largest variance first, unscaled
    (the first k columns project to k dims)."""
    x = np.asarray(vectors, np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vecs = np.linalg.eigh(centred.T @ centred / len(x))
    order = np.argsort(values)[::-1]
    return mean.astype(np.float32), np.ascontiguousarray(vecs[:, order], np.float32)


def project(vectors: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(v - mean) @ P, L2-normalised: cosine search over the projected vectors."""
    out = (np.asarray(vectors, np.float32) - mean) @ basis
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.where(norms > 0, norms, 1), np.float32)


class ProjectedEmbedder:
    """The catalog's embedder whose search vectors are projected (the category head still reads the
    raw features); everything else is the embedder's own."""

    def __init__(self, embedder, mean: np.ndarray, basis: np.ndarray):
        self._embedder, self._mean, self._basis = embedder, mean, basis

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def vectors(self, features: torch.Tensor) -> np.ndarray:
        return project(self._embedder.vectors(features), self._mean, self._basis)


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


# ----------------------------------------------------------------------------- report

def smallest(rows: list[dict], timed: list[int]) -> dict:
    """The smallest dimensions whose catalog R@1 is at most KEEP_POINTS below the first row's (the
    vectors as shipped), fitted on all items / on half; also among the dimensions timed end to end.
    Points are rounded to 1e-6 first: 30 queries of 10,000 are 0.3 points, not 0.30000000000000027."""
    def within(key: str, among) -> int | None:
        ok = [r["dims"] for r in rows if r["dims"] in among
              and round(100 * (rows[0]["r1"] - r[key]), 6) <= KEEP_POINTS]
        return min(ok) if ok else None
    everything = [r["dims"] for r in rows]
    return {"smallest_within": within("r1", everything), "smallest_within_half": within("r1_half", everything),
            "smallest_timed_within": within("r1", timed)}


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
    lines += ["Not measured here: the shopper-photo ratios and the near-duplicate thresholds (hygiene, the "
              "photo's own copy at 0.995, hiding) on projected vectors, a learned projection instead of PCA, "
              "product quantisation of the scoring copy. Nothing is adopted: the shipped model and the catalog "
              "folder's format are as they were.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vector_size", description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", type=Path, default=CATALOG)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--dims", default="128,256,512", help="dimensions timed end to end (besides 2048)")
    parser.add_argument("--recall-dims", default="64,96,128,192,256,384,512,768,1024",
                        help="dimensions whose R@1 and scan time are measured")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--scan-queries", type=int, default=500)
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

    services = {d: base}
    for dim, (mean, basis, projected) in projections.items():
        services[dim] = SearchService.from_parts(projected_catalog(base.catalog, projected),
                                                 ProjectedEmbedder(base.embedder, mean, basis), base.categories,
                                                 base.query_confidence)
    photos = shopper_jpegs(args.photos, args.seed)
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
