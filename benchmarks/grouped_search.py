"""Grouped search over a catalog holding several photos per product: does a search grouped by
product return k distinct products, and what does the grouping cost in latency?

    python -m benchmarks.grouped_search [--items 2000] [--photos 5] [--queries 500] [--k 10]
                                        [--model models/coinsp-fmnist.pt] [--out reports/grouped-search]

The catalog: a seeded sample of Fashion-MNIST *test* items, each photographed `--photos` times
(the item itself and copies shifted by up to 2 px, rotated up to 8 degrees and brightened or
darkened up to 15%), one product_id per item; embedded with the kept model, built by
index.catalog.operations.build_catalog under data/ and catalogs/ (reused when already built). Queries are
catalog photos searched by id (CatalogItem: the photo itself left out, no embedding), the same
queries grouped (`group_by="product_id"`) and not; the latency is the service's search time
(Results.timing.search_s), queries interleaved so both modes meet the same machine load.
Writes OUT/report.md, OUT/report.json and OUT/latency.csv.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from embedder.files import atomic_path
from index.importers import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays
from index.catalog.operations import build_catalog
from index.search.service import CatalogItem, SearchService
from index.catalog.store import INFO_FILE


def augmented(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Another photo of the same item: shifted, slightly rotated, lighter or darker."""
    photo = Image.fromarray(image, mode="L")
    photo = photo.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR,
                         translate=tuple(int(v) for v in rng.integers(-2, 3, 2)), fillcolor=0)
    pixels = np.asarray(photo, np.float32) * float(rng.uniform(0.85, 1.15))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def make_catalog_photos(folder: Path, items: int, photos: int, seed: int) -> Path:
    """`items` sampled test items x `photos` photos each, and their manifest (written once)."""
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    images, labels = load_fashion_mnist_arrays("test")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=items, replace=False))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for item in chosen:
        for view in range(photos):
            photo = Image.fromarray(images[item], mode="L") if view == 0 else augmented(images[item], rng)
            path = f"images/{item:05d}-{view}.png"
            photo.save(folder / path)
            rows.append({"path": path, "category": FASHION_MNIST_CLASSES[labels[item]],
                         "product_id": f"item-{item:05d}", "view": view})
    with atomic_path(manifest) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return manifest


def percentile_ms(values_ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values_ms), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grouped_search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=Path("models/coinsp-fmnist.pt"))
    parser.add_argument("--out", type=Path, default=Path("reports/grouped-search"))
    args = parser.parse_args(argv)

    name = f"grouped-fmnist-{args.items}x{args.photos}"
    manifest = make_catalog_photos(Path("data") / name, args.items, args.photos, args.seed)
    folder = Path("catalogs") / name
    build_s = None
    if not (folder / INFO_FILE).is_file():
        started = time.perf_counter()
        build_catalog(manifest, args.model, folder, progress=True)
        build_s = time.perf_counter() - started
    service = SearchService(folder, args.model)
    catalog = service.catalog
    products = catalog.metadata.set_index("id")["product_id"]
    queries = np.random.default_rng(args.seed + 1).choice(catalog.ids, size=min(args.queries, len(catalog)),
                                                           replace=False)
    for query in queries[:20]:  # warm-up: index loaded, result columns built, caches filled
        service.search(CatalogItem(int(query)), k=args.k)
        service.search(CatalogItem(int(query)), k=args.k, group_by="product_id")

    rows = []
    for query in queries:
        for grouped in ((False, True) if len(rows) % 4 == 0 else (True, False)):  # alternate which goes first
            found = service.search(CatalogItem(int(query)), k=args.k, group_by="product_id" if grouped else None)
            ids = found.frame["id"].tolist()
            rows.append({"query": int(query), "grouped": grouped, "search_ms": 1000 * found.timing.search_s,
                         "results": len(ids), "distinct_products": len({products[i] for i in ids}),
                         "own_product_at_1": products[ids[0]] == products[int(query)] if ids else False})
    table = pd.DataFrame(rows)
    grouped, plain = table[table["grouped"]], table[~table["grouped"]]
    summary = {
        "catalog": {"folder": str(folder), "photos": len(catalog), "products": int(products.nunique()),
                    "photos_per_product": args.photos, "index": catalog.choice.factory,
                    "built_now_seconds": None if build_s is None else round(build_s, 1)},
        "queries": len(queries), "k": args.k,
        "grouped": {"p50_ms": percentile_ms(grouped["search_ms"].tolist(), 50),
                    "p95_ms": percentile_ms(grouped["search_ms"].tolist(), 95),
                    "queries_with_k_distinct_products": int((grouped["distinct_products"] == args.k).sum()),
                    "mean_distinct_products": float(grouped["distinct_products"].mean()),
                    "own_product_at_1": float(grouped["own_product_at_1"].mean())},
        "ungrouped": {"p50_ms": percentile_ms(plain["search_ms"].tolist(), 50),
                      "p95_ms": percentile_ms(plain["search_ms"].tolist(), 95),
                      "mean_distinct_products": float(plain["distinct_products"].mean()),
                      "own_product_at_1": float(plain["own_product_at_1"].mean())},
    }
    summary["p50_ratio_grouped_to_ungrouped"] = summary["grouped"]["p50_ms"] / summary["ungrouped"]["p50_ms"]
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "latency.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.3f")
    with atomic_path(args.out / "report.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    g, u = summary["grouped"], summary["ungrouped"]
    report = f"""# Grouped search: one result per product

Command: `python -m benchmarks.grouped_search --items {args.items} --photos {args.photos} --queries {len(queries)} --k {args.k}`

Catalog: {len(catalog):,} photos of {summary['catalog']['products']:,} products ({args.photos} photos each: a
Fashion-MNIST test item and {args.photos - 1} shifted/rotated/re-lit copies), index `{catalog.choice.factory}`,
model `{args.model}`. {len(queries)} catalog photos searched by id (the photo itself left out), k = {args.k},
grouped by `product_id` and not, interleaved. Latency: the service's search time (no embedding).

| | p50 ms | p95 ms | distinct products in the k results (mean) | query's own product at rank 1 |
|---|---:|---:|---:|---:|
| ungrouped | {u['p50_ms']:.3f} | {u['p95_ms']:.3f} | {u['mean_distinct_products']:.3f} | {100 * u['own_product_at_1']:.1f}% |
| grouped by product | {g['p50_ms']:.3f} | {g['p95_ms']:.3f} | {g['mean_distinct_products']:.3f} | {100 * g['own_product_at_1']:.1f}% |

Grouped searches returning {args.k} distinct products: {g['queries_with_k_distinct_products']} of {len(queries)}.
p50 grouped / ungrouped: {summary['p50_ratio_grouped_to_ungrouped']:.3f} (goal: at most 2).
Measured on the shared 2-core machine (other work running beside it); per-query times in latency.csv.
"""
    with atomic_path(args.out / "report.md") as tmp:
        Path(tmp).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
