"""One 1,000-px colour photo through the store's search path, stage by stage, and the choices that change it.

    python -m benchmarks.colour_photo_path [--catalog-photos 500 --repeats 9]

Stages of a search by photo with the frozen EfficientNet-Lite0 (the store's default model): decode the
JPEG, bring it into the model's input (embedder/domain.py), the backbone on the photo and its mirror
image (one batch of two, as a search runs), and the search itself (SearchService over a catalog of
rendered store photos). Each at 1 and 2 threads, for the input sizes 224 / 160 / 128 px, in fp32
and bf16, channels_last or not, and with dynamic int8 quantisation (PyTorch quantises only Linear
layers dynamically; f(x) of EfficientNet-Lite0 has none, so it is measured to show it changes
nothing). Medians of --repeats runs; the machine's load is recorded beside them.
Writes reports/store-import/photo-path.{json,md}.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.store_import import make_store, render
from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.embed import Embedder
from embedder.images import decode_image
from embedder.preprocess import Preprocessing
from index.importers import load_fashion_mnist_arrays
from index.catalog.operations import build_catalog
from index.search.service import SearchService

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = (224, 160, 128)


def median_ms(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 1)


def photo_bytes(side: int = 1000) -> bytes:
    images, _ = load_fashion_mnist_arrays("test")
    rng = np.random.default_rng(7)
    photo = render(images[0], rng).resize((side, int(side * 0.8)))
    out = io.BytesIO()
    photo.save(out, format="JPEG", quality=90)
    return out.getvalue()


def model_variants(backbone: torch.nn.Module, x: torch.Tensor) -> dict:
    """name -> a callable running the backbone on x that way."""
    quantised = torch.ao.quantization.quantize_dynamic(backbone, {torch.nn.Linear}, dtype=torch.qint8)
    last = x.contiguous(memory_format=torch.channels_last)
    cl = backbone.to(memory_format=torch.channels_last)

    def run(model, inp, bf16):
        def go():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(inp)
        return go
    return {"fp32 channels_last": run(cl, last, False), "fp32 contiguous": run(backbone.to(memory_format=torch.contiguous_format), x, False),
            "bf16 channels_last": run(cl, last, True), "dynamic int8 (Linear only) fp32": run(quantised, x, False)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.colour_photo_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--catalog-photos", type=int, default=500, help="rendered store photos in the searched catalog")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "photo-path")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "store-import")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    data = photo_bytes()
    backbone = build_backbone("efficientnet_lite0")
    load_imagenet_weights(backbone)
    backbone.eval()
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        decode = median_ms(lambda: decode_image(io.BytesIO(data)), args.repeats)
        image = decode_image(io.BytesIO(data))
        for size in SIZES:
            pre = Preprocessing(size=size, channels=3, mean=MEAN, std=STD, domain=True, polarity="keep")
            prepare = median_ms(lambda: pre.to_uint8(image), args.repeats)
            view = torch.from_numpy(pre.to_uint8(image))
            x = pre.normalise(torch.stack([view, view.flip(-1)]))
            for name, run in model_variants(backbone, x).items():
                model = median_ms(run, args.repeats)
                rows.append({"threads": threads, "size": size, "variant": name, "decode_ms": decode,
                             "to_input_ms": prepare, "model_ms": model, "total_ms": round(decode + prepare + model, 1)})
                print(rows[-1], flush=True)

    # The search itself, at the size and arithmetic the measurements favour for the model step.
    torch.set_num_threads(2)
    store = args.work / "photos"
    if not store.is_dir():
        make_store(store, args.catalog_photos)
    manifest = args.work / "manifest.csv"
    import pandas as pd

    paths = sorted(store.rglob("*.jpg"))
    pd.DataFrame({"path": [str(p.relative_to(args.work)) for p in paths],
                  "category": [p.parent.name for p in paths]}).to_csv(manifest, index=False)
    searches = {}
    for size in (224, 160):
        pre = Preprocessing(size=size, channels=3, mean=MEAN, std=STD, domain=True, polarity="keep")
        embedder = Embedder(backbone, pre, fingerprint=f"lite0-{size}", precision=None)
        catalog = args.work / f"catalog-{size}"
        build_catalog(manifest, embedder, catalog, overwrite=catalog.exists(), progress=False)
        service = SearchService.from_parts(__import__("index.catalog.loaded", fromlist=["Catalog"]).Catalog.load(catalog),
                                           embedder)
        photo = Image.open(io.BytesIO(data)).convert("RGB")
        searches[size] = {"p50_ms": median_ms(lambda: service.search(photo, k=10), args.repeats),
                          "precision": embedder.precision, "catalog_photos": len(paths)}
        print(size, searches[size], flush=True)
    report = {"command": "python -m benchmarks.colour_photo_path " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows, "search": searches, "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "photo-path.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# One 1,000-px colour photo through the search path (frozen EfficientNet-Lite0)", "",
             f"Command: `{report['command']}`  ", f"Load average before {report['load_average_before']}, after "
             f"{report['load_average_after']} on {os.cpu_count()} cores: a shared, busy machine, so every figure is "
             "slower than on quiet cores.", "",
             "| threads | input px | model step | decode ms | to input ms | model ms (photo + mirror) | total ms |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['threads']} | {r['size']} | {r['variant']} | {r['decode_ms']} | {r['to_input_ms']} | {r['model_ms']} | "
              f"{r['total_ms']} |" for r in rows]
    lines += ["", "| input px | precision (measured choice) | catalog photos | search p50 ms (whole search by photo) |",
              "|---:|---|---:|---:|"]
    lines += [f"| {s} | {v['precision']} | {v['catalog_photos']} | {v['p50_ms']} |" for s, v in searches.items()]
    (args.out / "photo-path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
