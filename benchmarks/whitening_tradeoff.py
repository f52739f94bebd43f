"""What PCA whitening costs beside what it gains: shoppers' photos and copies of a catalog photo.

    python -m benchmarks.whitening_tradeoff [--out reports/rerank] [--items 400]

`python -m benchmarks.rerank` shows whitening (index.quality.rerank.Whitening) raising the catalog's own
leave-one-out R@1. Whitening divides each principal direction by its spread, so directions in
which catalog photos hardly differ (small shifts, compression noise) gain weight. This measures
what that does to the product's other jobs, for each whitening fitted on the held-out catalog's
vectors (10,000 Fashion-MNIST training photos, no labels), against plain cosine:

- shoppers' photos: the held-out rendered photos of `benchmarks.shopper_photos --tune` (seed 777,
  other items than its report's) query the default catalog, fine R@1 for the native 28-px items,
  a plain light backdrop, a cluttered one (automatic crop) and the true box as the query region;
- copies: 500 catalog photos re-encoded (JPEG 90 and 70), upscaled 4x as a JPEG, shifted one
  pixel; the cosine of each copy to its original, and the share at or above the thresholds the
  product uses for "the same photo" (0.995) and near-duplicates (0.98, 0.95).

Writes OUT/whitening-tradeoff.md and .json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import shopper_photos as shoppers  # noqa: E402
from benchmarks.rerank import HELD_OUT, TEST, ensure, load  # noqa: E402
from embedder.embed import Embedder  # noqa: E402
from benchmarks.reporting import write_report  # noqa: E402
from embedder.files import markdown_table  # noqa: E402
from embedder.images import decode_image  # noqa: E402
from index.catalog.loaded import Catalog  # noqa: E402
from index.quality.evaluation import recall_at_k  # noqa: E402
from index.importers import load_fashion_mnist_arrays  # noqa: E402
from index.quality.rerank import Whitening  # noqa: E402

SETTINGS = [(None, None), (256, 0.25), (256, 0.5), (512, 0.25), (512, 0.5), (1024, 0.5)]  # (None, None): plain
THRESHOLDS = (0.995, 0.98, 0.95)
COPIES = 500


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return decode_image(buffer.getvalue())


def copies_of(images: list[Image.Image]) -> dict[str, list[Image.Image]]:
    return {"JPEG 90": [_jpeg(im, 90) for im in images],
            "JPEG 70": [_jpeg(im, 70) for im in images],
            "4x upscaled, JPEG 85": [_jpeg(im.resize((im.width * 4, im.height * 4), Image.BICUBIC), 85) for im in images],
            "shifted 1 px": [Image.fromarray(np.roll(np.asarray(im), 1, axis=1)) for im in images]}


def shopper_queries(embedder: Embedder, items: int, catalog: Catalog) -> tuple[dict[str, np.ndarray], np.ndarray]:
    train_images, train_labels = load_fashion_mnist_arrays("train")
    picks = shoppers.tuning_items(items)
    chosen = train_images[picks]
    fine = np.array([shoppers.FINE_NAMES[i] for i in train_labels[picks]])
    plain = shoppers.render_set(chosen, shoppers.TUNING_SEED, False)
    cluttered = shoppers.render_set(chosen, shoppers.TUNING_SEED, True)
    queries = {"native 28 px": shoppers.embed_all(embedder, [Image.fromarray(i).convert("RGB") for i in chosen]),
               "plain backdrop": shoppers.embed_all(embedder, [p.image for p in plain]),
               "cluttered, automatic crop": shoppers.embed_all(embedder, [p.image for p in cluttered]),
               "cluttered, true box": shoppers.embed_all(embedder, [p.image for p in cluttered],
                                                         [p.box for p in cluttered])}
    return queries, fine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.whitening_tradeoff", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/rerank"))
    parser.add_argument("--model", default="models/coinsp-fmnist.pt")
    parser.add_argument("--items", type=int, default=400, help="held-out shopper photos per backdrop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for manifest, folder in (HELD_OUT, TEST):
        ensure(manifest, folder, args.model)
    held_vectors, _, fingerprint = load(HELD_OUT[1])
    catalog = Catalog.load(TEST[1])
    gallery = np.asarray(catalog.embeddings, np.float32)
    gallery_labels = catalog.metadata["product_id"].astype(str).to_numpy()
    embedder = Embedder.from_checkpoint(args.model)
    queries, fine = shopper_queries(embedder, args.items, catalog)
    originals = [decode_image(p) for p in catalog.metadata["image_path"][:COPIES]]
    copy_vectors = {name: embedder.embed_images(images) for name, images in copies_of(originals).items()}

    rows = []
    for dims, power in SETTINGS:
        whitening = None if power is None else Whitening.fit(held_vectors, dims, power)
        project = (lambda x: x) if whitening is None else whitening.apply
        row = {"dims": dims, "power": power, "catalog_loo_r1": recall_at_k(project(gallery), gallery_labels, ks=(1,)).overall[1]}
        projected_gallery = project(gallery)
        row["shoppers"] = {name: recall_at_k(project(v), fine, projected_gallery, gallery_labels, ks=(1,)).overall[1]
                           for name, v in queries.items()}
        row["copies"] = {}
        for name, vectors in copy_vectors.items():
            cosines = (project(gallery[:COPIES]) * project(vectors)).sum(axis=1)
            row["copies"][name] = {"median": float(np.median(cosines)), "p5": float(np.quantile(cosines, 0.05)),
                                   **{f">={t}": float((cosines >= t).mean()) for t in THRESHOLDS}}
        rows.append(row)
        print(json.dumps(row), flush=True)

    result = {"model_fingerprint": fingerprint, "fitted_on": HELD_OUT[1], "shopper_items": args.items,
              "shopper_seed": shoppers.TUNING_SEED, "copies": COPIES, "rows": rows}
    write_report(args.out, "whitening-tradeoff", result, markdown(result))
    return 0


def markdown(result: dict) -> str:
    def name(row):
        return "plain cosine" if row["power"] is None else f"whitening dims={row['dims'] or 'all'}, power={row['power']:g}"
    shopper_names = list(result["rows"][0]["shoppers"])
    shopper_table = markdown_table(
        ["vectors", "catalog leave-one-out R@1", *shopper_names],
        [[name(r), f"{r['catalog_loo_r1']:.4f}", *(f"{r['shoppers'][s]:.3f}" for s in shopper_names)]
         for r in result["rows"]])
    copy_names = list(result["rows"][0]["copies"])
    copy_table = markdown_table(
        ["vectors", *(f"{c}: median / share >= 0.995 / >= 0.98" for c in copy_names)],
        [[name(r), *(f"{r['copies'][c]['median']:.3f} / {r['copies'][c]['>=0.995']:.2f} / {r['copies'][c]['>=0.98']:.2f}"
                     for c in copy_names)] for r in result["rows"]])
    return (f"# What whitening costs: shoppers' photos and copies (`python -m benchmarks.whitening_tradeoff`)\n\n"
            f"Model fingerprint {result['model_fingerprint']}; each whitening fitted on {result['fitted_on']}'s vectors "
            f"(no labels). Shoppers' photos: {result['shopper_items']} held-out items per backdrop (seed "
            f"{result['shopper_seed']}, the tuning sample of `benchmarks.shopper_photos`), fine R@1 against the "
            "default catalog. Copies: the first "
            f"{result['copies']} catalog photos altered, cosine of each copy to its original.\n\n"
            f"{shopper_table}\n\n{copy_table}\n")


if __name__ == "__main__":
    raise SystemExit(main())
