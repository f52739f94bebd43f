"""Does re-ranking without labels raise the default catalog's product R@1?

    python -m benchmarks.rerank [--out reports/rerank] [--model models/coinsp-fmnist.pt]

Settings (k neighbours, α, λ) are chosen per method on a held-out catalog of 10,000 Fashion-MNIST
TRAINING photos (data/fashion-mnist/train/manifest-holdout10k.csv); the test catalog
(catalogs/fashion-mnist-test) is measured once per method with the chosen setting. R@1 is
leave-one-out over the catalog's product_id, through index.quality.evaluation (recall_of_rankings),
each item querying a catalog that does not hold it (index.quality.rerank.leave_one_out_rankings: DBA's
augmentation of the query item's neighbours is recomputed without it). The leaky DBA figure
(the stored augmentation used as it is) is printed beside it to show what that leak is worth.
Both catalogs are built or brought up to date with the model first (`python -m index ensure`).
Writes OUT/rerank.md and OUT/rerank.json.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.reporting import write_report
from embedder.files import markdown_table
from index.catalog.loaded import Catalog
from index.quality.evaluation import recall_of_rankings
from index.quality.rerank import (NeighbourGraph, Reranking, Whitening, alpha_query_expansion, database_augmentation,
                                  k_reciprocal_scores, leave_one_out_rankings)

HELD_OUT = ("data/fashion-mnist/train/manifest-holdout10k.csv", "catalogs/rerank-heldout-fmnist-train")
TEST = ("data/fashion-mnist/test/manifest_store.csv", "catalogs/fashion-mnist-test")
GRID = ([Reranking("aqe", k, a) for k in (1, 2, 3, 5, 10) for a in (0.0, 3.0)]
        + [Reranking("dba", k, a) for k in (1, 2, 5, 10) for a in (0.0, 3.0)]
        + [Reranking("dba+aqe", k, 3.0) for k in (1, 2)]
        + [Reranking("kreciprocal", k, lam=lam, depth=50) for k in (10, 20, 30) for lam in (0.1, 0.3)])
WHITENING_GRID = [(dims, power) for dims in (256, 512, None) for power in (0.25, 0.5, 1.0)]  # None: every dimension
TIMED_QUERIES = 200


def ensure(manifest: str, folder: str, model: str) -> None:
    for path in (manifest,):
        if not Path(path).is_file():
            sys.exit(f"error: {path} is missing: run `python -m index import-fashion-mnist --out data/fashion-mnist "
                     "--split train` (and --split test)")
    subprocess.run([sys.executable, "-m", "index", "-q", "ensure", "--manifest", manifest, "--model", model,
                    "--out", folder], check=True)


def product_r1(vectors: np.ndarray, labels: np.ndarray, reranking: Reranking | None) -> float:
    ranked = leave_one_out_rankings(vectors, reranking, depth=1)
    report = recall_of_rankings(ranked, labels, labels, ks=(1,), query_gallery_rows=np.arange(len(vectors)))
    return report.overall[1]


def leaky_dba_r1(vectors: np.ndarray, labels: np.ndarray, reranking: Reranking) -> float:
    """DBA's stored augmentation used as it is: each query's own vector is blended into its neighbours."""
    augmented = database_augmentation(vectors, reranking.k, reranking.alpha)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(augmented)
    _, ids = index.search(vectors, 2)
    ranked = np.where(ids[:, :1] == np.arange(len(vectors))[:, None], ids[:, 1:2], ids[:, :1])
    return recall_of_rankings(ranked, labels, labels, ks=(1,), query_gallery_rows=np.arange(len(vectors))).overall[1]


def build_seconds(vectors: np.ndarray, reranking: Reranking) -> float:
    """What the option adds to building the catalog: DBA's augmentation, k-reciprocal's graph."""
    started = time.perf_counter()
    if reranking.augments_catalog:
        database_augmentation(vectors, reranking.k, reranking.alpha)
    elif reranking.method == "kreciprocal":
        NeighbourGraph.of(vectors, reranking.k)
    return time.perf_counter() - started


def query_ms(vectors: np.ndarray, reranking: Reranking | None, k: int = 10) -> float:
    """Mean milliseconds of one query's search (k results) over the catalog, one thread, with the option."""
    gallery = database_augmentation(vectors, reranking.k, reranking.alpha) if reranking and reranking.augments_catalog \
        else vectors
    graph = NeighbourGraph.of(vectors, reranking.k) if reranking and reranking.method == "kreciprocal" else None
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(gallery)
    queries = vectors[np.random.default_rng(0).choice(len(vectors), TIMED_QUERIES, replace=False)]
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    for query in queries:
        scores, ids = index.search(query[None], max(k, reranking.depth if graph else k) if reranking else k)
        if reranking and reranking.expands_query:
            top_scores, top = index.search(query[None], reranking.k)
            expanded = alpha_query_expansion(query[None], gallery[top], top_scores, reranking.alpha)
            index.search(expanded, k)
        if graph is not None:
            k_reciprocal_scores(query, ids[0], scores[0], graph, vectors, reranking.k, reranking.lam)
    faiss.omp_set_num_threads(before)
    return 1000 * (time.perf_counter() - started) / len(queries)


