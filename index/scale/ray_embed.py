"""Embed a manifest with Ray Data: decoding on CPU tasks, the model in an actor pool, Parquet shards out.

    python -m index embed-ray --manifest M --model CKPT --out SHARDS [--address ADDR] [--num-cpus N]
                              [--actors N] [--batch-size B]

Without --address a local Ray is started for the command (and stopped after); with it the job
runs on that cluster, whose workers must see the same code, checkpoint and image files (a shared
file system). Ray is an optional extra: `pip install -r requirements-distributed.txt`.

The pipeline: manifest rows -> decode tasks (embedder.images.decode_image + the checkpoint's
preprocessing, content hash and file facts; retried by Ray on transient OS errors) -> embedding
actors (one Embedder each, `num_gpus=1` per actor where the cluster has GPUs) -> Parquet shards
(the format of index.scale.shards). An undecodable file becomes a row with its reason in `error`, not a
failed job; the rows in error are listed in skipped.csv. Shards are written into a staging folder
beside --out that is renamed to --out when complete, so --out is either absent or complete.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from embedder.images import ImageError, decode_image
from embedder.files import file_facts
from index.catalog.store import HASH_COLUMN, ID_COLUMN, MTIME_COLUMN, RESERVED_COLUMNS, SIZE_COLUMN, normalise_rel
from index.manifest import PATH_COLUMN, read_manifest, resolve_image_paths
from index.scale.shards import (EMBEDDING_COLUMN, ERROR_COLUMN, VECTOR_DTYPES, embedding_array, finish_shards,
                                parquet_options, staging_folder)

INSTALL_HINT = "pip install -r requirements-distributed.txt"
IMAGE_COLUMN = "__image"  # decoded uint8 C x H x W, passed from decode tasks to the actors only
SOURCE_COLUMN = "__file"  # absolute image path, for the decode tasks only
CONTEXT_SETTINGS = ("enable_progress_bars", "retried_map_errors", "max_map_retries", "actor_task_retry_on_errors")
TASK_RETRIES = 3  # Ray re-runs a failed decode task this often (e.g. a network file system hiccup)


class RayMissingError(RuntimeError):
    """Ray Data is not installed (it is an optional extra)."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissingError(f"embed-ray needs Ray Data, an optional extra: {INSTALL_HINT}") from None
    return ray


@dataclass
class ShardsReport:
    out: Path
    rows: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"embed-ray: {self.embedded:,} of {self.rows:,} images embedded into {self.files} shard file(s) "
                f"in {self.out}, {len(self.skipped):,} skipped, {self.seconds:.1f} s")


# ----------------------------------------------------------------------------- the pipeline's steps

def decode_batch(frame: pd.DataFrame, preprocessing: dict) -> dict:
    """Decode a batch of manifest rows for the model; a file that cannot be used gets its reason."""
    from embedder.preprocess import Preprocessing  # imports torch: only where the work runs, not in the CLI

    prep = Preprocessing.from_dict(preprocessing)
    shape = (prep.channels, prep.size, prep.size)
    images = np.zeros((len(frame),) + shape, np.uint8)
    hashes, sizes, mtimes, errors = [None] * len(frame), np.zeros(len(frame), np.int64), \
        np.zeros(len(frame), np.int64), [None] * len(frame)
    for i, file in enumerate(frame[SOURCE_COLUMN]):
        try:
            images[i] = prep.to_uint8(decode_image(file))
            hashes[i], sizes[i], mtimes[i] = file_facts(Path(file))
        except ImageError as exc:
            errors[i] = str(exc)
        except FileNotFoundError:
            errors[i] = f"file not found: {file}"
    out = {c: frame[c].to_numpy() for c in frame.columns if c != SOURCE_COLUMN}
    out.update({IMAGE_COLUMN: images, HASH_COLUMN: np.asarray(hashes, object), SIZE_COLUMN: sizes,
                MTIME_COLUMN: mtimes, ERROR_COLUMN: np.asarray(errors, object)})
    return out


class EmbedActor:
    """One model per actor: decoded batches in, shard rows (metadata, vector or error) out."""

    def __init__(self, checkpoint: str, precision: str, device: str, threads: int, schema: pa.Schema,
                 vector_dtype: str):
        import torch

        from embedder.embed import Embedder

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.torch = torch
        self.embedder = Embedder.from_checkpoint(checkpoint, device=device, precision=precision)
        self.schema, self.vector_dtype = schema, vector_dtype

    def __call__(self, batch: dict) -> pa.Table:
        errors = batch[ERROR_COLUMN]
        ok = np.asarray([not isinstance(e, str) for e in errors], bool)  # a block without errors has NaN/None
        vectors = np.zeros((len(ok), self.embedder.feature_dim), np.float32)
        if ok.any():
            vectors[ok] = self.embedder.embed_uint8(self.torch.from_numpy(np.ascontiguousarray(batch[IMAGE_COLUMN][ok])))
        columns = []
        for name in self.schema.names:
            if name == EMBEDDING_COLUMN:
                columns.append(embedding_array(vectors, self.vector_dtype, valid=ok))
            elif name in (HASH_COLUMN, SIZE_COLUMN, MTIME_COLUMN):
                columns.append(pa.array(batch[name], type=self.schema.field(name).type, mask=~ok))
            else:
                columns.append(pa.array(list(batch[name]) if batch[name].dtype == object else batch[name],
                                        type=self.schema.field(name).type, from_pandas=True))
        return pa.Table.from_arrays(columns, schema=self.schema)


