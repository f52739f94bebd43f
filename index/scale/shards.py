"""Embedding shards: a folder of Parquet files holding a manifest's embeddings, the source of truth
for catalogs too large to keep their vectors in one in-memory array.

Layout of a shards folder (written by `python -m index embed-ray`, or by a generator):

    SHARDS/shards.json        what the shards are: model fingerprint, dimension, vector dtype, image
                              folder, one entry per file (rows, bytes); written last (the folder is
                              staged and renamed when complete)
    SHARDS/skipped.csv        path, reason: every manifest row that could not be embedded
    SHARDS/<name>.parquet     one row per manifest row: id, path, category, the manifest's other
                              columns, content_hash, file_size, file_mtime_ns, embedding
                              (fixed-size list of float32 or float16, L2-normalised) and error
                              (null when embedded; then embedding is null)

Ids are the manifest's row numbers, so they are stable and need no coordination between
workers. Files are written in row groups of ROW_GROUP_ROWS rows so that one vector can be
read without decoding a whole file (search by id, sampled evaluation).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from embedder.files import atomic_path, fsync_dir, read_format_json
from index.catalog.store import ID_COLUMN

SHARDS_FORMAT = "coinsp-shards/1"
SHARDS_INFO = "shards.json"
SKIPPED_FILE = "skipped.csv"
EMBEDDING_COLUMN = "embedding"
ERROR_COLUMN = "error"
ROW_GROUP_ROWS = 256  # 2 MB of 2048-d float32: one vector costs one row group's decoding
VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


class ShardsError(ValueError):
    """A shards folder that cannot be used; the message says what to do."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def embedding_array(vectors: np.ndarray, dtype: str = "float32", valid: np.ndarray | None = None) -> pa.Array:
    """(n, d) vectors -> a fixed-size-list Arrow column; rows where `valid` is False are null."""
    if dtype not in VECTOR_DTYPES:
        raise ShardsError(f"vector dtype must be one of {sorted(VECTOR_DTYPES)}, got {dtype!r}")
    n, d = vectors.shape
    values = pa.array(np.ascontiguousarray(vectors, np.dtype(dtype)).reshape(-1), type=VECTOR_DTYPES[dtype])
    mask = None if valid is None else pa.array(~np.asarray(valid, bool))
    return pa.FixedSizeListArray.from_arrays(values, d, mask=mask)


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column without nulls -> (n, d) float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    d = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, d)


def parquet_options(columns: Sequence[str]) -> dict:
    """How shard files are written: small row groups; vectors plain and uncompressed (embeddings do
    not compress, and dictionary-encoded float16 took 8x longer to read: 0.4 s vs 0.05 s per 1,024 rows)."""
    others = [c for c in columns if c != EMBEDDING_COLUMN]
    return {"row_group_size": ROW_GROUP_ROWS, "use_dictionary": others,
            "compression": {**{c: "snappy" for c in others}, EMBEDDING_COLUMN: "none"}}


def write_shard(path: str | os.PathLike, table: pa.Table) -> int:
    """Write one shard file atomically (parquet_options); returns its size in bytes."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.column_names))
    return Path(path).stat().st_size


def write_info(folder: str | os.PathLike, info: dict) -> None:
    with atomic_path(Path(folder) / SHARDS_INFO) as tmp:
        tmp.write_text(json.dumps({"format": SHARDS_FORMAT, **info}, indent=2, default=str) + "\n")


def describe_files(folder: Path, names: Sequence[str]) -> list[dict]:
    """shards.json's file entries: name, rows, embedded rows, bytes (from the Parquet footers)."""
    entries = []
    for name in sorted(names):
        file = pq.ParquetFile(folder / name)
        errors = file.read(columns=[ERROR_COLUMN]).column(0)
        entries.append({"name": name, "rows": file.metadata.num_rows, "embedded": int(errors.null_count),
                        "bytes": (folder / name).stat().st_size})
    return entries


def staging_folder(out: Path) -> Path:
    """Where shards for `out` are written until complete (beside it, so the rename is atomic)."""
    return out.parent / f".tmp-{out.name}-{secrets.token_hex(4)}"


