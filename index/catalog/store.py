"""A catalog folder on disk: its layout, its lock, its versions and the commit that switches them.

Layout of a catalog folder DIR:

    DIR/catalog.json                 the current version and what it is (replaced atomically)
    DIR/versions/<version>/embeddings.npy    float32 (n, d), L2-normalised: the source of truth
    DIR/versions/<version>/metadata.parquet  one row per item, same order: id, the manifest's
                                             columns, content_hash, file_size, file_mtime_ns
    DIR/versions/<version>/index.faiss       the search index, keyed by the stable ids (an exact,
                                             Flat index is stored empty and filled from
                                             embeddings.npy on load: its vectors are stored once)
    DIR/versions/<version>/catalog.json      the description of that version (a copy of what
                                             DIR/catalog.json said when it was written), so
                                             the version can be restored
    DIR/photos/<batch>/                      uploaded photos (index.catalog.uploaded_files), named in the
                                             metadata relative to DIR: a copy of DIR is a whole catalog
    DIR/.lock                                held (an OS lock) by the one process changing DIR;
    DIR/.lock-holder                         says who, for the message another writer gets

Every change writes a complete new version folder (first as versions/.tmp-<version>, renamed
when complete) and only then replaces catalog.json, which names the version. catalog.json is
the commit point: a crash at any moment leaves the previous catalog.json naming the previous,
untouched version, so readers see the old catalog or the new one, never a mix. The previous
version stays on disk one step longer for readers that are still loading it, and can be made
current again (restore_version: catalog.json pointed back at it, the undone version kept as the
previous one, so a restore can itself be undone).

On-disk catalogs (index.scale.ondisk, docs/scale.md) have no embeddings.npy: their inverted lists are a
memory-mapped index.ivfdata, their full vectors stay in the embedding shards (vector_locations.npy
says where), and results are re-scored from a float16 copy of the vectors (rerank_vectors.npy), or
where a catalog was built without one, scored by the index's codes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import posixpath
import secrets
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import faiss
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from embedder.files import atomic_path, fsync_dir, read_format_json
from embedder.progress import ProgressCallback, Stage, no_progress
from index.search.calibration import calibrate
from index.catalog.choose import index_kind
from index.catalog.description import FORMAT, CatalogInfo
from index.catalog.projection import Projection, ProjectionError
from index.manifest import PATH_COLUMN
from index.catalog.uploaded_files import (PHOTOS_FOLDER, adopt_legacy_uploads, delete_photos, named_photos,
                                          unnamed_photos)

INFO_FILE = "catalog.json"
LOCK_FILE = ".lock"
LOCK_HOLDER_FILE = ".lock-holder"
VERSIONS_DIR = "versions"
INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "embeddings.npy"
METADATA_FILE = "metadata.parquet"
# On-disk catalogs (index.scale.ondisk): the inverted lists beside index.faiss, memory-mapped, and where
# each item's full vector lies in the embedding shards (there is no embeddings.npy).
IVFDATA_FILE = "index.ivfdata"
VECTOR_LOCATIONS_FILE = "vector_locations.npy"
RERANK_VECTORS_FILE = "rerank_vectors.npy"  # on-disk catalogs: float16 copy of the vectors, for re-scoring

ID_COLUMN = "id"
HASH_COLUMN = "content_hash"
SIZE_COLUMN = "file_size"
MTIME_COLUMN = "file_mtime_ns"
IMAGE_PATH_COLUMN = "image_path"  # added on load (root / path), never stored
RESERVED_COLUMNS = (ID_COLUMN, HASH_COLUMN, SIZE_COLUMN, MTIME_COLUMN, IMAGE_PATH_COLUMN, "rank", "score")
INTERNAL_COLUMNS = (HASH_COLUMN, SIZE_COLUMN, MTIME_COLUMN)  # not shown in search results

CHUNK_ROWS = 65_536  # rows per block when streaming embeddings


class CatalogError(ValueError):
    """A catalog that cannot be used or changed as asked; the message says what to do."""


class CatalogLockedError(CatalogError):
    """Another process is changing the catalog."""


class ModelMismatchError(CatalogError):
    """The model is not the one the catalog was built with."""


class UnknownItemError(CatalogError):
    """An id the catalog does not hold."""


def now() -> str:
    """The current UTC time as catalogs record it (ISO 8601, milliseconds, Z)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalise_rel(path: str) -> str:
    """A manifest path as catalogs store it: forward slashes, no `.` or `x/..` parts."""
    return posixpath.normpath(str(path).replace("\\", "/"))