def shard_schema(table: pd.DataFrame, dim: int, vector_dtype: str) -> pa.Schema:
    """id, the manifest's columns (their types as read), file facts, embedding, error."""
    fields = [pa.field(ID_COLUMN, pa.int64())]
    for name, arrow_type in zip(table.columns, pa.Schema.from_pandas(table, preserve_index=False).types):
        if name != ID_COLUMN:
            fields.append(pa.field(name, pa.string() if arrow_type == pa.null() else arrow_type))
    fields += [pa.field(HASH_COLUMN, pa.string()), pa.field(SIZE_COLUMN, pa.int64()),
               pa.field(MTIME_COLUMN, pa.int64()),
               pa.field(EMBEDDING_COLUMN, pa.list_(VECTOR_DTYPES[vector_dtype], dim)),
               pa.field(ERROR_COLUMN, pa.string())]
    return pa.schema(fields)


# ----------------------------------------------------------------------------- the command

def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder for shards")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} is not empty; choose a new folder or pass --overwrite to replace it")


def _prepare_rows(manifest: Path) -> pd.DataFrame:
    table = read_manifest(manifest)
    clash = [c for c in (*RESERVED_COLUMNS, EMBEDDING_COLUMN, ERROR_COLUMN) if c in table.columns]
    if clash:
        raise ValueError(f"manifest {manifest} has column(s) {clash} that the shards reserve; rename them")
    files = resolve_image_paths(table, manifest.parent.absolute())
    table = table.assign(**{PATH_COLUMN: [normalise_rel(p) for p in table[PATH_COLUMN]]})
    table.insert(0, ID_COLUMN, np.arange(len(table), dtype=np.int64))
    table[SOURCE_COLUMN] = [str(f) for f in files]
    return table.reset_index(drop=True)


def embed_manifest(manifest: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *,
                   address: str | None = None, num_cpus: int | None = None, actors: int | None = None,
                   batch_size: int = 256, precision: str = "bf16", vector_dtype: str = "float32",
                   overwrite: bool = False, progress: bool = True) -> ShardsReport:
    """Embed every image of a manifest into Parquet shards in `out` (see the module's docstring)."""
    from embedder.checkpoint import load_checkpoint

    started = time.perf_counter()
    manifest, out, model = Path(manifest), Path(out), Path(model).absolute()
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"--vector-dtype must be one of {sorted(VECTOR_DTYPES)}")
    if batch_size < 1 or (actors is not None and actors < 1) or (num_cpus is not None and num_cpus < 1):
        raise ValueError("--batch-size, --actors and --num-cpus must be at least 1")
    _check_output(out, overwrite)
    payload = load_checkpoint(model)
    rows = _prepare_rows(manifest)
    dim = _feature_dim(payload)
    schema = shard_schema(rows.drop(columns=[SOURCE_COLUMN]), dim, vector_dtype)

    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": num_cpus}
        # Local workers import this product's code from the repository.
        runtime_env = None if address else {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}}
        ray.init(**options, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    staging = staging_folder(out)
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in CONTEXT_SETTINGS}
    try:
        context.enable_progress_bars = progress
        # Ray re-runs a failed decode task (any exception escaping it: image errors are caught and
        # recorded) and an embedding batch whose actor hit an OS error; lost workers are retried anyway.
        context.retried_map_errors, context.max_map_retries = True, TASK_RETRIES
        context.actor_task_retry_on_errors = [OSError]
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        if actors is None:  # one per GPU; on CPUs half of them embed, half decode
            actors = gpus if gpus else max(1, cpus // 2)
        actor_cpus = 1 if gpus else max(1, min(4, cpus // (2 * actors)))
        blocks = max(1, min(len(rows) // batch_size + 1, 4 * max(cpus, 1)))
        edges = np.linspace(0, len(rows), blocks + 1).astype(int)
        chunks = [rows.iloc[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]
        dataset = ray.data.from_pandas(chunks)
        decoded = dataset.map_batches(decode_batch, fn_kwargs={"preprocessing": payload["preprocessing"]},
                                      batch_format="pandas", batch_size=batch_size, num_cpus=1)
        embedded = decoded.map_batches(
            EmbedActor, batch_format="numpy", batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=actor_cpus, num_gpus=1 if gpus else 0,
            fn_constructor_kwargs={"checkpoint": str(model), "precision": precision,
                                   "device": "cuda" if gpus else "cpu", "threads": actor_cpus,
                                   "schema": schema, "vector_dtype": vector_dtype})
        embedded.write_parquet(str(staging), **parquet_options(schema.names))
        report = _finish(staging, out, manifest, model, payload, rows, dim, precision, vector_dtype, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        if started_here:
            ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report


def _feature_dim(payload: dict) -> int:
    from embedder.checkpoint import backbone_from_checkpoint

    backbone, _ = backbone_from_checkpoint(payload)
    return int(backbone.feature_dim)


def _finish(staging: Path, out: Path, manifest: Path, model: Path, payload: dict, rows: pd.DataFrame, dim: int,
            precision: str, vector_dtype: str, overwrite: bool) -> ShardsReport:
    staging.mkdir(parents=True, exist_ok=True)  # a manifest of 0 rows writes no file
    info = finish_shards(staging, out, {
        "model_fingerprint": payload["fingerprint"], "model_path": str(model), "precision": precision,
        "feature_dim": dim, "vector_dtype": vector_dtype, "root": str(manifest.parent.absolute()),
        "manifest": str(manifest.absolute()), "next_id": len(rows)}, overwrite=overwrite)
    if info["rows"] != len(rows):
        raise RuntimeError(f"the shards in {out} hold {info['rows']:,} rows, the manifest {len(rows):,}")
    return ShardsReport(out, rows=len(rows), embedded=info["embedded"], skipped=info["skipped_rows"],
                        files=len(info["files"]))