def finish_shards(staging: Path, out: Path, info: dict, overwrite: bool = False) -> dict:
    """Complete a staged shards folder: list the rows in error in skipped.csv, write shards.json
    (with the files' rows and sizes), make everything durable, then rename it to `out`."""
    names = sorted(p.name for p in staging.glob("*.parquet"))
    files = describe_files(staging, names)
    skipped = []
    for name in names:
        table = pq.read_table(staging / name, columns=["path", ERROR_COLUMN]).to_pandas()
        failed = table[table[ERROR_COLUMN].notna()]
        skipped += list(zip(failed["path"].astype(str), failed[ERROR_COLUMN].astype(str)))
    skipped.sort()
    with atomic_path(staging / SKIPPED_FILE) as tmp:
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(tmp, index=False)
    for name in names:
        with open(staging / name, "rb") as f:
            os.fsync(f.fileno())
    info = {**info, "created_at": now(), "rows": sum(f["rows"] for f in files),
            "embedded": sum(f["embedded"] for f in files), "skipped": len(skipped), "files": files}
    write_info(staging, info)
    fsync_dir(staging)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        if not overwrite:
            raise ShardsError(f"{out} appeared while the shards were written; they are left in {staging}")
        old = staging_folder(out)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
    fsync_dir(out.parent)
    return {**info, "skipped_rows": skipped}