# ----------------------------------------------------------------------------- locking

# Errors that mean "this folder cannot be written" (a read-only mount, no permission).
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def not_writable_error(folder: Path, reason: str) -> CatalogError:
    return CatalogError(f"catalog folder {folder} is not writable ({reason}): nothing was changed; make it "
                        "writable (or copy the catalog to a writable folder) and run the command again")


def check_writable(folder: Path) -> None:
    """CatalogError unless this process may write the catalog folder and its versions folder."""
    for path in (folder, folder / VERSIONS_DIR):
        if path.is_dir() and not os.access(path, os.W_OK):  # access() also answers EROFS
            raise not_writable_error(folder, "Read-only file system" if _read_only_mount(path) else "Permission denied")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def catalog_lock(folder: str | os.PathLike, operation: str, timeout: float = 0.0) -> Iterator[None]:
    """Hold DIR/.lock (an OS lock, released even if the process dies); wait up to `timeout` s.

    Only this process holds it: filelock closes its descriptor in forked children (data-loader
    workers), so the lock is free the moment this process ends, even while orphaned workers live
    on (tests/test_faults.py checks it). A folder that cannot be written is refused here, before
    any work, with a CatalogError saying so.
    """
    folder = Path(folder)
    lock = FileLock(folder / LOCK_FILE, mode=0o644)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=max(timeout, 0.0), poll_interval=0.1)
    except Timeout:
        holder = ""
        with contextlib.suppress(OSError):
            holder = (folder / LOCK_HOLDER_FILE).read_text().strip()
        raise CatalogLockedError(f"catalog {folder} is being changed by another process ({holder or 'unknown'}); "
                                 "wait for it to finish and try again") from None
    except OSError as exc:
        if exc.errno in READ_ONLY_ERRNOS:
            raise not_writable_error(folder, exc.strerror or str(exc)) from None
        raise
    try:
        check_writable(folder)
        # Not data: only who holds the lock, for the message above.
        with contextlib.suppress(OSError):
            (folder / LOCK_HOLDER_FILE).write_text(
                f"pid {os.getpid()} on {socket.gethostname()}, {operation} since {now()}")
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------------------- the description

def read_info(folder: str | os.PathLike) -> CatalogInfo:
    """catalog.json of DIR, the one place it is read; CatalogError saying how to build one when
    there is none."""
    folder = Path(folder)

    def absent() -> str:
        what = "no such folder" if not folder.exists() else "catalog.json missing"
        return (f"no catalog at {folder} ({what}); build one with "
                "`python -m index build --manifest M --model CKPT --out DIR`")
    stored = read_format_json(folder / INFO_FILE, FORMAT, "a catalog", CatalogError, absent)
    try:
        return CatalogInfo.from_dict(stored)
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{folder / INFO_FILE} is damaged (missing or bad field: {exc}); "
                           "build the catalog again") from None


def read_info_or_none(folder: Path, key: str):
    """One field of catalog.json, or None where there is no readable catalog."""
    with contextlib.suppress(CatalogError):
        return getattr(read_info(folder), key)
    return None


def write_info(folder: Path, info: CatalogInfo) -> None:
    """Replace catalog.json atomically: the commit point of every change."""
    with atomic_path(folder / INFO_FILE) as tmp:
        tmp.write_text(json.dumps(info.to_dict(), indent=2, default=str) + "\n")


def check_model(info: CatalogInfo, fingerprint: str, model_name: str = "the model") -> None:
    """ModelMismatchError unless the model is the one the catalog was built with."""
    if fingerprint != info.model_fingerprint:
        built_with = info.model_path or "another model"
        raise ModelMismatchError(
            f"{model_name} (fingerprint {fingerprint}) is not the model this catalog was built with "
            f"({built_with}, fingerprint {info.model_fingerprint}): its vectors are not comparable. "
            "Rebuild the catalog with this model (`python -m index rebuild --catalog DIR --model CKPT`), "
            "or load the model it was built with")


