"""The catalog served by Milvus Lite against the catalog's own FAISS index: the same results, and
what a query costs each engine at 10^4, 10^5 and 10^6 items.

    python -m benchmarks.milvus_bench [--part all|equality|latency] [--queries 1000]
                                      [--catalog DIR --model CKPT] [--resume]
                                      [--sizes 10000,100000,1000000] [--dim 128] [--out reports/milvus]

equality: the default catalog (catalogs/fashion-mnist-test, built by ./run.sh; see its README)
served twice, by its FAISS index and by Milvus Lite (a collection synced from the folder, in a .db
under .cache/bench/), searched by `--queries` new photos: seeded catalog items re-photographed
(shifted, rotated, lighter or darker: benchmarks.grouped_search.augmented), each embedded once
as SearchService.search embeds a photo (it and its mirror image), then ranked on both engines as
the service ranks it (index.search.grouping.rank_results over the service's category and filter pools:
exact re-scoring, the photo's own copy, grouping), plain, within the photo's category, with a
metadata filter and grouped by product. Counted: queries whose top-10 ids are identical, and
those identical up to ties (where the ids differ, the two engines' exact scores at that place are
equal within TIE_EPS: compare_top). Each photo is drawn from its own seed ([seed, item]);
`--resume` goes on from the photos an earlier run with the same settings compared (its state is
kept under .cache/bench/milvus every 50 photos), so 1,000 photos may be compared in several runs.

latency: synthetic L2-normalised vectors (`--dim`, clustered: 1,000 centres plus noise), indexed by
the rule of index.catalog.choose in FAISS and by index.scale.milvus.milvus_index_choice in Milvus Lite, at each
size; single queries (new noisy copies of items), p50 / p99 of the engine's own search call
(FAISS in this process; Milvus Lite through pymilvus and its in-process gRPC server), and recall@10
against exact search. At 10^6 the rule's HNSW takes too long to build on a 2-core machine (twice),
so both engines get the same IVF_FLAT there (`--ivf-from`). Fewer queries at 10^6 (`--big-queries`):
Milvus Lite checks every row of the collection in Python on each query.

Each part writes OUT/<part>.json; OUT/report.md is made from the parts there are (`--part report`
makes it again, e.g. from the figures an equality run stopped early saved).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

# One core for both engines: BLAS (numpy's re-scoring products) too, set before numpy loads it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.grouped_search import augmented  # noqa: E402
from benchmarks.reporting import write_report  # noqa: E402
from index.catalog.loaded import Catalog  # noqa: E402
from index.search.filters import metadata_filter  # noqa: E402
from index.search.grouping import rank_results  # noqa: E402
from index.catalog.choose import choose_index  # noqa: E402
from index.importers import load_fashion_mnist_arrays  # noqa: E402
from index.scale.milvus import VECTOR_FIELD, close_connections, milvus_index_choice  # noqa: E402
from index.search.service import SearchService  # noqa: E402

CATALOG, MODEL = Path("catalogs/fashion-mnist-test"), Path("models/coinsp-fmnist.pt")
WORK = Path(".cache/bench/milvus")
FILTER = "fine_label=0 OR fine_label=2 OR fine_label=4 OR fine_label=6 OR fine_label=7"
K = 10


# ----------------------------------------------------------------------------- equality

TIE_EPS = 1e-6  # cosines this close are a tie (float32 rounding of the same exact re-scoring)


def compare_top(a, b, eps: float = TIE_EPS) -> str:
    """How two ranked result frames (ids and exact scores, best first) compare: "identical" (same ids
    in the same order), "ties" (the ids differ only at places where both engines' scores are equal
    within eps, i.e. items of equal score listed in another order or another of equally scored
    items at the cut) or "different" (another length, or a place where the scores differ: one
    engine missed an item the other ranked above what it showed).

    Both engines' scores are exact cosines from the folder's stored vectors (index.search.algorithm
    re-scores every candidate), so a place where the ids differ and the scores agree is a tie
    between two items, never an approximation hiding a miss: had an engine missed a better item,
    its scores from that place on would be lower."""
    ids_a, ids_b = a["id"].to_numpy(), b["id"].to_numpy()
    if len(ids_a) != len(ids_b):
        return "different"
    if np.array_equal(ids_a, ids_b):
        return "identical"
    differ = ids_a != ids_b
    gap = np.abs(a["score"].to_numpy(np.float64)[differ] - b["score"].to_numpy(np.float64)[differ])
    return "ties" if float(gap.max()) <= eps else "different"


def equality(queries: int, seed: int, catalog: Path = CATALOG, model: Path = MODEL, save=lambda result: None,
             state_file: Path | None = None) -> dict:
    """The comparison; `save` receives the figures so far every 50 photos (a run cut short still
    reports how many photos it compared). With `state_file`, what was compared is kept there every
    50 photos and a later run with the same settings goes on from it (each photo is drawn from its
    own seed, so the photos do not depend on where a run started)."""
    db = WORK / "equality.db"  # kept between runs: a collection in step with the catalog is not filled again
    faiss_service = SearchService(catalog, model)
    started = time.perf_counter()
    served = Catalog.load(catalog, backend=f"milvus-lite:{db}")
    sync = served.backend.sync(served)
    milvus_service = SearchService.from_parts(served, faiss_service.embedder, faiss_service.categories)
    images, _ = load_fashion_mnist_arrays("test")
    items = np.sort(np.random.default_rng(seed).choice(len(faiss_service.catalog), size=queries, replace=False))
    metadata = faiss_service.catalog.metadata
    flt = metadata_filter(FILTER, metadata.columns)
    modes = {"plain": {}, "category": {"category": None}, "metadata filter": {"filter": flt},
             "grouped by product": {"group_by": "product_id"}}
    settings = {"catalog": str(catalog), "version": faiss_service.catalog.info.version, "queries": int(queries),
                "seed": seed, "filter": FILTER, "tie_eps": TIE_EPS}
    state = {"settings": settings, "done": 0, "seconds": 0.0,
             "outcome": {mode: {"identical": 0, "ties": 0, "different": 0} for mode in modes},
             "scores_differ": {mode: 0.0 for mode in modes}, "examples": {mode: [] for mode in modes},
             "times": {mode: {"faiss": [], "milvus": []} for mode in modes}}
    if state_file is not None and state_file.is_file():
        kept = json.loads(state_file.read_text())
        if kept.get("settings") == settings:
            state = kept
            print(f"equality: going on after {state['done']} photos ({state_file})", flush=True)
    embedder = faiss_service.embedder
    result = None
    for n in range(state["done"], queries):
        item = items[n]
        row = int(np.flatnonzero(faiss_service.catalog.ids == item)[0])
        rng = np.random.default_rng([seed, int(item)])  # this photo's own draw
        photo = augmented(images[int(str(metadata["path"].iat[row])[-9:-4])], rng).convert("RGB")
        # The photo and its mirror image embedded once, as SearchService.search embeds them; each
        # mode then ranks them on both engines as SearchService.search does (index.search.grouping).
        view = embedder.preprocessing.to_uint8(photo, None)
        vectors = embedder.vectors(embedder.features_uint8(torch.from_numpy(np.stack([view, view[:, :, ::-1]]))))
        for mode, options in modes.items():
            shown = {}
            for engine, service in (("faiss", faiss_service), ("milvus", milvus_service)):
                pool = None
                if "category" in options:
                    pool = service.catalog.category_pool(str(metadata["category"].iat[row]))
                elif "filter" in options:
                    found = service.filter_pool(options["filter"])
                    pool = (found.rows, found.selector)
                t = time.perf_counter()
                shown[engine] = rank_results(service.catalog, vectors, K, pool=pool, mark_copies=True,
                                             group_by=options.get("group_by")).frame
                state["times"][mode][engine].append(time.perf_counter() - t)
            a, b = shown["faiss"], shown["milvus"]
            outcome = compare_top(a, b)
            state["outcome"][mode][outcome] += 1
            if outcome != "identical" and len(state["examples"][mode]) < 5:
                state["examples"][mode].append({"item": int(item), "outcome": outcome,
                                                "faiss": [[int(i), float(s)] for i, s in zip(a["id"], a["score"])],
                                                "milvus": [[int(i), float(s)] for i, s in zip(b["id"], b["score"])]})
            if len(a) == len(b):
                same = a["id"].to_numpy() == b["id"].to_numpy()
                difference = np.abs(a["score"].to_numpy() - b["score"].to_numpy())[same].max(initial=0)
                state["scores_differ"][mode] = max(state["scores_differ"][mode], float(difference))
        if (n + 1) % 50 == 0 or n + 1 == queries:
            state["done"] = n + 1
            state["seconds"] = round(state["seconds"] + time.perf_counter() - started, 1)
            started = time.perf_counter()
            if state_file is not None:
                state_file.write_text(json.dumps(state) + "\n")
            print(f"equality: {n + 1}/{queries} photos", flush=True)
            result = summary(state, faiss_service.catalog, sync.summary())
            save(result)
    close_connections()
    return result if result is not None else summary(state, faiss_service.catalog, sync.summary())


def summary(state: dict, catalog, sync: str) -> dict:
    done, settings = state["done"], state["settings"]
    modes = {}
    for mode, counts in state["outcome"].items():
        modes[mode] = {"identical_top10": counts["identical"] / max(done, 1),
                       "identical_or_ties_top10": (counts["identical"] + counts["ties"]) / max(done, 1),
                       "counts": counts, "max_score_difference": state["scores_differ"][mode],
                       "search_ms_p50": {e: 1000 * float(np.median(t)) if t else None
                                         for e, t in state["times"][mode].items()},
                       "examples": state["examples"][mode]}
    return {"catalog": settings["catalog"], "version": settings["version"], "items": len(catalog),
            "dim": catalog.dim, "faiss_index": catalog.info.index["factory"], "milvus_sync": sync,
            "queries": done, "queries_asked": settings["queries"], "seed": settings["seed"],
            "filter": settings["filter"], "tie_eps": settings["tie_eps"], "modes": modes,
            "seconds": state["seconds"], "load_average_1m": round(os.getloadavg()[0], 1)}


# ----------------------------------------------------------------------------- latency

def clustered(n: int, d: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 65_536):
        m = min(65_536, n - start)
        block = centres[rng.integers(0, len(centres), m)] + rng.normal(0, 0.35 / np.sqrt(d) * 4, (m, d))
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def ivf_lists(n: int) -> int:
    """About 4 * sqrt(n) lists, a power of two (index.catalog.choose's rule), the same for both engines."""
    return int(2 ** round(np.log2(4 * np.sqrt(n))))


def percentiles(seconds: list[float], cpu_seconds: list[float] | None = None) -> dict:
    """p50 / p99 of wall-clock time, and of the process's CPU time where given (time.process_time: on a
    shared machine what a query costs, without the waits for a core)."""
    ms = 1000 * np.asarray(seconds)
    out = {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}
    if cpu_seconds is not None:
        cpu = 1000 * np.asarray(cpu_seconds)
        out.update(cpu_p50_ms=round(float(np.percentile(cpu, 50)), 3), cpu_p99_ms=round(float(np.percentile(cpu, 99)), 3))
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)]))