def write_shards(out: str | os.PathLike, blocks: Iterable[tuple[pd.DataFrame, np.ndarray]], *, model_fingerprint: str,
                 feature_dim: int, root: str, model_path: str | None = None, precision: str = "bf16",
                 vector_dtype: str = "float32", overwrite: bool = False) -> dict:
    """Shards from vectors computed elsewhere (generated benchmark data, imports): each block, a
    metadata frame (id, path, category, ...) and its (rows, d) vectors, becomes one file."""
    out = Path(out)
    staging = staging_folder(out)
    staging.mkdir(parents=True)
    try:
        next_id = 0
        for i, (frame, vectors) in enumerate(blocks):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.append_column(EMBEDDING_COLUMN, embedding_array(vectors, vector_dtype))
            table = table.append_column(ERROR_COLUMN, pa.nulls(len(frame), pa.string()))
            write_shard(staging / f"part-{i:05d}.parquet", table)
            next_id = max(next_id, int(frame[ID_COLUMN].max()) + 1)
        return finish_shards(staging, out, {
            "model_fingerprint": model_fingerprint, "model_path": model_path, "precision": precision,
            "feature_dim": int(feature_dim), "vector_dtype": vector_dtype, "root": str(root), "next_id": next_id},
            overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_info(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    def absent() -> str:
        what = "no such folder" if not folder.exists() else f"{SHARDS_INFO} missing: unfinished or not shards"
        return (f"no embedding shards at {folder} ({what}); make them with "
                "`python -m index embed-ray --manifest M --model CKPT --out SHARDS`")
    return read_format_json(folder / SHARDS_INFO, SHARDS_FORMAT, "an embedding shards folder", ShardsError, absent)


def check_files(folder: Path, info: dict) -> list[Path]:
    """The shard files, each present with the size shards.json recorded."""
    paths = []
    for entry in info["files"]:
        path = folder / entry["name"]
        try:
            size = path.stat().st_size
        except OSError:
            raise ShardsError(f"shard {path} is missing; the shards folder is incomplete: embed again") from None
        if size != entry["bytes"]:
            raise ShardsError(f"shard {path} has {size:,} bytes, {SHARDS_INFO} says {entry['bytes']:,}: it was "
                              "changed after it was written; embed again")
        paths.append(path)
    return paths


@dataclass
class ShardBlock:
    """Embedded rows of one stretch of one shard file."""
    file: int  # position of the file in shards.json
    rows: np.ndarray  # row numbers in the file
    ids: np.ndarray
    vectors: np.ndarray  # (len(rows), d) float32


def iter_blocks(folder: str | os.PathLike, info: dict | None = None, batch_rows: int = 65_536) -> Iterator[ShardBlock]:
    """Stream the embedded rows of every shard in order, a block at a time (bounded memory)."""
    folder = Path(folder)
    info = info or read_info(folder)
    for f, path in enumerate(check_files(folder, info)):
        at = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows,
                                                      columns=[ID_COLUMN, EMBEDDING_COLUMN, ERROR_COLUMN]):
            ok = np.asarray(batch.column(ERROR_COLUMN).is_null().to_numpy(zero_copy_only=False), bool)
            rows = at + np.flatnonzero(ok)
            at += batch.num_rows
            if len(rows):
                good = batch.filter(pa.array(ok))
                yield ShardBlock(f, rows, good.column(ID_COLUMN).to_numpy().astype(np.int64),
                                 vectors_of(good.column(EMBEDDING_COLUMN)))


def read_metadata(folder: str | os.PathLike, info: dict | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Every embedded row's metadata (no vectors), sorted by id, and where its vector lies:
    (frame, locations (n, 2) int64 of [file number, row in file])."""
    folder = Path(folder)
    info = info or read_info(folder)
    frames, locations = [], []
    for f, path in enumerate(check_files(folder, info)):
        file = pq.ParquetFile(path)
        columns = [c for c in file.schema_arrow.names if c != EMBEDDING_COLUMN]
        table = file.read(columns=columns)
        ok = np.asarray(table.column(ERROR_COLUMN).is_null().to_numpy(zero_copy_only=False), bool)
        frames.append(table.filter(pa.array(ok)).drop_columns([ERROR_COLUMN]).to_pandas())
        rows = np.flatnonzero(ok)
        locations.append(np.stack([np.full(len(rows), f), rows], axis=1))
    if not frames:
        raise ShardsError(f"{folder} holds no shard files")
    frame = pd.concat(frames, ignore_index=True)
    where = np.concatenate(locations).astype(np.int64)
    order = np.argsort(frame[ID_COLUMN].to_numpy(np.int64), kind="stable")
    frame, where = frame.iloc[order].reset_index(drop=True), where[order]
    if len(frame) > 1 and not (np.diff(frame[ID_COLUMN].to_numpy(np.int64)) > 0).all():
        raise ShardsError(f"shards in {folder} repeat ids: they mix more than one embedding run; embed again")
    return frame, where


class ShardVectors:
    """The vectors of a catalog read from its shards, indexed like an (n, d) float32 array.

    Row i is the vector of the catalog's metadata row i; `locations[i]` says in which file and
    row it lies. Slices read the shards in order (one pass); scattered rows cost one row group
    each (ROW_GROUP_ROWS vectors decoded per row wanted), so this suits search by id and
    streaming, not random access in bulk.
    """

    def __init__(self, folder: str | os.PathLike, files: Sequence[dict], dim: int, locations: np.ndarray):
        self.folder, self.files, self.dim = Path(folder), list(files), int(dim)
        self.locations = locations
        self._readers: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}

    shape = property(lambda self: (len(self.locations), self.dim))
    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return len(self.locations)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        if isinstance(key, tuple):
            raise TypeError("ShardVectors takes row indices only")
        rows = np.arange(len(self))[key]
        return self._read(np.asarray(rows, np.int64).reshape(-1))

    def _reader(self, f: int) -> tuple[pq.ParquetFile, np.ndarray]:
        if f not in self._readers:
            path = self.folder / self.files[f]["name"]
            try:
                file = pq.ParquetFile(path, memory_map=True)
            except OSError:
                raise ShardsError(f"the catalog's vectors are in {self.folder}, but {path} is missing: search "
                                  "still works (it uses the index), search by id and evaluation need the "
                                  "shards back in place") from None
            sizes = [file.metadata.row_group(g).num_rows for g in range(file.metadata.num_row_groups)]
            self._readers[f] = (file, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        return self._readers[f]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), np.float32)
        if len(rows) == 0:
            return out
        where = self.locations[rows]
        for f in np.unique(where[:, 0]):
            at_f = np.flatnonzero(where[:, 0] == f)
            file, starts = self._reader(int(f))
            in_file = where[at_f, 1]
            groups = np.searchsorted(starts, in_file, side="right") - 1
            for g in np.unique(groups):
                pick = groups == g
                column = file.read_row_group(int(g), columns=[EMBEDDING_COLUMN]).column(0)
                out[at_f[pick]] = vectors_of(column.take(pa.array(in_file[pick] - starts[g])))
        return out
