"""Do shoppers' own photos find the product? `python -m benchmarks.shopper_photos`

Fashion-MNIST *training* items (never in the default catalog) rendered as shopper photos
(benchmarks/shopper_render.py) query the default catalog (the 10,000 test photos) through the
product's search path (embedder + catalog), against the same items queried as native 28-px
images. Reports fine R@1 / R@8 (same product type) and coarse R@1 (same store category) for a
plain light backdrop, a cluttered one with the automatic crop and with the true product box as
the query region; the added latency of normalisation + crop; and the catalog's own
leave-one-out R@1 with and without the domain normalisation. `--tune` measures the
normalisation's settings on a separate held-out sample (another seed, other items).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")  # latency is quoted for one core

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks.shopper_render import render  # noqa: E402
from embedder import domain  # noqa: E402
from embedder.domain_settings import DomainSettings  # noqa: E402
from embedder.embed import Embedder  # noqa: E402
from embedder.images import decode_image  # noqa: E402
from embedder.regions import check_box  # noqa: E402
from index.catalog.loaded import Catalog  # noqa: E402
from index.quality.evaluation import recall_at_k, recall_of_rankings  # noqa: E402
from index.search.grouping import rank_results  # noqa: E402
from index.search.service import object_regions  # noqa: E402
from index.importers import load_fashion_mnist_arrays  # noqa: E402

FINE_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
REPORT_SEED, TUNING_SEED = 20260, 777


def sample_items(count: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    pool = np.arange(60_000) if exclude is None else np.setdiff1d(np.arange(60_000), exclude)
    return np.sort(np.random.default_rng(seed).choice(pool, count, replace=False))


def render_set(images: np.ndarray, seed: int, cluttered: bool, opaque: bool = False, shadow: bool = False,
               shadow_scale: float = 1.0):
    rng = np.random.default_rng(seed + (1 if cluttered else 0) + (2 if shadow else 0))
    return [render(item, rng, cluttered, opaque, shadow, shadow_scale) for item in images]


def loose_box(box, width: int, height: int, grow: float = 0.15) -> tuple[int, int, int, int]:
    """A box as a shopper draws it: the true box grown by `grow` of its size on each side, clipped to the photo."""
    x0, y0, x1, y1 = box
    dx, dy = round((x1 - x0) * grow), round((y1 - y0) * grow)
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def overlap(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def picked_thing(photo) -> tuple[int, int, int, int] | None:
    """The thing a shopper picks among those the Search page offers (index.search.service.object_regions:
    the automatic crop first, then other things of a product's size): the one that overlaps the
    product most; None (the automatic crop) when only one is offered."""
    regions = object_regions(photo.image)
    return None if len(regions) < 2 else max(regions, key=lambda r: overlap(r, photo.box))


def embed_all(embedder: Embedder, images, boxes=None, batch: int = 128) -> np.ndarray:
    boxes = boxes or [None] * len(images)
    return np.concatenate([embedder.embed_images(images[i:i + batch], boxes[i:i + batch])
                           for i in range(0, len(images), batch)])


def embed_with(embedder: Embedder, images, settings: DomainSettings, boxes=None) -> np.ndarray:
    """Queries through domain.normalise with explicit settings (tuning only)."""
    pre = embedder.preprocessing
    boxes = boxes or [None] * len(images)
    arrays = [domain.normalise(im, size=pre.size, channels=pre.channels, polarity=pre.polarity, margin=pre.margin,
                               settings=settings, region=None if box is None else check_box(box, *im.size))
              for im, box in zip(images, boxes)]
    return embedder.embed_uint8(torch.from_numpy(np.stack(arrays)))


def scores(vectors, fine, coarse, catalog: Catalog) -> dict:
    gallery = np.asarray(catalog.embeddings, np.float32)
    meta = catalog.metadata
    fine_report = recall_at_k(vectors, fine, gallery, meta["product_id"].astype(str).to_numpy(), ks=(1, 8))
    coarse_report = recall_at_k(vectors, coarse, gallery, meta["category"].astype(str).to_numpy(), ks=(1,))
    return {"fine_R@1": fine_report.overall[1], "fine_R@8": fine_report.overall[8],
            "coarse_R@1": coarse_report.overall[1], "queries": len(vectors)}


def embed_both_facings(embedder: Embedder, images, boxes=None, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Each photo prepared once, as the search service prepares it, embedded as it is and mirrored."""
    boxes = boxes or [None] * len(images)
    facing, mirrored = [], []
    for i in range(0, len(images), batch):
        views = np.stack([embedder.preprocessing.to_uint8(im, box) for im, box in zip(images[i:i + batch], boxes[i:i + batch])])
        facing.append(embedder.embed_uint8(torch.from_numpy(views)))
        mirrored.append(embedder.embed_uint8(torch.from_numpy(np.ascontiguousarray(views[..., ::-1]))))
    return np.concatenate(facing), np.concatenate(mirrored)


def scores_either_facing(views: tuple[np.ndarray, np.ndarray], fine, coarse, catalog: Catalog) -> dict:
    """As `scores`, with each catalog item scored by the better of the photo and its mirror image,
    ranked by the search's own code (index.search.grouping.rank_results), as a search does by default."""
    ranked = np.full((len(views[0]), 8), -1, np.int64)
    for i, pair in enumerate(zip(*views)):
        found = rank_results(catalog, np.stack(pair), 8).frame
        ranked[i, :len(found)] = catalog.rows_of(found["id"].to_numpy())
    meta = catalog.metadata
    fine_report = recall_of_rankings(ranked, fine, meta["product_id"].astype(str).to_numpy(), ks=(1, 8))
    coarse_report = recall_of_rankings(ranked, coarse, meta["category"].astype(str).to_numpy(), ks=(1,))
    return {"fine_R@1": fine_report.overall[1], "fine_R@8": fine_report.overall[8],
            "coarse_R@1": coarse_report.overall[1], "queries": len(views[0])}


def added_latency(embedder: Embedder, photos, repeats: int = 1) -> dict:
    """ms per photo of the domain path as a search runs it (the blank-photo check, normalisation
    and crop) minus a plain resize."""
    pre = embedder.preprocessing
    plain = replace(pre, domain=False)
    added = []
    for photo in photos:
        for _ in range(repeats):
            t0 = time.perf_counter(); plain.to_uint8(photo.image); t1 = time.perf_counter()
            domain.refuse_unusable(photo.image); pre.to_uint8(photo.image); t2 = time.perf_counter()
            added.append((t2 - t1) - (t1 - t0))
    values = np.asarray(added) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)), "photos": len(photos)}