def faiss_engine(vectors: np.ndarray, ivf: bool) -> tuple[dict, object]:
    n, d = vectors.shape
    choice = choose_index(n, d)
    factory, params = choice.factory, dict(choice.params)
    if ivf:
        factory, params = f"IVF{ivf_lists(n)},Flat", {"nprobe": 16}
    started = time.perf_counter()
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors[np.random.default_rng(0).choice(n, min(n, 256 * 4096), replace=False)])
    index.add(vectors)
    build = time.perf_counter() - started
    if "efSearch" in params:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", params["efSearch"])
    if "nprobe" in params:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", params["nprobe"])
    return {"index": factory, "search": params, "build_s": round(build, 1)}, index


def milvus_engine(vectors: np.ndarray, ivf: bool, db: Path) -> tuple[dict, object]:
    from pymilvus import DataType, MilvusClient

    n, d = vectors.shape
    choice = milvus_index_choice(n, d)
    index_type, build_params, search = choice.index_type, choice.build, choice.search
    if ivf:
        index_type, build_params, search = "IVF_FLAT", {"nlist": ivf_lists(n)}, {"nprobe": 16}
    shutil.rmtree(db, ignore_errors=True)
    client = MilvusClient(str(db))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=d)
    client.create_collection("bench", schema=schema)
    started = time.perf_counter()
    per = max(1, (16 << 20) // (4 * d))
    for start in range(0, n, per):
        client.insert("bench", [{"id": i, VECTOR_FIELD: vectors[i]} for i in range(start, min(n, start + per))])
    client.flush("bench")
    inserted = time.perf_counter() - started
    params = client.prepare_index_params()
    params.add_index(VECTOR_FIELD, index_type=index_type, metric_type="IP", params=build_params)
    client.create_index("bench", params)
    client.load_collection("bench")
    build = time.perf_counter() - started
    return {"index": index_type, "build_params": build_params, "search": search, "insert_s": round(inserted, 1),
            "build_s": round(build, 1)}, client


def latency(sizes: list[int], d: int, queries: int, big_queries: int, ivf_from: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = []
    for n in sizes:
        started = time.perf_counter()
        vectors = clustered(n, d, np.random.default_rng(seed + n), centres)
        q = queries if n < 1_000_000 else big_queries
        picks = np.random.default_rng(seed + 1).choice(n, q, replace=False)
        noise = np.random.default_rng(seed + 2).normal(0, 0.1 / np.sqrt(d), (q, d)).astype(np.float32)
        query = vectors[picks] + noise
        query /= np.linalg.norm(query, axis=1, keepdims=True)
        _, truth = faiss.knn(query, vectors, K, metric=faiss.METRIC_INNER_PRODUCT)
        ivf = n >= ivf_from
        faiss_record, index = faiss_engine(vectors, ivf)
        print(f"latency {n:,}: FAISS {faiss_record}", flush=True)
        found, took, cpu = [], [], []
        for v in query:
            t, c = time.perf_counter(), time.process_time()
            _, ids = index.search(v[None], K)
            took.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            found.append(ids[0])
        faiss_record.update(percentiles(took, cpu), recall_at_10=round(recall(np.asarray(found), truth), 4))
        del index
        milvus_record, client = milvus_engine(vectors, ivf, WORK / f"latency-{n}.db")
        print(f"latency {n:,}: Milvus Lite {milvus_record}", flush=True)
        found, took, cpu = [], [], []
        for v in query:
            t, c = time.perf_counter(), time.process_time()
            hits = client.search("bench", data=[v], limit=K, output_fields=[], anns_field=VECTOR_FIELD,
                                 search_params={"metric_type": "IP", "params": milvus_record["search"]})
            took.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            found.append([int(h["id"]) for h in hits[0]])
        milvus_record.update(percentiles(took, cpu), recall_at_10=round(recall(np.asarray(found), truth), 4))
        client.close()
        close_connections()
        shutil.rmtree(WORK / f"latency-{n}.db", ignore_errors=True)
        rows.append({"items": n, "dim": d, "queries": int(q), "faiss": faiss_record, "milvus_lite": milvus_record,
                     "seconds": round(time.perf_counter() - started, 1),
                     "load_average_1m": round(os.getloadavg()[0], 1)})
        print(json.dumps(rows[-1]), flush=True)
    return {"dim": d, "seed": seed, "sizes": rows}


# ----------------------------------------------------------------------------- report

def markdown(parts: dict) -> str:
    lines = ["# The catalog on Milvus Lite against FAISS", "",
             "Made by `python -m benchmarks.milvus_bench` (see its docstring) on the 2-core development machine "
             "while other work shared it (its load average at each part's end is in the JSON); one core for "
             "both engines (FAISS's OpenMP threads 1; Milvus Lite searches with FAISS inside this process). "
             "Milvus Lite is a pure-Python engine: its times are not those of a Milvus server or cluster "
             "(docs/scale.md section 4).", ""]
    eq = parts.get("equality")
    if eq:
        lines += ["## Same results", "",
                  f"{eq['queries']:,} new photos (of {eq.get('queries_asked', eq['queries']):,} asked; seed {eq['seed']}) "
                  f"of items of `{eq['catalog']}` (version {eq.get('version', '?')}, {eq['items']:,} items, "
                  f"{eq['dim']}-d, FAISS index {eq['faiss_index']}), embedded once each and ranked on both engines as "
                  f"`SearchService.search` ranks them (`index.search.grouping.rank_results`); filter `{eq['filter']}`. "
                  f"{eq['milvus_sync']}.", "",
                  "Identical: the same ids in the same order. Up to ties: where the ids differ, both engines' "
                  f"scores at that place are equal within {eq.get('tie_eps', 0):.0e} (each engine's scores are "
                  "exact cosines re-scored from the folder's vectors, so a missed better item would show as a "
                  "lower score from its place on, never as an equal one); different: any other case.", "",
                  "| search | identical top-10 | identical up to ties | identical / ties / different | "
                  "largest score difference (same id) | search p50 FAISS / Milvus Lite |",
                  "|---|---:|---:|---:|---:|---:|"]
        for mode, r in eq["modes"].items():
            c = r.get("counts", {})
            both = r.get("identical_or_ties_top10", r["identical_top10"])
            lines.append(f"| {mode} | {100 * r['identical_top10']:.1f}% | {100 * both:.1f}% | "
                         f"{c.get('identical', '-')} / {c.get('ties', '-')} / {c.get('different', '-')} | "
                         f"{r['max_score_difference']:.1e} | "
                         f"{r['search_ms_p50']['faiss']:.1f} / {r['search_ms_p50']['milvus']:.1f} ms |")
        lines.append("")
    lat = parts.get("latency")
    if lat:
        lines += ["## Query latency and recall", "",
                  "Synthetic clustered unit vectors of the dims given; one query at a time; the engine's own search "
                  "call (no re-scoring); recall@10 against exact search. p50 / p99 of wall-clock time, and of the "
                  "process's CPU time where measured (`time.process_time`, both engines in this process: what a "
                  "query costs without the waits for a core on a shared machine); the load average at the end of "
                  "each size is in the JSON.", "",
                  "| items | dims | engine | index (search params) | build | p50 wall | p99 wall | p50 / p99 CPU | "
                  "recall@10 | queries |",
                  "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for row in lat["sizes"]:
            for name, key in (("FAISS", "faiss"), ("Milvus Lite", "milvus_lite")):
                r = row[key]
                cpu = f"{r['cpu_p50_ms']:.2f} / {r['cpu_p99_ms']:.2f} ms" if "cpu_p50_ms" in r else "-"
                lines.append(f"| {row['items']:,} | {row['dim']} | {name} | {r['index']} {r['search']} | {r['build_s']} s | "
                             f"{r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {cpu} | {r['recall_at_10']:.3f} | "
                             f"{row['queries']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.milvus_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "equality", "latency", "report"), default="all",
                        help="report: write OUT/report.md again from the parts' JSON (a run stopped early)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--big-queries", type=int, default=30, help="queries at 10^6 items and more")
    parser.add_argument("--ivf-from", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/milvus"))
    parser.add_argument("--catalog", type=Path, default=CATALOG, help="equality: the catalog folder")
    parser.add_argument("--model", type=Path, default=MODEL, help="equality: its model")
    parser.add_argument("--resume", action="store_true",
                        help="equality: go on from the photos an earlier run with the same settings compared")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "equality"):
        state = WORK / "equality-state.json"
        if not args.resume:
            state.unlink(missing_ok=True)
        equality(args.queries, args.seed, args.catalog, args.model, state_file=state,
                 save=lambda result: (args.out / "equality.json").write_text(json.dumps(result, indent=2) + "\n"))
    if args.part in ("all", "latency"):
        result = latency([int(s) for s in args.sizes.split(",")], args.dim, args.latency_queries, args.big_queries,
                         args.ivf_from, args.seed)
        previous = args.out / "latency.json"  # rows of other sizes (or dims) measured by an earlier run stay
        if previous.is_file():
            kept = [r for r in json.loads(previous.read_text())["sizes"]
                    if (r["items"], r["dim"]) not in {(row["items"], row["dim"]) for row in result["sizes"]}]
            result["sizes"] = sorted(kept + result["sizes"], key=lambda r: (r["dim"], r["items"]))
        previous.write_text(json.dumps(result, indent=2) + "\n")
    parts = {p: json.loads((args.out / f"{p}.json").read_text()) for p in ("equality", "latency")
             if (args.out / f"{p}.json").is_file()}
    write_report(args.out, "report", parts, markdown(parts))
    return 0


if __name__ == "__main__":
    faiss.omp_set_num_threads(1)  # both engines (Milvus Lite searches with FAISS in this process) on one core
    raise SystemExit(main())