def load(folder: str) -> tuple[np.ndarray, np.ndarray, str]:
    catalog = Catalog.load(folder)
    return (np.asarray(catalog.embeddings, np.float32), catalog.metadata["product_id"].astype(str).to_numpy(),
            catalog.fingerprint)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rerank", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/rerank"))
    parser.add_argument("--model", default="models/coinsp-fmnist.pt")
    args = parser.parse_args(argv)
    for manifest, folder in (HELD_OUT, TEST):
        ensure(manifest, folder, args.model)
    held_vectors, held_labels, fingerprint = load(HELD_OUT[1])
    test_vectors, test_labels, test_fingerprint = load(TEST[1])
    print(f"model fingerprint {fingerprint} (test catalog {test_fingerprint})", flush=True)

    held_plain = product_r1(held_vectors, held_labels, None)
    print(f"held-out plain cosine R@1 {held_plain:.4f}", flush=True)
    sweep = []
    for reranking in GRID:
        r1 = product_r1(held_vectors, held_labels, reranking)
        sweep.append({**reranking.to_dict(), "heldout_r1": r1})
        print(f"held-out {reranking.to_dict()} R@1 {r1:.4f}", flush=True)

    test_plain = product_r1(test_vectors, test_labels, None)
    rows = [{"method": "plain cosine", "setting": "", "heldout_r1": held_plain, "test_r1": test_plain,
             "build_s": 0.0, "query_ms": query_ms(test_vectors, None)}]
    for method in ("aqe", "dba", "dba+aqe", "kreciprocal"):
        best = max((s for s in sweep if s["method"] == method), key=lambda s: s["heldout_r1"])
        reranking = Reranking.from_dict(best)
        row = {"method": method, "setting": {k: v for k, v in best.items() if k != "heldout_r1"},
               "heldout_r1": best["heldout_r1"], "test_r1": product_r1(test_vectors, test_labels, reranking),
               "build_s": build_seconds(test_vectors, reranking), "query_ms": query_ms(test_vectors, reranking)}
        if reranking.augments_catalog and not reranking.expands_query:
            row["test_r1_leaky"] = leaky_dba_r1(test_vectors, test_labels, reranking)
        rows.append(row)
        print(f"test {method} {row}", flush=True)

    whitening_sweep = []
    for dims, power in WHITENING_GRID:  # fitted on the held-out catalog's own vectors (no labels)
        r1 = product_r1(Whitening.fit(held_vectors, dims, power).apply(held_vectors), held_labels, None)
        whitening_sweep.append({"method": "whitening", "dims": dims, "power": power, "heldout_r1": r1})
        print(f"held-out whitening dims={dims} power={power} R@1 {r1:.4f}", flush=True)
    best = max(whitening_sweep, key=lambda s: s["heldout_r1"])
    started = time.perf_counter()
    own = Whitening.fit(test_vectors, best["dims"], best["power"])
    fit_s = time.perf_counter() - started
    whitened = own.apply(test_vectors)
    setting = {"method": "whitening", "dims": best["dims"], "power": best["power"]}
    rows.append({"method": "whitening (fitted on the catalog itself)", "setting": setting, "heldout_r1": best["heldout_r1"],
                 "test_r1": product_r1(whitened, test_labels, None), "build_s": fit_s,
                 "query_ms": query_ms(whitened, None)})
    other = Whitening.fit(held_vectors, best["dims"], best["power"]).apply(test_vectors)
    rows.append({"method": "whitening (fitted on the held-out catalog)", "setting": setting,
                 "heldout_r1": best["heldout_r1"], "test_r1": product_r1(other, test_labels, None), "build_s": 0.0,
                 "query_ms": query_ms(other, None)})
    print(f"test whitening {rows[-2]} / {rows[-1]}", flush=True)

    result = {"model_fingerprint": fingerprint, "heldout_catalog": HELD_OUT[1], "test_catalog": TEST[1],
              "label": "product_id", "mode": "leave-one-out", "sweep": sweep, "whitening_sweep": whitening_sweep,
              "results": rows}
    write_report(args.out, "rerank", result, markdown(result))
    return 0


