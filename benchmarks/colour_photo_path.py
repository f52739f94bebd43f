"""One 1,000-px colour photo through the store's search path, stage by stage, and the choices that change it.

    python -m benchmarks.colour_photo_path [--catalog-photos 200 --repeats 9 --threads 1,2]

Stages of a search by photo with the frozen EfficientNet-Lite0 (the store's default model): decode the
JPEG, bring it into the model's input (embedder/domain.py normalise, or embedder/backdrop.py: the product
on a neutral grey), the backbone on the photo and its mirror image (one batch of two, as a search runs),
and the whole search (SearchService over a catalog of rendered store photos, from the JPEG's bytes to
the results). The model step for the input sizes 224 / 160 / 128 px, in fp32 and bf16, channels_last or
not, with dynamic int8 quantisation (PyTorch quantises only Linear layers dynamically; f(x) of
EfficientNet-Lite0 has none, so it is measured to show it changes nothing) and in ONNX Runtime (when
`onnxruntime` and `onnx` are installed: fp32, the backbone exported once).

Each figure is the median of --repeats runs, as wall-clock time and as the CPU time the process used
(time.process_time): on a shared machine the wall clock includes the time other work held the core,
the CPU time is close to what one quiet core of this kind would take. The machine's load is recorded.
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

from benchmarks.store_import import make_store, render
from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.backdrop import NEUTRAL_GREY
from embedder.embed import Embedder
from embedder.images import decode_image
from embedder.preprocess import Preprocessing
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog
from index.importers import load_fashion_mnist_arrays
from index.search.service import SearchService

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = (224, 160, 128)
GOAL_MS = 150  # search p50, end to end, one core
# The whole search, measured at one thread: (input px, precision, backdrop) of the catalog and its queries.
# "onnx": the backbone in ONNX Runtime (fp32) behind the same Embedder and SearchService.
SEARCHES = ((224, "fp32", None), (224, "onnx", None), (160, "fp32", None), (128, "fp32", None), (128, "bf16", None),
            (128, "onnx", None), (128, "fp32", NEUTRAL_GREY), (128, "onnx", NEUTRAL_GREY))


def median_ms(run, repeats: int) -> dict:
    """{"wall": median ms, "cpu": median ms of this process's CPU time} over `repeats` runs after a warm-up."""
    run()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return {"wall": round(1000 * float(np.median(wall)), 1), "cpu": round(1000 * float(np.median(cpu)), 1)}


def photo_bytes(side: int = 1000) -> bytes:
    images, _ = load_fashion_mnist_arrays("test")
    rng = np.random.default_rng(7)
    photo = render(images[0], rng).resize((side, int(side * 0.8)))
    out = io.BytesIO()
    photo.save(out, format="JPEG", quality=90)
    return out.getvalue()


def backdrop_name(backdrop: float | None) -> str:
    return "own" if backdrop is None else f"grey {backdrop:g}"


class OnnxBackbone(torch.nn.Module):
    """The backbone exported to ONNX and run by ONNX Runtime (fp32), as a module the Embedder can hold."""

    def __init__(self, backbone: torch.nn.Module, size: int, threads: int, folder: Path):
        super().__init__()
        import onnxruntime

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"lite0-{size}px.onnx"
        if not path.is_file():
            torch.onnx.export(backbone.to(memory_format=torch.contiguous_format), (torch.zeros(2, 3, size, size),),
                              str(path), input_names=["x"], output_names=["f"], dynamic_axes={"x": {0: "b"}, "f": {0: "b"}},
                              dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.feature_dim = backbone.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.float().contiguous().numpy()})[0])


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def model_variants(backbone: torch.nn.Module, x: torch.Tensor, threads: int, work: Path) -> dict:
    """name -> a callable running the backbone on x that way."""
    quantised = torch.ao.quantization.quantize_dynamic(backbone, {torch.nn.Linear}, dtype=torch.qint8)
    last = x.contiguous(memory_format=torch.channels_last)
    cl = backbone.to(memory_format=torch.channels_last)

    def run(model, inp, bf16):
        def go():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(inp)
        return go
    variants = {"fp32 channels_last": run(cl, last, False),
                "fp32 contiguous": run(backbone.to(memory_format=torch.contiguous_format), x, False),
                "bf16 channels_last": run(backbone.to(memory_format=torch.channels_last), last, True),
                "dynamic int8 (Linear only) fp32": run(quantised, x, False)}
    if onnx_available():
        onnx_model = OnnxBackbone(backbone, x.shape[-1], threads, work / "onnx")
        with torch.inference_mode():
            difference = float((onnx_model(x) - backbone(x)).abs().max() / backbone(x).abs().max())
        if difference > 1e-3:
            raise AssertionError(f"ONNX Runtime's features differ from PyTorch's by {difference:.2g} (relative)")
        variants["ONNX Runtime fp32"] = lambda: onnx_model(x)
    backbone.to(memory_format=torch.channels_last)
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.colour_photo_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", default="1,2", help="thread counts of the stage table (the whole search: 1)")
    parser.add_argument("--catalog-photos", type=int, default=200, help="rendered store photos in the searched catalog")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "photo-path")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "store-import")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    data = photo_bytes()
    backbone = build_backbone("efficientnet_lite0")
    load_imagenet_weights(backbone)
    backbone.eval()
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        decode = median_ms(lambda: decode_image(io.BytesIO(data)), args.repeats)
        image = decode_image(io.BytesIO(data))
        for size in SIZES:
            prepare = {}
            for backdrop in (None, NEUTRAL_GREY):
                pre = Preprocessing(size=size, channels=3, mean=MEAN, std=STD, domain=True, polarity="keep",
                                    backdrop=backdrop)
                prepare[backdrop] = median_ms(lambda: pre.to_uint8(image), args.repeats)
            view = torch.from_numpy(pre.to_uint8(image))
            x = pre.normalise(torch.stack([view, view.flip(-1)]))
            for name, run in model_variants(backbone, x, threads, args.work).items():
                model = median_ms(run, args.repeats)
                rows.append({"threads": threads, "size": size, "variant": name, "decode_ms": decode,
                             "to_input_ms": prepare[None], "to_input_backdrop_ms": prepare[NEUTRAL_GREY], "model_ms": model,
                             "total_ms": {k: round(decode[k] + prepare[None][k] + model[k], 1) for k in ("wall", "cpu")}})
                print(rows[-1], flush=True)

    # The whole search by photo, from the JPEG's bytes to the results, on one thread.
    torch.set_num_threads(1)
    try:
        import faiss
        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    store = args.work / f"photos-{args.catalog_photos}"
    if not store.is_dir():
        make_store(store, args.catalog_photos)
    manifest = args.work / f"manifest-{args.catalog_photos}.csv"
    import pandas as pd

    paths = sorted(store.rglob("*.jpg"))
    pd.DataFrame({"path": [str(p.relative_to(args.work)) for p in paths],
                  "category": [p.parent.name for p in paths]}).to_csv(manifest, index=False)
    searches = []
    for size, precision, backdrop in SEARCHES:
        if precision == "onnx" and not onnx_available():
            continue
        pre = Preprocessing(size=size, channels=3, mean=MEAN, std=STD, domain=True, polarity="keep", backdrop=backdrop)
        fingerprint = f"lite0-{size}" + ("" if backdrop is None else f"-backdrop{backdrop:g}")
        catalog = args.work / f"catalog-{args.catalog_photos}-{fingerprint}"
        if not (catalog / "catalog.json").is_file():
            build_catalog(manifest, Embedder(backbone, pre, fingerprint=fingerprint, precision="fp32"), catalog,
                          overwrite=catalog.exists(), progress=False)
        model = OnnxBackbone(backbone, size, 1, args.work / "onnx") if precision == "onnx" else backbone
        embedder = Embedder(model, pre, fingerprint=fingerprint, precision="fp32" if precision == "onnx" else precision)
        service = SearchService.from_parts(Catalog.load(catalog), embedder)
        timing = median_ms(lambda: service.search(decode_image(io.BytesIO(data)), k=10), args.repeats)
        searches.append({"size": size, "precision": precision, "backdrop": backdrop, "p50_ms": timing,
                         "catalog_photos": len(paths)})
        print(searches[-1], flush=True)
    report = {"command": "python -m benchmarks.colour_photo_path " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows, "search": searches, "goal_ms": GOAL_MS, "onnxruntime": onnx_available(),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(),
              "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "photo-path.json").write_text(json.dumps(report, indent=1) + "\n")

    def both(m: dict) -> str:
        return f"{m['wall']} / {m['cpu']}"
    lines = ["# One 1,000-px colour photo through the search path (frozen EfficientNet-Lite0)", "",
             f"Command: `{report['command']}`  ", f"Load average before {report['load_average_before']}, after "
             f"{report['load_average_after']} on {os.cpu_count()} cores (a shared, busy machine). Every figure: "
             "median **wall ms / CPU ms** (the CPU time the process used: close to what one quiet core of this kind "
             "takes; the wall clock adds the time other work held the core).", "",
             "| threads | input px | model step | decode | to input (own backdrop) | to input (grey backdrop) | "
             "model (photo + mirror) | total (own backdrop) |", "|---:|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['threads']} | {r['size']} | {r['variant']} | {both(r['decode_ms'])} | {both(r['to_input_ms'])} | "
              f"{both(r['to_input_backdrop_ms'])} | {both(r['model_ms'])} | {both(r['total_ms'])} |" for r in rows]
    lines += ["", f"## The whole search by photo, one thread (JPEG bytes to results, {len(paths)} catalog photos; "
              f"goal p50 <= {GOAL_MS} ms)", "",
              "| input px | model step | backdrop | search p50 wall ms | search p50 CPU ms |", "|---:|---|---|---:|---:|"]
    lines += [f"| {v['size']} | {v['precision']} | {backdrop_name(v['backdrop'])} | {v['p50_ms']['wall']} | "
              f"{v['p50_ms']['cpu']} |" for v in searches]
    (args.out / "photo-path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
