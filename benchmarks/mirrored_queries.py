"""Does a photo facing the other way find its product? `python -m benchmarks.mirrored_queries`

A catalog's photos usually share one orientation (Fashion-MNIST's shoes all point left); a
shopper photographs a shoe facing either way. Every sampled catalog photo queries its catalog
through the product's search path (index.search.service.SearchService.search) as it is and mirrored,
with the search's mirror view on (the default: each item scored by the better of the photo and
its mirror image) and off; the photo's own catalog item is left out of its results (product R@1
over product_id, leave-one-out). Also the search time per query, both ways.

The default was chosen on the held-out catalog (10,000 Fashion-MNIST training photos,
`python -m benchmarks.rerank` builds it); the default catalog is reported beside it.
Writes OUT/mirrored-queries.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import ImageOps  # noqa: E402

from benchmarks.reporting import write_report  # noqa: E402
from embedder.files import markdown_table  # noqa: E402
from embedder.images import decode_image  # noqa: E402
from index.search.service import SearchService  # noqa: E402

CATALOGS = ("catalogs/rerank-heldout-fmnist-train", "catalogs/fashion-mnist-test")


def measure(folder: str, model: str, items: int, seed: int = 0) -> dict:
    service = SearchService(folder, model)
    metadata = service.catalog.metadata
    picks = np.sort(np.random.default_rng(seed).choice(len(metadata), min(items, len(metadata)), replace=False))
    labels = metadata["product_id"].astype(str).to_numpy()
    found = {(photo, mirror): 0 for photo in ("as catalogued", "mirrored") for mirror in (True, False)}
    seconds = {mirror: [] for mirror in (True, False)}
    for row in picks:
        image = decode_image(metadata["image_path"].iloc[row])
        own = int(metadata["id"].iloc[row])
        for photo, query in (("as catalogued", image), ("mirrored", ImageOps.mirror(image))):
            for mirror in (True, False):
                started = time.perf_counter()
                frame = service.search(query, k=2, mirror=mirror).frame
                seconds[mirror].append(time.perf_counter() - started)
                first = frame[frame["id"] != own].iloc[0]
                found[(photo, mirror)] += int(str(first["product_id"]) == labels[row])
    return {"catalog": folder, "items": len(picks),
            "r1": {f"{photo}, mirror view {'on' if mirror else 'off'}": hits / len(picks)
                   for (photo, mirror), hits in found.items()},
            "search_ms_p50": {f"mirror view {'on' if m else 'off'}": float(np.median(s) * 1000) for m, s in seconds.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mirrored_queries", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/coinsp-fmnist.pt")
    parser.add_argument("--catalog", action="append", help=f"default: {' and '.join(CATALOGS)}")
    parser.add_argument("--items", type=int, default=2000, help="catalog photos sampled per catalog")
    parser.add_argument("--out", type=Path, default=Path("reports/mirrored-queries"))
    args = parser.parse_args(argv)
    results = []
    for folder in args.catalog or CATALOGS:
        results.append(measure(folder, args.model, args.items))
        print(json.dumps(results[-1]), flush=True)
    write_report(args.out, "mirrored-queries", results, markdown(results))
    return 0


def markdown(results: list[dict]) -> str:
    columns = list(results[0]["r1"])
    table = markdown_table(["catalog", "photos", *columns, "search ms p50, on / off"],
                           [[r["catalog"], str(r["items"]), *(f"{r['r1'][c]:.4f}" for c in columns),
                             " / ".join(f"{v:.1f}" for v in r["search_ms_p50"].values())] for r in results])
    return ("# Photos facing the other way (`python -m benchmarks.mirrored_queries`)\n\n"
            "Product R@1, leave-one-out: sampled catalog photos query their catalog through the search service, "
            "as catalogued and mirrored, with the mirror view on (the default) and off. Search time: the whole "
            "search of one photo (decoding aside), one thread.\n\n" + table + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