def markdown(result: dict) -> str:
    def setting(s):
        if s and s["method"] == "whitening":
            return f"dims={s['dims'] or 'all'}, power={s['power']:g}"
        return "" if not s else ", ".join(f"{k}={v}" for k, v in s.items()
                                          if k in ("k", "alpha") or (s["method"] == "kreciprocal" and k in ("lam", "depth")))
    table = markdown_table(
        ["option", "setting (chosen on held-out)", "held-out R@1", "test R@1", "test R@1 leaky", "build +s", "query ms"],
        [[r["method"], setting(r["setting"]), f"{r['heldout_r1']:.4f}", f"{r['test_r1']:.4f}",
          f"{r['test_r1_leaky']:.4f}" if "test_r1_leaky" in r else "", f"{r['build_s']:.2f}", f"{r['query_ms']:.1f}"]
         for r in result["results"]])
    sweep = markdown_table(["method", "k", "alpha", "lam", "held-out R@1"],
                           [[s["method"], str(s["k"]), f"{s['alpha']:g}", f"{s['lam']:g}" if s["method"] == "kreciprocal"
                             else "", f"{s['heldout_r1']:.4f}"] for s in result["sweep"]])
    whitening = markdown_table(["dims", "power", "held-out R@1"],
                               [[str(s["dims"] or "all"), f"{s['power']:g}", f"{s['heldout_r1']:.4f}"]
                                for s in result.get("whitening_sweep", [])])
    return (f"# Re-ranking without labels: product R@1 (`python -m benchmarks.rerank`)\n\n"
            f"Model fingerprint {result['model_fingerprint']}. Leave-one-out R@1 over product_id; settings chosen "
            f"on {result['heldout_catalog']} (10,000 Fashion-MNIST training photos), reported on "
            f"{result['test_catalog']}. Each query searches a catalog that does not hold it: DBA's augmentation "
            "of the query's neighbours is recomputed without it; the leaky column uses the stored augmentation "
            "as it is (the query's own vector blended into its neighbours), which no shopper photo gets. "
            "build +s: what the option adds to building the catalog; query ms: one query, k=10, one thread, "
            f"exact search, mean of {TIMED_QUERIES}. Whitening is learned from a catalog's vectors without labels; "
            "fitted on the catalog itself, each query item has a 1/10,000 share in it (fitted on the held-out "
            "catalog, none).\n\n"
            f"{table}\n\n## Held-out sweep\n\n{sweep}\n\n## Held-out whitening sweep\n\n{whitening}\n")


if __name__ == "__main__":
    raise SystemExit(main())
