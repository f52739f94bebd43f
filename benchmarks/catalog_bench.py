"""Benchmarks of the catalog side: python -m benchmarks.catalog_bench <name> [options]. Not timed tests.

    embed-speed       Embedder.embed_files vs a plain eager fp32 torchvision loop; R@1 of both
    query-latency     decode + embed + search, p50/p95, catalogs of 10^4, 10^5, 10^6 vectors
    add-vs-rebuild    adding 1% new images vs re-embedding the whole catalog
    evaluate-memory   `python -m index evaluate` over 10^6 vectors: peak RSS and time

Each prints a short table and appends a JSON record to reports/bench_index.json. Defaults:
the Fashion-MNIST test manifest (imported into data/fashion-mnist on first use) and a
random-initialised small CNN with a 4x4 grid feature (2048-d), saved in .cache/bench/.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from embedder.backbones import build_backbone
from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint, save_checkpoint
from embedder.embed import Embedder
from embedder.preprocess import Preprocessing
from embedder.files import atomic_path, format_size, parse_size
from embedder.progress import ConsoleProgress
from index.add import add_to_catalog
from index.catalog import Catalog
from index.choose import DEFAULT_MEMORY_BUDGET, choose_index
from index.operations import build_catalog, rebuild_catalog
from index.store import ID_COLUMN, commit_catalog
from index.tune import build_index, exact_top
from index.evaluation import recall_at_k
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, read_manifest, resolve_image_paths
from index.service import SearchService

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "bench_index.json"
CACHE = ROOT / ".cache" / "bench"
DATA = ROOT / "data" / "fashion-mnist"


# ----------------------------------------------------------------------------- helpers

def default_model(grid: int = 4) -> Path:
    """A random-initialised SmallCNN for 28 px grey images (grid=4: 2048-d), seeded, cached."""
    path = CACHE / f"smallcnn-grid{grid}-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        spec = {"name": "smallcnn", "kwargs": {"in_channels": 1, "grid": grid}}
        save_checkpoint(path, backbone_spec=spec, backbone=build_backbone(spec["name"], **spec["kwargs"]),
                        preprocessing=Preprocessing(size=28, channels=1, mean=(0.286,), std=(0.353,)),
                        categories=["apparel", "bags", "footwear"], config={"benchmark": "random init, seed 0"})
    return path


def default_manifest() -> Path:
    from index.importers import import_fashion_mnist

    return import_fashion_mnist(DATA, "test")


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads()}


def append_report(record: dict) -> None:
    records = []
    if REPORT.exists():
        try:
            records = json.loads(REPORT.read_text())
        except ValueError:
            records = []
    records.append(record)
    with atomic_path(REPORT) as tmp:
        tmp.write_text(json.dumps(records, indent=2, default=str) + "\n")
    print(f"appended to {REPORT.relative_to(ROOT) if REPORT.is_relative_to(ROOT) else REPORT}")


def print_table(rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))


def record(name: str, params: dict, results) -> dict:
    return {"bench": name, "at": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "params": params, "results": results}


def manifest_rows(manifest: Path, limit: int | None):
    table = read_manifest(manifest)
    if limit:
        table = table.iloc[:limit]
    return table, resolve_image_paths(table, manifest.parent)


def base_embeddings(embedder: Embedder, manifest: Path, limit: int | None) -> tuple[np.ndarray, pd.DataFrame]:
    """The model's embeddings of the manifest's images (cached per model and manifest)."""
    table, paths = manifest_rows(manifest, limit)
    key = hashlib.sha256(f"{embedder.fingerprint}|{manifest.absolute()}|{len(table)}".encode()).hexdigest()[:16]
    cache = CACHE / f"base-{key}.npz"
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        return saved["vectors"], table.iloc[saved["rows"]].reset_index(drop=True)
    result = embedder.embed_files([str(p) for p in paths])
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, vectors=result.embeddings, rows=result.embedded)
    return result.embeddings, table.iloc[result.embedded].reset_index(drop=True)


def synthetic_catalog(base: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n vectors of the real dimension: the real ones, then noisy copies of them (normalised).

    The noise is half the median nearest-neighbour distance of the real vectors, so each real
    item gets a cloud of close variants (like colour/size variants of a product) without
    erasing the structure between items. Returns (vectors, source row of each vector).
    """
    nb, d = base.shape
    out = np.empty((n, d), np.float32)
    for start, block, _ in synthetic_blocks(base, n, seed):
        out[start:start + len(block)] = block
    return out, np.arange(n) % nb


