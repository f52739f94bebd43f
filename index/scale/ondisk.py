"""Catalogs too large for memory: an IVF-PQ index built from embedding shards, searched memory-mapped.

    python -m index build-from-shards --shards SHARDS --model CKPT --out DIR [--index IVF65536,PQ64]

The result is an ordinary catalog folder (catalog.json as the commit point, versions/<v>/,
metadata.parquet), so Catalog.load, SearchService, `python -m index search|evaluate|info` and the
app read it as they read any catalog. What differs is inside the version:

    index.faiss            the trained IVF-PQ index: centroids, PQ codebooks, no vectors
    index.ivfdata          its inverted lists (codes and ids), written by FAISS's merge_ondisk and
                           memory-mapped read-only on load: the OS pages in the lists a query probes
    vector_locations.npy   (n, 2) int64: shard file and row of each metadata row's full vector
    rerank_vectors.npy     (n, d) float16 copy of the vectors in row order, memory-mapped: search
                           takes RERANK_QUANTISED x k candidates from the codes and re-scores them
                           exactly with it (without it, --no-rerank-copy, codes alone rank results)
    metadata.parquet       as in every catalog; there is no embeddings.npy

The embedding shards stay the source of truth (catalog.json names their folder): search by id
and evaluation read the full vectors from them; a rebuild reads them again. Why a copy for
re-scoring: 256-byte codes cannot order near-identical photos (recall@10 against exact 0.18 at
10^6 x 2048 with 100 near-copies per item), and reading scattered rows from Parquet shards costs a
row group per row; the float16 copy costs n x d x 2 bytes of disk and a few page reads per query.

Build: train on a bounded sample of the shards, add the shards block by block into temporary
per-part indexes (each holding at most PART_VECTORS codes in memory), merge those into one
on-disk inverted-lists file (faiss.contrib.ondisk.merge_ondisk), tune nprobe against exact search
(exact neighbours by streaming the shards), then commit the version atomically.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from faiss.contrib.ondisk import merge_ondisk

from embedder.files import atomic_path, format_size
from embedder.progress import ProgressOption, Stage, as_callback
from index.catalog.loaded import Catalog
from index.catalog.choose import DEFAULT_MEMORY_BUDGET, RERANK_QUANTISED, choice_from_factory, choose_index, index_kind
from index.catalog.operations import UpdateReport, counts, merge_skipped
from index.catalog.description import CatalogInfo, VectorShards
from index.catalog.store import (ID_COLUMN, INDEX_FILE, IVFDATA_FILE, METADATA_FILE, RERANK_VECTORS_FILE,
                                 VECTOR_LOCATIONS_FILE, CatalogError, ModelMismatchError, catalog_lock,
                                 check_new_catalog_folder, commit_version, now, quiet_c_stdout, read_info_or_none,
                                 write_metadata)
from index.catalog.tune import new_index, tune_search
from index.scale.shards import SKIPPED_FILE, ShardVectors, iter_blocks, read_info as read_shards_info, read_metadata

PART_VECTORS = 1_000_000  # codes per temporary part index before it is written out (64 MB at PQ64)
TRAIN_MAX_VECTORS = 262_144  # training sample cap: 2 GB at 2048-d float32, whatever the catalog size
TUNE_STOP_GAIN = 0.005  # nprobe stops rising when a doubling gains less recall@10 than this


def _train_rows(n: int, nlist: int, seed: int = 0) -> np.ndarray:
    size = min(n, max(nlist * 40, 20_000), TRAIN_MAX_VECTORS)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _skipped(shards: Path) -> list[tuple[str, str]]:
    path = shards / SKIPPED_FILE
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(zip(table["path"], table["reason"]))


def build_from_shards(shards: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *,
                      index: str | None = None, memory_budget: int | None = None, overwrite: bool = False,
                      progress: ProgressOption = True, lock_timeout: float = 0.0, rerank_copy: bool = True) -> UpdateReport:
    """Build (or replace, with overwrite) an on-disk IVF-PQ catalog in `out` from embedding shards.

    `model` must be the checkpoint the shards were embedded with (checked by fingerprint); it is
    recorded so that searches by photo embed them with the same model. No image is read.
    rerank_copy: keep a float16 copy of the vectors to re-score candidates exactly (n x d x 2 bytes).
    """
    from embedder.checkpoint import load_checkpoint

    started, progress = time.perf_counter(), as_callback(progress)
    shards, out = Path(shards).absolute(), Path(out)
    shard_info = read_shards_info(shards)
    fingerprint = load_checkpoint(model)["fingerprint"]
    if fingerprint != shard_info["model_fingerprint"]:
        raise ModelMismatchError(
            f"{model} (fingerprint {fingerprint}) is not the model the shards in {shards} were embedded with "
            f"({shard_info.get('model_path')}, fingerprint {shard_info['model_fingerprint']}); pass that model, "
            "or embed the manifest again with this one (`python -m index embed-ray`)")
    check_new_catalog_folder(out, overwrite)
    metadata, locations = read_metadata(shards, shard_info)
    n, d = len(metadata), int(shard_info["feature_dim"])
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    choice = choice_from_factory(index, d) if index else choose_index(n, d, budget, on_disk=True,
                                                                      rerank_copy=rerank_copy)
    if index_kind(choice.factory) != "ivf":
        raise CatalogError(f"an on-disk catalog needs an inverted-file index (e.g. IVF4096,PQ64), not {choice.factory!r}")
    # Without a copy of the vectors, scores come from the codes: more candidates would rank the same.
    choice.params["rerank"] = RERANK_QUANTISED if rerank_copy else 1
    if rerank_copy:
        existing = out
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if n * d * 2 > free:
            raise CatalogError(f"not enough disk in {out} for the float16 copy used to re-score results "
                               f"({format_size(n * d * 2)}, {format_size(free)} free): free space, or build with "
                               "--no-rerank-copy (results then ranked by the PQ codes alone)")
    vectors = ShardVectors(shards, shard_info["files"], d, locations)
    nlist = int(faiss.extract_index_ivf(faiss.index_factory(d, choice.factory, faiss.METRIC_INNER_PRODUCT)).nlist)
    if n < nlist:
        raise CatalogError(f"index {choice.factory!r} needs at least {nlist:,} vectors to train, the shards hold "
                           f"{n:,}; give an index with fewer lists (--index), or build an ordinary catalog")
    stages: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    with catalog_lock(out, "build-from-shards", lock_timeout):
        previous = read_info_or_none(out, "version")
        work = Path(tempfile.mkdtemp(prefix=".parts-", dir=out))  # per-part indexes, removed at the end
        try:
            clock = time.perf_counter()
            sample = vectors[_train_rows(n, nlist)]
            stages["read_training_sample_s"] = time.perf_counter() - clock
            clock = time.perf_counter()
            trained = faiss.serialize_index(new_index(choice, d, sample, progress))
            del sample
            stages["train_s"] = time.perf_counter() - clock
            clock = time.perf_counter()
            copy = None
            if rerank_copy:
                copy = np.lib.format.open_memmap(work / RERANK_VECTORS_FILE, mode="w+", dtype=np.float16, shape=(n, d))
            parts = _fill_parts(trained, shards, shard_info, work, n, progress,
                                copy, metadata[ID_COLUMN].to_numpy(np.int64))
            if copy is not None:
                copy.flush()
            stages["add_s"] = time.perf_counter() - clock
            info = CatalogInfo(
                model_fingerprint=fingerprint, model_path=str(Path(model).absolute()),
                precision=shard_info.get("precision", "bf16"), feature_dim=d, created_at=now(),
                root=shard_info["root"], manifest=shard_info.get("manifest"), memory_budget_bytes=budget,
                next_id=int(shard_info["next_id"]), index={},
                vectors=VectorShards(folder=str(shards), files=shard_info["files"],
                                     dtype=shard_info.get("vector_dtype", "float32"), rerank_copy=rerank_copy))
            skipped = merge_skipped([], _skipped(shards))

            def write(staging: Path) -> None:
                clock = time.perf_counter()
                merged = faiss.deserialize_index(trained)
                with quiet_c_stdout():  # FAISS prints the file's resizing
                    merge_ondisk(merged, [str(p) for p in parts], str(staging / IVFDATA_FILE))
                faiss.write_index(merged, str(staging / INDEX_FILE))
                _fsync(staging / IVFDATA_FILE, staging / INDEX_FILE)
                stages["merge_s"] = time.perf_counter() - clock
                clock = time.perf_counter()
                merged.set_direct_map_type(faiss.DirectMap.Hashtable)
                record = {**choice.to_dict(), "params": dict(choice.params), "on_disk": True,
                          "user_given": bool(index)}
                probe = Catalog(None, info.replace(index=record), vectors, metadata, merged, rerank_vectors=copy)
                record.update(tune_search(probe, progress, stop_gain=TUNE_STOP_GAIN), params=dict(probe.choice.params))
                stages["tune_s"] = time.perf_counter() - clock
                record.update(build_seconds=round(sum(stages.values()), 3),
                              tune_seconds=round(stages["tune_s"], 3),
                              stages_seconds={k: round(v, 3) for k, v in stages.items()})
                write_metadata(staging / METADATA_FILE, metadata)
                with atomic_path(staging / VECTOR_LOCATIONS_FILE) as tmp, open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(locations, np.int64))
                if copy is not None:
                    _fsync(work / RERANK_VECTORS_FILE)
                    os.replace(work / RERANK_VECTORS_FILE, staging / RERANK_VECTORS_FILE)
                # commit_version writes this info as catalog.json once the version is in place.
                info.index, info.counts, info.skipped = record, counts(metadata, skipped), skipped
                info.last_operation = {"operation": "build-from-shards", "added": n, "skipped": len(skipped),
                                       "at": now()}

            commit_version(out, write, info, previous)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return UpdateReport("build-from-shards", out, items=n, added=n, skipped=skipped, index=info.index,
                        seconds=time.perf_counter() - started)


def _fill_parts(trained: np.ndarray, shards: Path, shard_info: dict, work: Path, n: int, progress,
                copy: np.ndarray | None, sorted_ids: np.ndarray) -> list[Path]:
    """Add every embedded row to copies of the trained index, written out every PART_VECTORS codes;
    where `copy` is given, also write each vector, as float16, to its metadata row (ids sorted)."""
    parts: list[Path] = []
    part = None

    def flush() -> None:
        nonlocal part
        if part is not None and part.ntotal:
            parts.append(work / f"part-{len(parts):05d}.index")
            faiss.write_index(part, str(parts[-1]))
        part = None

    added = Stage(progress, "adding to the index", n)
    for block in iter_blocks(shards, shard_info):
        if part is None:
            part = faiss.deserialize_index(trained)
        part.add_with_ids(np.ascontiguousarray(block.vectors), np.ascontiguousarray(block.ids))
        if copy is not None:
            copy[np.searchsorted(sorted_ids, block.ids)] = block.vectors.astype(np.float16)
        added.advance(len(block.ids))
        if part.ntotal >= PART_VECTORS:
            flush()
    flush()
    return parts


def _fsync(*paths: Path) -> None:
    for path in paths:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
