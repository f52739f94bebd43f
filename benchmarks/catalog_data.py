"""What the catalog benchmarks share: default model and manifest, synthetic catalogs, the report file."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedder.backbones import build_backbone
from embedder.checkpoint import save_checkpoint
from embedder.embed import Embedder
from embedder.preprocess import Preprocessing
from embedder.files import atomic_path
from index.search.exact import exact_top
from index.manifest import read_manifest, resolve_image_paths

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "bench_index.json"
CACHE = ROOT / ".cache" / "bench"
DATA = ROOT / "data" / "fashion-mnist"


# ----------------------------------------------------------------------------- helpers

def default_model(grid: int = 4) -> Path:
    """A random-initialised SmallCNN for 28 px grey images (grid=4: 2048-d), seeded, cached."""
    path = CACHE / f"smallcnn-grid{grid}-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        spec = {"name": "smallcnn", "kwargs": {"in_channels": 1, "grid": grid}}
        save_checkpoint(path, backbone_spec=spec, backbone=build_backbone(spec["name"], **spec["kwargs"]),
                        preprocessing=Preprocessing(size=28, channels=1, mean=(0.286,), std=(0.353,)),
                        categories=["apparel", "bags", "footwear"], config={"benchmark": "random init, seed 0"})
    return path


def default_manifest() -> Path:
    from index.importers import import_fashion_mnist

    return import_fashion_mnist(DATA, "test")


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads()}


def append_report(record: dict) -> None:
    records = []
    if REPORT.exists():
        try:
            records = json.loads(REPORT.read_text())
        except ValueError:
            records = []
    records.append(record)
    with atomic_path(REPORT) as tmp:
        tmp.write_text(json.dumps(records, indent=2, default=str) + "\n")
    print(f"appended to {REPORT.relative_to(ROOT) if REPORT.is_relative_to(ROOT) else REPORT}")


def print_table(rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))


def record(name: str, params: dict, results) -> dict:
    return {"bench": name, "at": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "params": params, "results": results}


def manifest_rows(manifest: Path, limit: int | None):
    table = read_manifest(manifest)
    if limit:
        table = table.iloc[:limit]
    return table, resolve_image_paths(table, manifest.parent)


def base_embeddings(embedder: Embedder, manifest: Path, limit: int | None) -> tuple[np.ndarray, pd.DataFrame]:
    """The model's embeddings of the manifest's images (cached per model and manifest)."""
    table, paths = manifest_rows(manifest, limit)
    key = hashlib.sha256(f"{embedder.fingerprint}|{manifest.absolute()}|{len(table)}".encode()).hexdigest()[:16]
    cache = CACHE / f"base-{key}.npz"
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        return saved["vectors"], table.iloc[saved["rows"]].reset_index(drop=True)
    result = embedder.embed_files([str(p) for p in paths])
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, vectors=result.embeddings, rows=result.embedded)
    return result.embeddings, table.iloc[result.embedded].reset_index(drop=True)


def synthetic_catalog(base: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n vectors of the real dimension: the real ones, then noisy copies of them (normalised).

    The noise is half the median nearest-neighbour distance of the real vectors, so each real
    item gets a cloud of close variants (like colour/size variants of a product) without
    erasing the structure between items. Returns (vectors, source row of each vector).
    """
    nb, d = base.shape
    out = np.empty((n, d), np.float32)
    for start, block, _ in synthetic_blocks(base, n, seed):
        out[start:start + len(block)] = block
    return out, np.arange(n) % nb


def synthetic_blocks(base: np.ndarray, n: int, seed: int = 0, block_rows: int = 65_536):
    """synthetic_catalog a block at a time, never holding all n: yields (first row, vectors, source rows)."""
    nb, d = base.shape
    if n <= nb:
        yield 0, np.ascontiguousarray(base[:n]), np.arange(n)
        return
    probe = np.random.default_rng(seed).choice(nb, size=min(nb, 1000), replace=False)
    nearest = exact_top(np.ascontiguousarray(base[probe]), base, 2)[:, 1]
    distance = float(np.median(np.linalg.norm(base[probe] - base[nearest], axis=1)))
    sigma = 0.5 * distance / np.sqrt(d)
    yield 0, np.ascontiguousarray(base), np.arange(nb)
    rng = np.random.default_rng(seed)
    for start in range(nb, n, block_rows):
        stop = min(start + block_rows, n)
        source = np.arange(start, stop) % nb
        block = base[source] + rng.standard_normal((stop - start, d), dtype=np.float32) * np.float32(sigma)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield start, block, source


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))
