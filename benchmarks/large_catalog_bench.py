"""Benchmarks of large catalogs (run through python -m benchmarks.catalog_bench): evaluation memory
at 10^6 vectors, on-disk catalogs built from shards and searched at up to 10^7."""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from embedder.embed import Embedder
from embedder.files import format_size
from index.catalog.loaded import Catalog
from index.catalog.description import CatalogInfo
from index.catalog.choose import DEFAULT_MEMORY_BUDGET
from index.catalog.store import ID_COLUMN, commit_catalog
from index.catalog.tune import build_index
from index.search.exact import exact_top
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN
from benchmarks.catalog_data import (CACHE, ROOT, append_report, base_embeddings, default_manifest, default_model,
                                     percentile_ms, print_table, record, synthetic_blocks, synthetic_catalog)






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
        info = CatalogInfo(model_fingerprint=embedder.fingerprint, feature_dim=d, root=str(manifest.parent),
                           precision="bf16", next_id=n, model_path=str(model), memory_budget_bytes=DEFAULT_MEMORY_BUDGET,
                           counts={"items": n}, index={})
        from index.catalog.choose import IndexChoice

        # The index plays no part in evaluation (exact search over embeddings.npy): a flat one is quickest to write.
        index, index_record = build_index(IndexChoice("Flat", reason="benchmark: evaluation only"), vectors,
                                           metadata, info)
        commit_catalog(folder, [vectors], metadata, index, info.replace(index=index_record), None)
        del vectors, index
    arguments = ["-q", "evaluate", "--catalog", str(folder), "--out", str(CACHE / f"evaluate-{n}x{d}-report")]
    if args.max_queries:
        arguments += ["--max-queries", str(args.max_queries)]
    # The child reports its own VmHWM: getrusage's figure for a child carries over the peak of this
    # process (which held the vectors while writing them) through fork and exec.
    command = [sys.executable, "-c", "import sys; from index.__main__ import main; from benchmarks.large_catalog_bench import rss_bytes; "
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
    from index.scale.ondisk import build_from_shards
    from index.scale.shards import ShardVectors, read_info as read_shards_info, read_metadata, write_shards

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