def catalog_loo(embedder: Embedder, catalog: Catalog) -> dict:
    """The catalog's own leave-one-out fine R@1, its images embedded with and without the normalisation."""
    meta = catalog.metadata
    images = [decode_image(p) for p in meta["image_path"]]
    labels = meta["product_id"].astype(str).to_numpy()
    out = {}
    for name, pre in (("with", embedder.preprocessing), ("without", replace(embedder.preprocessing, domain=False))):
        view = Embedder(embedder.backbone, pre, precision=embedder.precision)
        vectors = embed_all(view, images, batch=512)
        out[name] = recall_at_k(vectors, labels, ks=(1, 8)).overall
        out[f"{name}_vectors"] = vectors
    changed = np.abs(out["with_vectors"] - out["without_vectors"]).max(axis=1) > 1e-3
    stored = np.abs(np.asarray(catalog.embeddings, np.float32) - out["with_vectors"]).max(axis=1) > 1e-2
    return {"R@1_with": out["with"][1], "R@1_without": out["without"][1], "R@8_with": out["with"][8],
            "R@8_without": out["without"][8], "items_changed_by_normalisation": int(changed.sum()),
            "stored_vectors_differing_from_normalised": int(stored.sum()), "items": len(labels)}


def contact_sheet(path: Path, photos, results, catalog: Catalog, truth, columns: int = 6) -> None:
    cell = 120
    sheet = Image.new("RGB", ((columns + 1) * cell, len(photos) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (photo, hits, label) in enumerate(zip(photos, results, truth)):
        thumb = photo.image.copy(); thumb.thumbnail((cell - 6, cell - 20))
        sheet.paste(thumb, (3, row * cell + 3))
        draw.text((3, row * cell + cell - 15), label[:18], fill="black")
        for col, (_, hit) in enumerate(hits.head(columns).iterrows()):
            item = decode_image(hit["image_path"]).resize((cell - 30, cell - 30), Image.NEAREST)
            x, y = (col + 1) * cell + 10, row * cell + 3
            sheet.paste(item, (x, y))
            ok = hit["product_id"] == label
            draw.rectangle((x - 2, y - 2, x + cell - 28, y + cell - 28), outline="green" if ok else "red", width=2)
            draw.text((x, y + cell - 26), f"{hit['product_id'][:10]} {hit['score']:.2f}", fill="black")
    sheet.save(path)


def run(args) -> dict:
    torch.set_num_threads(1)
    catalog = Catalog.load(args.catalog)
    embedder = Embedder.from_checkpoint(args.model)
    train_images, train_labels = load_fashion_mnist_arrays("train")
    coarse_of = dict(zip(catalog.metadata["product_id"].astype(str), catalog.metadata["category"].astype(str)))
    seed = args.seed
    # Another seed draws a second report sample: other items, never those any tuning run used.
    picks = (sample_items(args.items, seed) if seed == REPORT_SEED
             else sample_items(args.items, seed, exclude=np.union1d(sample_items(1000, REPORT_SEED), tuning_items())))
    items, fine = train_images[picks], np.array([FINE_NAMES[i] for i in train_labels[picks]])
    coarse = np.array([coarse_of[f] for f in fine])
    native = [Image.fromarray(item).convert("RGB") for item in items]
    plain_photos = render_set(items, seed, cluttered=False, opaque=args.opaque_products)
    clutter_photos = render_set(items, seed, cluttered=True, opaque=args.opaque_products)
    shadow_photos = render_set(items, seed, cluttered=False, opaque=args.opaque_products, shadow=True)
    today = Embedder(embedder.backbone, replace(embedder.preprocessing, domain=False), precision=embedder.precision)
    rows = {
        "native 28 px": scores(embed_all(embedder, native), fine, coarse, catalog),
        "plain light backdrop": scores(embed_all(embedder, [p.image for p in plain_photos]), fine, coarse, catalog),
        "plain light backdrop, the product's soft drop shadow on it": scores(
            embed_all(embedder, [p.image for p in shadow_photos]), fine, coarse, catalog),
        "cluttered, automatic crop": scores(embed_all(embedder, [p.image for p in clutter_photos]), fine, coarse, catalog),
        "cluttered, the shopper picks among the things the page offers": scores(
            embed_all(embedder, [p.image for p in clutter_photos], [picked_thing(p) for p in clutter_photos]),
            fine, coarse, catalog),
        "cluttered, true box as query region": scores(
            embed_all(embedder, [p.image for p in clutter_photos], [p.box for p in clutter_photos]), fine, coarse, catalog),
        "cluttered, loose box (the true box grown by 15% of its size on each side, clipped to the photo)": scores(
            embed_all(embedder, [p.image for p in clutter_photos], [loose_box(p.box, *p.image.size) for p in clutter_photos]),
            fine, coarse, catalog),
        "plain light backdrop, before (plain resize)": scores(embed_all(today, [p.image for p in plain_photos]), fine, coarse, catalog),
        "cluttered, before (plain resize)": scores(embed_all(today, [p.image for p in clutter_photos]), fine, coarse, catalog),
    }
    either = {  # the same queries as a search scores them by default: the photo or its mirror image
        "native 28 px": embed_both_facings(embedder, native),
        "plain light backdrop": embed_both_facings(embedder, [p.image for p in plain_photos]),
        "plain light backdrop, soft drop shadow": embed_both_facings(embedder, [p.image for p in shadow_photos]),
        "cluttered, automatic crop": embed_both_facings(embedder, [p.image for p in clutter_photos]),
        "cluttered, true box as query region": embed_both_facings(embedder, [p.image for p in clutter_photos],
                                                                  [p.box for p in clutter_photos]),
        "cluttered, loose box": embed_both_facings(embedder, [p.image for p in clutter_photos],
                                                   [loose_box(p.box, *p.image.size) for p in clutter_photos])}
    either = {name: scores_either_facing(views, fine, coarse, catalog) for name, views in either.items()}
    for table in (rows, either):
        base = table["native 28 px"]["fine_R@1"]
        for row in table.values():
            row["x_native"] = row["fine_R@1"] / base
    big = [p for p in plain_photos + clutter_photos if max(p.image.size) >= 900][:args.latency_photos]
    latency = added_latency(embedder, big)
    loo = catalog_loo(embedder, catalog) if not args.skip_catalog else None
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    sample = list(range(0, 8))
    sheet_photos = [plain_photos[i] for i in sample[:4]] + [clutter_photos[i] for i in sample[4:]]
    sheet_results = [catalog.search_frame(embedder.embed_image(p.image), 6) for p in sheet_photos]
    contact_sheet(out / "contact_sheet.png", sheet_photos, sheet_results, catalog, list(fine[sample]))
    report = {"command": "python -m benchmarks.shopper_photos " + " ".join(args.argv), "items": int(args.items),
              "renderer": "opaque products" if args.opaque_products else "see-through products (intensity as opacity)",
              "item_sample_seed": seed, "model": args.model, "catalog": args.catalog,
              "preprocessing": embedder.preprocessing.to_dict(), "settings": asdict(DomainSettings()),
              "rows": rows, "rows_either_facing": either, "added_latency_1000px": latency, "catalog_leave_one_out": loo}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = ["# Shopper photos against the default catalog", "",
             f"`{report['command']}`: {report['items']:,} Fashion-MNIST training items (seed {report['item_sample_seed']}), "
             "never in the catalog, each rendered as a shopper photo (200-1,000 px, varied aspect, scale, position, "
             "rotation up to ±10°, colour tint, dark product on a light or cluttered backdrop, JPEG 70-95; the shadow row "
             "renders the light backdrops again with the product casting a soft drop shadow: 15-45% darker, moved and "
             "blurred by 2-8% of its size) and queried "
             f"against `{report['catalog']}` with `{report['model']}`. Renderer: {report.get('renderer', 'see-through products')}.", "",
             "The normalisation's settings were chosen on a separate held-out sample (other items, seed "
             f"{TUNING_SEED}; `--tune`), never on these photos.", "",
             "| queries | fine R@1 | × native | fine R@8 | coarse R@1 |", "|---|---|---|---|---|"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row['fine_R@1']:.3f} | {row['x_native']:.3f} | {row['fine_R@8']:.3f} | {row['coarse_R@1']:.3f} |")
    if report.get("rows_either_facing"):
        lines += ["", "As a search scores them by default (each catalog item by the better of the photo and its mirror "
                  "image, ranked by the search's own code; `--no-mirror` gives the table above):", "",
                  "| queries | fine R@1 | × native | fine R@8 | coarse R@1 |", "|---|---|---|---|---|"]
        for name, row in report["rows_either_facing"].items():
            lines.append(f"| {name} | {row['fine_R@1']:.3f} | {row['x_native']:.3f} | {row['fine_R@8']:.3f} | "
                         f"{row['coarse_R@1']:.3f} |")
    lat = report["added_latency_1000px"]
    lines += ["", f"Added latency of the blank-photo check, normalisation and crop (one core, {lat['photos']} photos of 900-1,000 px, decoded): "
              f"p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms.", ""]
    loo = report["catalog_leave_one_out"]
    if loo:
        lines += [f"The catalog's own leave-one-out fine R@1 ({loo['items']:,} items): {loo['R@1_with']:.4f} with the "
                  f"normalisation, {loo['R@1_without']:.4f} without (R@8 {loo['R@8_with']:.4f} / {loo['R@8_without']:.4f}); "
                  f"the normalisation changes {loo['items_changed_by_normalisation']} items' vectors; "
                  f"{loo['stored_vectors_differing_from_normalised']} stored catalog vectors differ from the normalised ones.", ""]
    lines += ["Preprocessing: `" + json.dumps(report["preprocessing"]) + "`", "",
              "Settings: `" + json.dumps(report["settings"]) + "`", "", "![contact sheet](contact_sheet.png)", ""]
    return "\n".join(lines)


def gallery_of(catalog: Catalog, embedder: Embedder):
    """The catalog's vectors as `embedder` sees them: the stored ones when the catalog was built with
    its model, else its images re-embedded in memory (to compare models without building catalogs)."""
    if catalog.info.model_fingerprint == embedder.fingerprint:
        return catalog
    print(f"re-embedding the catalog's {len(catalog.metadata):,} images with {embedder.fingerprint} (not its model)")
    vectors = embed_all(embedder, [decode_image(p) for p in catalog.metadata["image_path"]], batch=512)
    return SimpleNamespace(embeddings=vectors, metadata=catalog.metadata)


def tuning_items(count: int | None = None) -> np.ndarray:
    """The held-out items settings are chosen on (other items than the report's); without a count, every
    item the `--tune` sizes used (300 and 600) may draw."""
    if count is not None:
        return sample_items(count, TUNING_SEED, exclude=sample_items(1000, REPORT_SEED))
    return np.union1d(tuning_items(300), tuning_items(600))


def held_out_sample(args):
    """The model, the catalog as it sees it, and the held-out items (other items and seed than the
    report's) with their product types and store categories: (embedder, catalog, items, fine, coarse)."""
    torch.set_num_threads(1)
    embedder = Embedder.from_checkpoint(args.model)
    catalog = gallery_of(Catalog.load(args.catalog), embedder)
    train_images, train_labels = load_fashion_mnist_arrays("train")
    picks = tuning_items(args.items)
    fine = np.array([FINE_NAMES[i] for i in train_labels[picks]])
    coarse_of = dict(zip(catalog.metadata["product_id"].astype(str), catalog.metadata["category"].astype(str)))
    return embedder, catalog, train_images[picks], fine, np.array([coarse_of[f] for f in fine])


def tune(args) -> None:
    """Measure candidate settings on held-out photos (other items and seed than the report's)."""
    embedder, catalog, items, fine, coarse = held_out_sample(args)
    sets = {"plain": render_set(items, TUNING_SEED, False, args.opaque_products),
            "plain, shadow": render_set(items, TUNING_SEED, False, args.opaque_products, shadow=True),
            "cluttered": render_set(items, TUNING_SEED, True, args.opaque_products)}
    native = scores(embed_all(embedder, [Image.fromarray(i).convert("RGB") for i in items]), fine, coarse, catalog)["fine_R@1"]
    loo = recall_at_k(np.asarray(catalog.embeddings, np.float32), catalog.metadata["product_id"].astype(str).to_numpy(),
                      ks=(1,)).overall[1]
    print(f"held-out: {len(items)} items, native fine R@1 {native:.3f}; the catalog's own leave-one-out R@1 {loo:.4f}")
    results = []
    for grid in args.grid:
        settings = DomainSettings(**json.loads(grid))
        row = {"settings": asdict(settings)}
        for name, photos in sets.items():
            row[name] = scores(embed_with(embedder, [p.image for p in photos], settings), fine, coarse, catalog)["fine_R@1"]
        row["cluttered, true box"] = scores(embed_with(embedder, [p.image for p in sets["cluttered"]], settings,
                                                       [p.box for p in sets["cluttered"]]), fine, coarse, catalog)["fine_R@1"]
        row["cluttered, loose box"] = scores(embed_with(embedder, [p.image for p in sets["cluttered"]], settings,
                                                        [loose_box(p.box, *p.image.size) for p in sets["cluttered"]]),
                                             fine, coarse, catalog)["fine_R@1"]
        print(json.dumps(row))
        results.append(row)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "tuning.json").write_text(json.dumps({"native": native, "items": len(items), "seed": TUNING_SEED,
                                                           "opaque_products": args.opaque_products,
                                                           "results": results}, indent=2) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shopper_photos", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/coinsp-fmnist.pt",
                        help="with --tune, a model the catalog was not built with is compared on the catalog re-embedded in memory")
    parser.add_argument("--catalog", default="catalogs/fashion-mnist-test")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency-photos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=REPORT_SEED,
                        help="another seed draws a second report sample (items never in any tuning sample)")
    parser.add_argument("--out", default="reports/shopper-photos")
    parser.add_argument("--skip-catalog", action="store_true", help="skip the catalog's leave-one-out re-embedding")
    parser.add_argument("--opaque-products", action="store_true",
                        help="render products opaque (faint parts light, not see-through); a second renderer to compare")
    parser.add_argument("--tune", action="store_true", help="measure --grid settings on the held-out sample")
    parser.add_argument("--grid", action="append", default=[], help="DomainSettings as JSON (with --tune)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.tune:
        args.grid = args.grid or ["{}"]
        tune(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