def synthetic_blocks(base: np.ndarray, n: int, seed: int = 0, block_rows: int = 65_536):
    """synthetic_catalog a block at a time, never holding all n: yields (first row, vectors, source rows)."""
    nb, d = base.shape
    if n <= nb:
        yield 0, np.ascontiguousarray(base[:n]), np.arange(n)
        return
    probe = np.random.default_rng(seed).choice(nb, size=min(nb, 1000), replace=False)
    nearest = exact_top(np.ascontiguousarray(base[probe]), base, 2)[:, 1]
    distance = float(np.median(np.linalg.norm(base[probe] - base[nearest], axis=1)))
    sigma = 0.5 * distance / np.sqrt(d)
    yield 0, np.ascontiguousarray(base), np.arange(nb)
    rng = np.random.default_rng(seed)
    for start in range(nb, n, block_rows):
        stop = min(start + block_rows, n)
        source = np.arange(start, stop) % nb
        block = base[source] + rng.standard_normal((stop - start, d), dtype=np.float32) * np.float32(sigma)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield start, block, source


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


# ----------------------------------------------------------------------------- embed-speed

def plain_loop(model_path: Path, paths: list[Path], batch_size: int | None) -> np.ndarray:
    """The torchvision-style reference: PIL open -> transforms -> eager fp32 model (no_grad),
    contiguous memory, no DataLoader workers, no channels_last, no bf16."""
    from PIL import Image, ImageOps
    from torchvision import transforms as T

    backbone, pre = backbone_from_checkpoint(load_checkpoint(model_path))
    backbone = backbone.float().eval()
    steps = [T.Grayscale(num_output_channels=1)] if pre.channels == 1 else []
    if pre.invert:
        steps.append(T.Lambda(ImageOps.invert))
    steps += [T.Resize((pre.size, pre.size)), T.ToTensor(),
              T.Normalize(pre.mean[:pre.channels], pre.std[:pre.channels])]
    transform = T.Compose(steps)
    out = []
    step = batch_size or 1
    with torch.no_grad():
        for start in range(0, len(paths), step):
            batch = []
            for path in paths[start:start + step]:
                with Image.open(path) as image:
                    batch.append(transform(image.convert("RGB")))
            out.append(F.normalize(backbone(torch.stack(batch)), dim=1).numpy())
    return np.concatenate(out)


