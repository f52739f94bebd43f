"""python -m benchmarks.distributed_training_benchmark: N torchrun processes against one process, on real photos.

Trains each run on the first --images Fashion-MNIST training photos (store categories), in fp32,
three ways through the real command line: one process with 1 thread, one process with 2 threads
(the same model up to the order of float sums: the round-off floor), and --processes torchrun
processes with 1 thread each (DDP, sharded W^I). Reports how far each is from the 1-thread run
(loss parts per epoch, worst cosine between the final models' embeddings of the photos, W^I) and
the throughput, and writes OUT.json / OUT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint
from index.manifest import read_manifest
from training.__main__ import fashion_mnist_manifests
from training.input_settings import choose_input
from training.data import load_training_set
from training.instance_checkpoint import read_instance_weights

RUNS = {  # name: command-line arguments of `python -m training`
    "coinsp": ["--preset", "coinsp", "--set", "num_proxies=400"],
    "coins_parametric": ["--preset", "coins", "--set", "instance_weights=parametric"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, manifest: Path, run_args: list[str], args, *, threads: int, processes: int) -> float:
    command = ["-m", "training", "--train-manifest", str(manifest), *run_args, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--set", "proxy_start=1", "--precision", "fp32", "--out", str(out)]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1",
                   "--master-port", str(_free_port()), *command]
    started = time.perf_counter()
    subprocess.run([sys.executable, *command], check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _embeddings(model: Path, images: torch.Tensor) -> torch.Tensor:
    backbone, pre = backbone_from_checkpoint(load_checkpoint(model))
    with torch.inference_mode():
        return torch.cat([F.normalize(backbone(pre.normalise(images[i:i + 512])), dim=1) for i in range(0, len(images), 512)])


def _distance(reference: Path, other: Path, images: torch.Tensor) -> dict:
    one, two = (json.loads((d / "history.json").read_text()) for d in (reference, other))
    losses = [abs(b[k] - a[k]) / abs(a[k]) for a, b in zip(one, two) for k in a if k.startswith("loss_")]
    w_one, w_two = read_instance_weights(reference), read_instance_weights(other)
    cosine = (_embeddings(reference / "model.pt", images) * _embeddings(other / "model.pt", images)).sum(1)
    return {"loss_rel_max": max(losses), "one_minus_worst_cosine": float(1 - cosine.min()),
            "instance_weights_rel": float((w_two - w_one).norm() / w_one.norm()),
            "images_per_s": two[-1]["images_per_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed_training_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--data-dir", default="data/fashion-mnist")
    p.add_argument("--work", default=".cache/distributed-benchmark", help="run folders (replaced)")
    p.add_argument("--out", default="reports/training-distributed")
    args = p.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_manifest, _ = fashion_mnist_manifests(Path(args.data_dir), None)
    manifest = train_manifest.with_name(f"manifest-first{args.images}.csv")  # image paths stay relative to it
    read_manifest(train_manifest).head(args.images).to_csv(manifest, index=False)
    images = load_training_set(manifest, choose_input(manifest, "smallcnn").preprocessing, cache_dir=".cache").images

    ways = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 2, 1),
            (f"{args.processes} processes, 1 thread each", 1, args.processes)]
    rows = []
    for name, run_args in RUNS.items():
        folders = []
        for how, threads, processes in ways:
            folder = work / f"{name}-{processes}p-{threads}t"
            shutil.rmtree(folder, ignore_errors=True)
            seconds = _train(folder, manifest, run_args, args, threads=threads, processes=processes)
            row = {"run": name, "how": how, "wall_s": round(seconds, 1)}
            if folders:
                row.update(_distance(folders[0], folder, images))
            else:
                row["images_per_s"] = json.loads((folder / "history.json").read_text())[-1]["images_per_s"]
            folders.append(folder)
            rows.append(row)
            print(row, flush=True)

    report = {"command": " ".join(["python -m benchmarks.distributed_training_benchmark", *(argv if argv is not None else sys.argv[1:])]),
              "images": args.images, "epochs": args.epochs, "batch_size": args.batch_size,
              "load_average_after": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    table = _markdown(rows)
    out.with_suffix(".md").write_text(f"# Training on {args.processes} processes against one\n\n`{report['command']}`"
                                      f" ({args.images} photos, {args.epochs} epochs, batch {args.batch_size}, fp32;"
                                      f" {report['cpus']} CPUs, load average afterwards {report['load_average_after'][0]:.1f})\n\n"
                                      f"{table}\n")
    print(table)
    return 0


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.1e}" if abs(value) < 0.01 else f"{value:.4g}"
    return "" if value is None else str(value)


def _markdown(rows: list[dict]) -> str:
    columns = ["run", "how", "wall_s", "images_per_s", "loss_rel_max", "one_minus_worst_cosine", "instance_weights_rel"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