def check_new_catalog_folder(out: Path, overwrite: bool) -> None:
    """A folder a new catalog may be written to: new, empty, or a catalog to be replaced (overwrite)."""
    if (out / INFO_FILE).exists() and not overwrite:
        raise CatalogError(f"{out} already holds a catalog; use `add`/`rebuild` to change it, "
                           "or build with --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise CatalogError(f"{out} is a file, not a catalog folder")
    if out.is_dir() and not (out / INFO_FILE).exists() and \
            any(p.name not in (LOCK_FILE, LOCK_HOLDER_FILE, VERSIONS_DIR) for p in out.iterdir()):
        raise CatalogError(f"{out} is a folder with other files in it; choose a new or empty folder")


# ----------------------------------------------------------------------------- index files

@contextlib.contextmanager
def quiet_c_stdout() -> Iterator[None]:
    """Silence what C code prints on stdout (FAISS announces every on-disk index it opens, which
    would corrupt `search --json`); Python's own stdout is untouched."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:  # no C library to flush (Windows): let it print
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)



def read_index(path: str | os.PathLike, on_disk: bool = False) -> faiss.Index:
    """Read index.faiss; an on-disk index maps its inverted lists (index.ivfdata beside it)
    read-only, and gets an id -> code map so results can be re-scored from its codes."""
    if not on_disk:
        return faiss.read_index(str(path))
    with quiet_c_stdout():
        index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def stores_no_vectors(factory: str) -> bool:
    """An exact (Flat) index is nothing but the vectors: its index.faiss holds the empty index and
    the vectors are added from embeddings.npy on load, so every write writes them once, not twice."""
    return index_kind(factory) == "flat"


def add_vectors(index: faiss.Index, embeddings: np.ndarray, ids: np.ndarray,
                progress: ProgressCallback = no_progress, stage: str = "indexing") -> None:
    """Add vectors with their ids to an index, a block at a time (a memory map is never read whole)."""
    counter = Stage(progress, stage, len(ids) if len(ids) > CHUNK_ROWS else 0)
    for start in range(0, len(ids), CHUNK_ROWS):
        block = np.ascontiguousarray(embeddings[start:start + CHUNK_ROWS], np.float32)
        index.add_with_ids(block, np.ascontiguousarray(ids[start:start + CHUNK_ROWS]))
        counter.advance(len(block))


# ----------------------------------------------------------------------------- writing versions

def _new_version() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)


def _whole_npy_file(block: np.ndarray) -> tuple[str, int] | None:
    """(file, data offset) when `block` is a whole float32 .npy file mapped read-only, else None."""
    filename, offset = getattr(block, "filename", None), getattr(block, "offset", None)
    if filename is None or offset is None or block.dtype != np.float32 or not block.flags.c_contiguous:
        return None
    try:
        return (filename, offset) if os.path.getsize(filename) == offset + block.nbytes else None
    except OSError:
        return None


def _copy_bytes(source: str, offset: int, length: int, out) -> None:
    """Copy a byte range of a file into `out` (in the kernel where the OS allows)."""
    out.flush()
    with open(source, "rb") as src:
        done = 0
        try:
            while done < length:
                step = os.copy_file_range(src.fileno(), out.fileno(), length - done, offset + done)
                if step == 0:
                    raise OSError("short copy")
                done += step
            out.seek(0, os.SEEK_END)
        except (AttributeError, OSError):  # no copy_file_range (macOS, Windows, some file systems)
            out.seek(0, os.SEEK_END)
            src.seek(offset + done)
            remaining = length - done
            while remaining:
                chunk = src.read(min(remaining, 1 << 24))
                out.write(chunk)
                remaining -= len(chunk)


def write_embeddings(target: Path, blocks: Sequence[np.ndarray], d: int) -> None:
    """One float32 (n, d) .npy from row blocks; an unchanged mapped file is copied, not re-read."""
    n = sum(b.shape[0] for b in blocks)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            np.lib.format.write_array_header_1_0(out, {"descr": np.dtype(np.float32).str, "fortran_order": False,
                                                       "shape": (n, d)})
            for block in blocks:
                whole = _whole_npy_file(block)
                if whole is not None:
                    _copy_bytes(whole[0], whole[1], block.nbytes, out)
                    continue
                for start in range(0, block.shape[0], CHUNK_ROWS):
                    out.write(np.ascontiguousarray(block[start:start + CHUNK_ROWS], np.float32).tobytes())


def write_metadata(target: Path, metadata: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        metadata.drop(columns=[IMAGE_PATH_COLUMN], errors="ignore").to_parquet(tmp, index=False)


def write_index(target: Path, index: faiss.Index | None, factory: str, d: int) -> None:
    """index.faiss; a Flat index (or None) is written empty: its vectors are embeddings.npy."""
    if index is None or stores_no_vectors(factory):
        index = faiss.IndexIDMap2(faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT))
    with atomic_path(target) as tmp:
        faiss.write_index(index, str(tmp))


def commit_catalog(folder: Path, embedding_blocks: Sequence[np.ndarray], metadata: pd.DataFrame,
                   index: faiss.Index | None, info: CatalogInfo, previous: str | None,
                   projection: Projection | None = None) -> CatalogInfo:
    """Write a complete new version (embeddings, metadata, index), then point catalog.json at it.
    A catalog of projected vectors (info.projection) also gets its projection file: `projection`
    where it was fitted now, else the one of the version `info` describes, carried over after its
    fingerprint is checked."""
    if info.projection is not None:
        if projection is None:
            try:
                projection = Projection.load(folder / VERSIONS_DIR / str(info.version), info.projection)
            except ProjectionError as exc:
                raise CatalogError(f"{exc}: nothing was changed; build the catalog again") from None
        if projection.record() != info.projection:
            raise CatalogError("the projection given is not the one the catalog's description records")
    info.calibration = calibrate(embedding_blocks, metadata)  # what a real match scores in this version
    if PATH_COLUMN in metadata:  # uploads kept below the image folder by earlier versions move into DIR
        paths, copied = adopt_legacy_uploads(folder, info.root, metadata[PATH_COLUMN])
        if copied or not paths.equals(metadata[PATH_COLUMN].astype(str)):
            metadata = metadata.assign(**{PATH_COLUMN: paths})
            info.last_operation = {**(info.last_operation or {}), "uploads_copied_into_catalog": copied}

    def write(staging: Path) -> None:
        write_embeddings(staging / EMBEDDINGS_FILE, embedding_blocks, info.feature_dim)
        write_metadata(staging / METADATA_FILE, metadata)
        write_index(staging / INDEX_FILE, index, info.index["factory"], info.feature_dim)
        if projection is not None:
            projection.save(staging)
    return commit_version(folder, write, info, previous)


def commit_version(folder: Path, write: Callable[[Path], None], info: CatalogInfo,
                   previous: str | None) -> CatalogInfo:
    """The commit protocol of every write: write(staging) fills a new version folder (each file
    complete and fsynced), which is renamed into place; then catalog.json is pointed at it."""
    versions = folder / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    version = _new_version()
    staging = versions / f".tmp-{version}"
    staging.mkdir()
    try:
        write(staging)
        info = info.replace(version=version, previous_version=previous, built_at=now())
        write_info(staging, info)  # the version's own description, for restore_version
        os.replace(staging, versions / version)
        fsync_dir(versions)
        write_info(folder, info)  # the commit point
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if (versions / version).exists() and read_info_or_none(folder, "version") != version:
            shutil.rmtree(versions / version, ignore_errors=True)
        raise
    _collect_garbage(folder, keep={version, previous})
    return info


def _collect_garbage(folder: Path, keep: set) -> None:
    """Remove unfinished staging folders, versions older than the previous one, and the temporary
    catalog.json of a writer that was killed (writers hold the lock, so none is being written);
    then the uploaded photos no version left on disk names (index.catalog.uploaded_files)."""
    for stale in folder.glob(f".{INFO_FILE}.*.tmp"):
        stale.unlink(missing_ok=True)
    versions = folder / VERSIONS_DIR
    if not versions.is_dir():
        return
    for entry in versions.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
    collect_photos(folder)


def collect_photos(folder: str | os.PathLike) -> list[Path]:
    """Delete every file below DIR/photos/ that no finished version on disk names: photos an add left out,
    saved by an add that failed or was killed, or named only by versions already dropped. Only files inside
    the catalog's own folder are ever deleted. Call under the catalog's lock; returns what was deleted."""
    folder = Path(folder)
    if not (folder / PHOTOS_FOLDER).is_dir():
        return []
    named: set[str] = set()
    versions = folder / VERSIONS_DIR
    for version in (versions.iterdir() if versions.is_dir() else []):
        if version.name.startswith(".") or not version.is_dir():
            continue  # an unfinished write (the lock's holder is the only writer: this one)
        paths = _catalog_paths(version)
        if paths is None:
            return []  # what cannot be read keeps its photos
        named |= named_photos(paths)
    files = unnamed_photos(folder, named)
    delete_photos(folder, files)
    return files


def _catalog_paths(version: Path) -> list[str] | None:
    """The catalog paths a version folder names; None when they cannot be read."""
    try:
        return pd.read_parquet(version / METADATA_FILE, columns=[PATH_COLUMN])[PATH_COLUMN].astype(str).tolist()
    except (OSError, ValueError, KeyError, ImportError):
        return None


# ----------------------------------------------------------------------------- versions and restore

@dataclass(frozen=True)
class CatalogVersion:
    """A complete version on disk, as `restore --list` shows it."""
    version: str
    current: bool
    built_at: str | None = None
    items: int | None = None
    last_operation: dict | None = None
    restorable: bool = True
    why_not: str = ""  # when not restorable


def list_versions(folder: str | os.PathLike) -> list[CatalogVersion]:
    """The complete versions in DIR/versions, the current one first, then newest first."""
    folder = Path(folder)
    current = read_info(folder).version
    found = []
    versions = folder / VERSIONS_DIR
    for entry in sorted(versions.iterdir() if versions.is_dir() else [], key=lambda p: p.name, reverse=True):
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # an unfinished write
        try:
            info = read_info(entry)
        except CatalogError:
            found.append(CatalogVersion(entry.name, entry.name == current, restorable=False,
                                        why_not="written before versions kept their own description"))
            continue
        found.append(CatalogVersion(entry.name, entry.name == current, info.built_at, info.counts.get("items"),
                                    info.last_operation))
    return sorted(found, key=lambda v: not v.current)


def restore_version(folder: Path, version: str | None) -> tuple[CatalogInfo, CatalogInfo]:
    """Point catalog.json at an earlier complete version (default: the previous one); returns
    (the description now current, the one it replaced). Call under the catalog's lock.

    The undone version becomes the previous one (so the restore can be undone), and ids are never
    given out twice: the restored catalog goes on numbering after the highest id ever used.
    """
    current = read_info(folder)
    target = version or current.previous_version
    if not target:
        raise CatalogError(f"catalog {folder} has no earlier version to restore (version {current.version} "
                           "is its first); `python -m index restore --catalog DIR --list` shows its versions")
    if target == current.version:
        return current, current
    stored = folder / VERSIONS_DIR / target
    if posixpath.basename(target) != target or target.startswith(".") or not stored.is_dir():
        kept = ", ".join(v.version for v in list_versions(folder)) or "none"
        raise CatalogError(f"catalog {folder} has no version {target!r} on disk (versions: {kept}); only the "
                           "current and the previous version are kept")
    try:
        restored = read_info(stored)
    except CatalogError:
        raise CatalogError(f"version {target} of {folder} was written before versions kept their own "
                           "description, so it cannot be restored; rebuild the catalog instead") from None
    restored = restored.replace(version=target, previous_version=current.version,
                                next_id=max(int(restored.next_id), int(current.next_id)),
                                last_operation={"operation": "restore", "restored": target,
                                                "undone": current.version, "at": now()})
    write_info(folder, restored)  # the commit point, as for every change
    _collect_garbage(folder, keep={target, current.version})
    return restored, current