def bench_embed_speed(args) -> None:
    model = Path(args.model) if args.model else default_model(4)
    manifest = Path(args.manifest) if args.manifest else default_manifest()
    table, paths = manifest_rows(manifest, args.limit)
    labels = table[PRODUCT_COLUMN].astype(str).to_numpy()
    embedder = Embedder.from_checkpoint(model, precision="bf16")
    print(f"model {model} ({embedder.feature_dim}-d), {len(paths):,} images of {manifest}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    embedder.embed_files([str(p) for p in paths[:512]])  # warm-up (both sides get one)
    plain_loop(model, paths[:512], 256)

    rows, fast_times, plain_times = [], [], []
    fast = plain = None
    for _ in range(args.repeats):
        started = time.perf_counter()
        fast = embedder.embed_files([str(p) for p in paths])
        fast_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        plain = plain_loop(model, paths, 256)
        plain_times.append(time.perf_counter() - started)
    single_n = min(len(paths), args.single)
    started = time.perf_counter()
    plain_loop(model, paths[:single_n], None)
    single_time = time.perf_counter() - started

    fast_ips, plain_ips = len(paths) / min(fast_times), len(paths) / min(plain_times)
    single_ips = single_n / single_time
    assert len(fast.embedded) == len(paths), "the benchmark images should all be readable"
    r1_fast = recall_at_k(fast.embeddings, labels[fast.embedded], ks=(1,)).overall[1]
    r1_plain = recall_at_k(plain, labels, ks=(1,)).overall[1]
    cos = float(np.mean(np.sum(fast.embeddings * plain[fast.embedded], axis=1)))
    rows = [
        {"path": "Embedder.embed_files (workers, channels_last, bf16, inference_mode)", "images/s": round(fast_ips),
         "speed-up": "1.00x", "R@1": f"{100 * r1_fast:.2f}"},
        {"path": "plain fp32 loop, batches of 256", "images/s": round(plain_ips),
         "speed-up": f"{fast_ips / plain_ips:.2f}x", "R@1": f"{100 * r1_plain:.2f}"},
        {"path": f"plain fp32 loop, one image at a time ({single_n:,} images)", "images/s": round(single_ips),
         "speed-up": f"{fast_ips / single_ips:.2f}x", "R@1": "-"},
    ]
    print_table(rows)
    delta = 100 * (r1_fast - r1_plain)
    print(f"speed-up vs plain batches {fast_ips / plain_ips:.2f}x (goal >= 2x: "
          f"{'met' if fast_ips / plain_ips >= 2 else 'NOT met'}); R@1 difference {delta:+.2f} points "
          f"(goal within 0.2: {'met' if abs(delta) <= 0.2 + 1e-9 else 'NOT met'}); mean cosine between the two "
          f"embeddings {cos:.5f}; best of {args.repeats} runs")
    append_report(record("embed-speed", {"model": str(model), "manifest": str(manifest), "images": len(paths),
                                         "repeats": args.repeats},
                         {"fast_images_per_s": fast_ips, "plain_batched_images_per_s": plain_ips,
                          "plain_single_images_per_s": single_ips, "speedup_vs_batched": fast_ips / plain_ips,
                          "speedup_vs_single": fast_ips / single_ips, "r1_fast": r1_fast, "r1_plain": r1_plain,
                          "r1_difference_points": delta, "mean_cosine_fast_vs_plain": cos,
                          "fast_seconds": fast_times, "plain_seconds": plain_times}))


# ----------------------------------------------------------------------------- query-latency

def _catalog_in_memory(vectors: np.ndarray, source: np.ndarray, base_meta: pd.DataFrame, embedder: Embedder,
                       root: Path, budget: int, index: str | None) -> tuple[Catalog, dict, float]:
    n, d = vectors.shape
    metadata = pd.DataFrame({ID_COLUMN: np.arange(n, dtype=np.int64)})
    for column in (PATH_COLUMN, CATEGORY_COLUMN, PRODUCT_COLUMN):
        metadata[column] = base_meta[column].to_numpy(object)[source]
    info = {"format": "coinsp-catalog/1", "model_fingerprint": embedder.fingerprint, "feature_dim": d,
            "root": str(root), "precision": embedder.precision, "next_id": n}
    from index.choose import choice_from_factory

    choice = choice_from_factory(index, d) if index else choose_index(n, d, budget)
    started = time.perf_counter()
    faiss_index, index_record = build_index(choice, vectors, metadata, info, progress=ConsoleProgress())
    seconds = time.perf_counter() - started
    return Catalog(None, {**info, "index": index_record}, vectors, metadata, faiss_index), index_record, seconds


def _time_queries(service: SearchService, query_bytes: list[bytes], truth: np.ndarray) -> tuple[dict, dict]:
    for data in query_bytes[:10]:  # warm-up
        service.search(data, k=10)
    latencies, embed_s, search_s, found = [], [], [], []
    for data in query_bytes:
        started = time.perf_counter()
        results = service.search(data, k=10)
        latencies.append(time.perf_counter() - started)
        embed_s.append(results.timing.decode_embed_s)
        search_s.append(results.timing.search_s)
        found.append(results.frame["id"].to_numpy())
    recall = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
    row = {"recall@10": round(recall, 3), "p50 ms": round(percentile_ms(latencies, 50), 2),
           "p95 ms": round(percentile_ms(latencies, 95), 2), "embed p50": round(percentile_ms(embed_s, 50), 2),
           "search p50": round(percentile_ms(search_s, 50), 2)}
    result = {"recall_at_10_queries": recall, "p50_ms": percentile_ms(latencies, 50),
              "p95_ms": percentile_ms(latencies, 95), "decode_embed_p50_ms": percentile_ms(embed_s, 50),
              "search_p50_ms": percentile_ms(search_s, 50), "search_p95_ms": percentile_ms(search_s, 95),
              "queries": len(query_bytes)}
    return row, result


def bench_query_latency(args) -> None:
    torch.set_num_threads(1)  # one query photo per search, as the API's workers run them
    model = Path(args.model) if args.model else default_model(4)
    manifest = Path(args.manifest) if args.manifest else default_manifest()
    embedder = Embedder.from_checkpoint(model, precision="bf16")
    base, base_meta = base_embeddings(embedder, manifest, None)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    budget = parse_size(args.memory_budget)
    table, paths = manifest_rows(manifest, None)
    rng = np.random.default_rng(1)
    query_files = [paths[i] for i in rng.choice(len(paths), size=min(args.queries, len(paths)), replace=False)]
    query_bytes = [p.read_bytes() for p in query_files]
    print(f"model {model} ({base.shape[1]}-d), {len(query_bytes)} query photos from {manifest}; "
          f"index memory budget {format_size(budget)}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    rows, results = [], []
    for n in sizes:
        print(f"\n-- {n:,} vectors: generating and indexing…", flush=True)
        vectors, source = synthetic_catalog(base, n)
        catalog, index_record, build_s = _catalog_in_memory(vectors, source, base_meta, embedder, manifest.parent,
                                                            budget, args.index)
        service = SearchService.from_parts(catalog, embedder)
        # Recall@10 of the timed queries against exact search over the same vectors.
        truth = exact_top(np.stack([service.embed(data) for data in query_bytes]), vectors, 10)
        knob = index_record.get("tuned")
        tuned_value = catalog.choice.params.get(knob) if knob else None
        while True:
            row, result = _time_queries(service, query_bytes, truth)
            params = ",".join(f"{k}={v}" for k, v in catalog.choice.params.items()) or "-"
            row = {"vectors": f"{n:,}", "index": index_record["factory"],
                   "params": params + (" (tuned)" if knob and catalog.choice.params[knob] == tuned_value else ""),
                   "build s": round(build_s, 1), **row}
            rows.append(row)
            print_table([row])
            results.append({"vectors": n, "dim": int(vectors.shape[1]), "index": index_record,
                            "params_used": dict(catalog.choice.params), "build_seconds": build_s, **result})
            # Below the goal: show what a larger search parameter costs and gives.
            if not knob or result["recall_at_10_queries"] >= 0.95 or catalog.choice.params[knob] >= 4096:
                break
            catalog.choice.params[knob] *= 2
        del service, catalog, vectors
    print("\nend to end = decode + embed + search + result table; recall@10 of the timed queries vs exact search")
    print_table(rows)
    append_report(record("query-latency", {"model": str(model), "manifest": str(manifest), "sizes": sizes,
                                           "queries": len(query_bytes), "memory_budget": budget,
                                           "index": args.index,
                                           "data": "real embeddings of the manifest, then noisy copies of them"},
                         results))


# ----------------------------------------------------------------------------- add-vs-rebuild

def bench_add_vs_rebuild(args) -> None:
    model = Path(args.model) if args.model else default_model(4)
    manifest = Path(args.manifest) if args.manifest else default_manifest()
    table = read_manifest(manifest)
    rng = np.random.default_rng(0)
    new = np.zeros(len(table), bool)
    new[rng.choice(len(table), size=max(1, round(len(table) * args.fraction)), replace=False)] = True
    work = Path(tempfile.mkdtemp(prefix="add-vs-rebuild-", dir=CACHE if CACHE.exists() else None))
    partial = manifest.parent / f".bench-partial-{os.getpid()}{manifest.suffix}"
    try:
        table[~new].to_csv(partial, index=False) if manifest.suffix == ".csv" else table[~new].to_parquet(partial)
        print(f"{len(table):,} images; catalog of {int((~new).sum()):,}, then add {int(new.sum()):,} "
              f"({100 * args.fraction:g}%) vs re-embed all; model {model}; load {os.getloadavg()[0]:.1f}")
        first = work / "catalog"
        started = time.perf_counter()
        build_catalog(partial, model, first, progress=False)
        build_s = time.perf_counter() - started
        add_times = []
        for attempt in range(args.repeats):
            copy = work / f"copy{attempt}"
            shutil.copytree(first, copy)
            started = time.perf_counter()
            report = add_to_catalog(copy, manifest, progress=False)
            add_times.append(time.perf_counter() - started)
            assert report.added == int(new.sum()), report.summary()
        rebuild_times = []
        for attempt in range(max(1, args.repeats // 2)):
            started = time.perf_counter()
            rebuild_catalog(work / "copy0", reembed=True, progress=False)
            rebuild_times.append(time.perf_counter() - started)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    add_s, rebuild_s = float(np.median(add_times)), float(np.median(rebuild_times))
    rows = [{"operation": f"build ({int((~new).sum()):,} images)", "seconds": round(build_s, 2), "share": "-"},
            {"operation": f"add {int(new.sum()):,} new images (median of {len(add_times)})", "seconds": round(add_s, 3),
             "share": f"{100 * add_s / rebuild_s:.1f}%"},
            {"operation": f"rebuild, re-embedding {len(table):,} (median of {len(rebuild_times)})",
             "seconds": round(rebuild_s, 2), "share": "100%"}]
    print_table(rows)
    print(f"add takes {100 * add_s / rebuild_s:.1f}% of a full rebuild (goal <= 5%: "
          f"{'met' if add_s <= 0.05 * rebuild_s else 'NOT met'})")
    append_report(record("add-vs-rebuild", {"model": str(model), "manifest": str(manifest), "images": len(table),
                                            "added": int(new.sum()), "repeats": args.repeats},
                         {"build_seconds": build_s, "add_seconds": add_times, "rebuild_seconds": rebuild_times,
                          "add_share_of_rebuild": add_s / rebuild_s}))


# ----------------------------------------------------------------------------- evaluate-memory

def bench_evaluate_memory(args) -> None:
    model = Path(args.model) if args.model else default_model(args.grid)
    manifest = Path(args.manifest) if args.manifest else default_manifest()
    embedder = Embedder.from_checkpoint(model, precision="bf16")
    base, base_meta = base_embeddings(embedder, manifest, None)
    n, d = args.vectors, base.shape[1]
    folder = CACHE / f"evaluate-{n}x{d}-{embedder.fingerprint}"
    if not (folder / "catalog.json").exists():
        print(f"writing a {n:,} x {d} catalog to {folder} (real embeddings, then noisy copies)…", flush=True)
        vectors, source = synthetic_catalog(base, n)
        metadata = pd.DataFrame({ID_COLUMN: np.arange(n, dtype=np.int64)})
        for column in (PATH_COLUMN, CATEGORY_COLUMN, PRODUCT_COLUMN):
            metadata[column] = base_meta[column].to_numpy(object)[source]
        info = {"format": "coinsp-catalog/1", "model_fingerprint": embedder.fingerprint, "feature_dim": d,
                "root": str(manifest.parent), "precision": "bf16", "next_id": n, "model_path": str(model),
                "memory_budget_bytes": DEFAULT_MEMORY_BUDGET, "skipped": [], "counts": {"items": n}}
        from index.choose import IndexChoice

        # The index plays no part in evaluation (exact search over embeddings.npy): a flat one is quickest to write.
        index, index_record = build_index(IndexChoice("Flat", reason="benchmark: evaluation only"), vectors,
                                           metadata, info)
        commit_catalog(folder, [vectors], metadata, index, {**info, "index": index_record}, None)
        del vectors, index
    arguments = ["-q", "evaluate", "--catalog", str(folder), "--out", str(CACHE / f"evaluate-{n}x{d}-report")]
    if args.max_queries:
        arguments += ["--max-queries", str(args.max_queries)]
    # The child reports its own VmHWM: getrusage's figure for a child carries over the peak of this
    # process (which held the vectors while writing them) through fork and exec.
    command = [sys.executable, "-c", "import sys; from index.__main__ import main; from benchmarks.catalog_bench import rss_bytes; "
               f"status = main({arguments!r}); print('PEAK_RSS_BYTES', rss_bytes('VmHWM')); sys.exit(status)"]
    print(f"running: python -m index {' '.join(arguments)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:])
        raise SystemExit(f"evaluate failed with status {done.returncode}")
    peak_kb = int(done.stdout.split("PEAK_RSS_BYTES")[-1].split()[0]) // 1024
    peak = peak_kb * 1024
    saved = json.loads((CACHE / f"evaluate-{n}x{d}-report.json").read_text())
    row = {"vectors": f"{n:,}", "dim": d, "mode": saved["evaluation"]["mode"], "seconds": round(seconds, 1),
           "peak RSS": format_size(peak), "R@1": round(saved["recall"]["R@1"], 4)}
    print_table([row])
    print(f"peak RSS {format_size(peak)} (goal < 4 GB: {'met' if peak < 4 * 1024**3 else 'NOT met'}); "
          f"{d}-d vectors take {format_size(n * d * 4)} per copy")
    append_report(record("evaluate-memory", {"model": str(model), "vectors": n, "dim": d,
                                             "max_queries": args.max_queries},
                         {"seconds": seconds, "peak_rss_bytes": peak, "mode": saved["evaluation"]["mode"],
                          "recall": saved["recall"]}))


# ----------------------------------------------------------------------------- ondisk

def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_ondisk(args) -> None:
    """Shards of generated vectors -> build-from-shards -> single-query latency, recall, peak RSS."""
    from index.ondisk import build_from_shards
    from index.shards import ShardVectors, read_info as read_shards_info, read_metadata, write_shards

    model = Path(args.model) if args.model else ROOT / "models" / "coinsp-fmnist.pt"
    manifest = Path(args.manifest) if args.manifest else default_manifest()
    embedder = Embedder.from_checkpoint(model, precision="bf16")
    base, base_meta = base_embeddings(embedder, manifest, None)
    n, d = args.n, args.dim or base.shape[1]
    if d != base.shape[1]:  # another dimension: random centres instead of the model's embeddings
        base = np.random.default_rng(0).standard_normal((len(base), d)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
    work = Path(args.work) if args.work else CACHE / f"ondisk-{n}x{d}"
    shards, catalog_dir = work / "shards", work / "catalog"
    itemsize = np.dtype(args.vector_dtype).itemsize
    need = n * d * itemsize * 1.05 + n * 200
    free = shutil.disk_usage(work.parent if work.parent.exists() else ROOT).free
    print(f"{n:,} x {d} vectors as {args.vector_dtype} shards in {work} (about {format_size(need)}, "
          f"{format_size(free)} free); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    stages: dict[str, float] = {}
    if (shards / "shards.json").exists() and read_shards_info(shards)["model_fingerprint"] != embedder.fingerprint:
        print(f"the shards in {shards} come from another model: writing them again", flush=True)
        shutil.rmtree(shards)
    if not (shards / "shards.json").exists():
        if need > free - 5 * 1024**3:
            raise SystemExit(f"not enough disk: the shards need about {format_size(need)}, {format_size(free)} free; "
                             "use --vector-dtype float16, a smaller --n, or --work on a larger disk")
        started = time.perf_counter()
        labels = {c: base_meta[c].to_numpy(object) for c in (PATH_COLUMN, CATEGORY_COLUMN, PRODUCT_COLUMN)}

        def blocks():
            for start, vectors, source in synthetic_blocks(base, n, seed=0, block_rows=args.shard_rows):
                frame = pd.DataFrame({ID_COLUMN: np.arange(start, start + len(vectors), dtype=np.int64),
                                      **{c: values[source] for c, values in labels.items()}})
                print(f"  shard rows {start:,}..{start + len(vectors):,}", flush=True)
                yield frame, vectors

        work.mkdir(parents=True, exist_ok=True)
        write_shards(shards, blocks(), model_fingerprint=embedder.fingerprint, feature_dim=d,
                     root=str(manifest.parent.absolute()), model_path=str(model.absolute()),
                     vector_dtype=args.vector_dtype)
        stages["write_shards_s"] = time.perf_counter() - started
    if args.shards_only:
        print(f"shards written to {shards}; run again without --shards-only to build and search")
        return
    shard_info = read_shards_info(shards)
    print("building the on-disk catalog…", flush=True)
    started = time.perf_counter()
    report = build_from_shards(shards, model, catalog_dir, index=args.index, overwrite=True, progress=True)
    stages["build_from_shards_s"] = time.perf_counter() - started
    record_ = report.index
    version = catalog_dir / "versions" / json.loads((catalog_dir / "catalog.json").read_text())["version"]

    # Queries: new noisy variants of real items (not catalog vectors); exact top-10 by
    # streaming the shards in id order.
    generated = synthetic_blocks(base, len(base) + args.queries, seed=7, block_rows=args.queries)
    next(generated)  # the real items themselves
    _, queries, _ = next(generated)  # variants of the first items, other noise than the catalog's
    started = time.perf_counter()
    metadata, locations = read_metadata(shards, shard_info)
    vectors = ShardVectors(shards, shard_info["files"], d, locations)
    truth = metadata[ID_COLUMN].to_numpy(np.int64)[exact_top(np.ascontiguousarray(queries), vectors, 10)]
    stages["exact_truth_s"] = time.perf_counter() - started
    del metadata, locations, vectors
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    command = [sys.executable, "-m", "benchmarks.catalog_bench", "ondisk-search", "--catalog", str(catalog_dir),
               "--queries", str(work / "queries.npy"), "--truth", str(work / "truth.npy"),
               "--out", str(work / "search.json")]
    print("searching in a fresh process:", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the search process failed with status {done.returncode}")
    searched = json.loads((work / "search.json").read_text())
    disk = {"shards_bytes": _folder_bytes(shards), "catalog_version_bytes": _folder_bytes(version),
            "ivfdata_bytes": (version / "index.ivfdata").stat().st_size,
            "index_faiss_bytes": (version / "index.faiss").stat().st_size,
            "metadata_bytes": (version / "metadata.parquet").stat().st_size}
    build_stages = {**stages, **{f"build.{k}": v for k, v in record_.get("stages_seconds", {}).items()}}
    row = {"vectors": f"{n:,}", "dim": d, "index": record_["factory"], "nprobe": record_["params"].get("nprobe"),
           "build s": round(stages["build_from_shards_s"], 1), "shards": format_size(disk["shards_bytes"]),
           "catalog": format_size(disk["catalog_version_bytes"]), "recall@10": round(searched["recall_at_10"], 3),
           "p50 ms": round(searched["p50_ms"], 2), "p95 ms": round(searched["p95_ms"], 2),
           "peak RSS": format_size(searched["peak_rss_bytes"])}
    print_table([row])
    print("stages (s):", json.dumps({k: round(v, 1) for k, v in build_stages.items()}))
    append_report(record("ondisk", {"model": str(model), "vectors": n, "dim": d, "vector_dtype": args.vector_dtype,
                                    "queries": args.queries, "index": args.index,
                                    "data": "real embeddings of the manifest, then noisy copies of them; queries: "
                                            "new noisy copies of real items"},
                         {"index": record_, "stages_seconds": build_stages, "disk": disk, "search": searched}))


def rss_bytes(field: str = "VmHWM") -> int:
    """This process's peak (VmHWM) or current (VmRSS) resident memory. Linux keeps getrusage's
    maxrss across exec, so a child could report its parent's peak; /proc's figures start afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_ondisk_search(args) -> None:
    """The search half of `ondisk`, in its own process so that its peak RSS is the search's own.

    Run on its own (`--work`, the folder `ondisk` wrote), it searches that catalog again, with
    other --nprobe / --rerank where given, and appends the record to the report; --passes > 1
    repeats the queries (the first pass reads pages from disk, later ones find them cached)."""
    if args.work:
        work = Path(args.work)
        args.catalog, args.queries, args.truth = (str(work / "catalog"), str(work / "queries.npy"),
                                                  str(work / "truth.npy"))
        args.out = args.out or str(work / f"search-nprobe{args.nprobe or 'tuned'}-rerank{args.rerank or 'tuned'}.json")
    elif not (args.catalog and args.queries and args.truth and args.out):
        raise SystemExit("give --work (a folder written by `ondisk`), or --catalog, --queries, --truth and --out")
    queries, truth = np.load(args.queries), np.load(args.truth)
    baseline = rss_bytes("VmRSS")  # the interpreter with this module's imports (torch among them)
    started = time.perf_counter()
    catalog = Catalog.load(args.catalog)
    catalog.index  # noqa: B018 (opens the memory-mapped index and its id map)
    open_s = time.perf_counter() - started
    built_params = dict(catalog.choice.params)
    catalog.choice.params.update({k: v for k, v in (("nprobe", args.nprobe), ("rerank", args.rerank)) if v})
    for query in queries[:10]:  # warm-up
        catalog.search_vectors(query, 10)
    passes = []
    for _ in range(max(1, args.passes)):
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            hits = catalog.search_vectors(query, 10)
            latencies.append(time.perf_counter() - started)
            found.append(hits.ids[0])
        passes.append({"p50_ms": percentile_ms(latencies, 50), "p95_ms": percentile_ms(latencies, 95)})
    by_id = []
    for item in catalog.ids[np.random.default_rng(3).choice(len(catalog.ids), size=min(50, len(catalog.ids)))]:
        started = time.perf_counter()
        catalog.search_vectors(catalog.vectors_of([item]), 10, exclude_ids=[[item]])
        by_id.append(time.perf_counter() - started)
    recall = float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
    result = {"queries": len(queries), "recall_at_10": recall, **passes[0], "passes": passes,
              "params": dict(catalog.choice.params), "built_params": built_params,
              "search_by_id_p50_ms": percentile_ms(by_id, 50), "open_seconds": open_s,
              "peak_rss_bytes": rss_bytes("VmHWM"), "rss_before_loading_bytes": baseline}
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.work:
        print_table([{"vectors": f"{len(catalog.ids):,}", "dim": catalog.dim, "index": catalog.choice.factory,
                      **{k: catalog.choice.params.get(k) for k in ("nprobe", "rerank")},
                      "recall@10": round(recall, 3),
                      "p50 / p95 ms by pass": "; ".join(f"{p['p50_ms']:.2f} / {p['p95_ms']:.2f}" for p in passes),
                      "peak RSS": format_size(result["peak_rss_bytes"])}])
        append_report(record("ondisk-search", {"work": str(work), "nprobe": args.nprobe, "rerank": args.rerank,
                                               "passes": args.passes}, result))


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.catalog_bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="name", required=True)

    def common(p, grid_note="4x4-grid SmallCNN, random init (2048-d)"):
        p.add_argument("--model", help=f"checkpoint (default: {grid_note})")
        p.add_argument("--manifest", help="manifest (default: Fashion-MNIST test, imported into data/)")
        p.add_argument("--threads", type=int, default=None,
                       help="torch intra-op threads for everything measured (default: torch's own, "
                            "= the number of cores)")

    p = sub.add_parser("embed-speed")
    common(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--single", type=int, default=1000, help="images for the one-at-a-time loop")

    p = sub.add_parser("query-latency")
    common(p)
    p.add_argument("--sizes", default="1e4,1e5,1e6")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--memory-budget", default="4GB")
    p.add_argument("--index", default=None, help="FAISS factory for every size (default: chosen per size)")

    p = sub.add_parser("add-vs-rebuild")
    common(p)
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--repeats", type=int, default=3)

    p = sub.add_parser("evaluate-memory")
    common(p, "SmallCNN of --grid, random init")
    p.add_argument("--grid", type=int, default=1, help="grid of the default model (1: 128-d)")
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--max-queries", type=int, default=None, help="passed to evaluate (default: its own rule)")

    p = sub.add_parser("ondisk", help="on-disk IVF-PQ catalog built from generated shards")
    common(p, "models/coinsp-fmnist.pt (2048-d)")
    p.add_argument("--n", type=int, default=1_000_000, help="vectors (try 1e5 and 1e6 before 1e7)")
    p.add_argument("--dim", type=int, default=None, help="dimension (default: the model's)")
    p.add_argument("--vector-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--index", default=None, help="FAISS IVF factory (default: chosen for an on-disk catalog)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--shard-rows", type=int, default=65_536, help="vectors per shard file (and per generated block)")
    p.add_argument("--work", default=None, help="folder for shards and catalog (default .cache/bench/ondisk-NxD)")
    p.add_argument("--shards-only", action="store_true", help="stop after writing the shards (a later run reuses them)")

    p = sub.add_parser("ondisk-search", help="search the catalog `ondisk` built again, in a fresh process "
                                             "(other nprobe / rerank, repeated passes)")
    p.add_argument("--work", help="the folder `ondisk` wrote (catalog/, queries.npy, truth.npy)")
    p.add_argument("--nprobe", type=int, default=None, help="default: the catalog's tuned value")
    p.add_argument("--rerank", type=int, default=None, help="candidates re-scored per result (default: the catalog's)")
    p.add_argument("--passes", type=int, default=1, help="times the queries are searched (first: pages from disk)")
    for name in ("--catalog", "--queries", "--truth", "--out"):
        p.add_argument(name, help=argparse.SUPPRESS)  # how `ondisk` calls it

    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    {"embed-speed": bench_embed_speed, "query-latency": bench_query_latency, "add-vs-rebuild": bench_add_vs_rebuild,
     "evaluate-memory": bench_evaluate_memory, "ondisk": bench_ondisk,
     "ondisk-search": bench_ondisk_search}[args.name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
