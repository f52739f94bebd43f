"""A catalog on disk: FAISS index, raw embeddings, metadata and a small catalog.json, one folder.

Layout of a catalog folder DIR:

    DIR/catalog.json                 the current version and what it is (replaced atomically)
    DIR/versions/<version>/embeddings.npy    float32 (n, d), L2-normalised: the source of truth
    DIR/versions/<version>/metadata.parquet  one row per item, same order: id, the manifest's
                                             columns, content_hash, file_size, file_mtime_ns
    DIR/versions/<version>/index.faiss       the search index, keyed by the stable ids (an exact,
                                             Flat index is stored empty and filled from
                                             embeddings.npy on load: its vectors are stored once)
    DIR/.lock                                held (flock) by the one process changing DIR

Every change writes a complete new version folder (first as versions/.tmp-<version>, renamed
when complete) and only then replaces catalog.json, which names the version. catalog.json is
the commit point: a crash at any moment leaves the previous catalog.json naming the previous,
untouched version, so readers see the old catalog or the new one, never a mix. The previous
version stays on disk one step longer for readers that are still loading it.

Ids are stable: an item keeps its id for its whole life, and ids are never reused (catalog.json
keeps next_id). Rows are kept sorted by id, so the FAISS id -> row lookup is a binary search.
Cosine similarity is the inner product on the normalised vectors; scores are cosines, re-scored
exactly from embeddings.npy for every result.

On-disk catalogs (index.ondisk, docs/scale.md) have no embeddings.npy: their inverted lists are a
memory-mapped index.ivfdata, their full vectors stay in the embedding shards (vector_locations.npy
says where), and results are re-scored from a float16 copy of the vectors (rerank_vectors.npy), or
where a catalog was built without one, scored by the index's codes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import posixpath
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from embedder.storage import _fsync_dir, atomic_path, read_format_json
from index.choose import (DEFAULT_MEMORY_BUDGET, RERANK_QUANTISED, IndexChoice, choice_from_factory, choose_index,
                          index_kind, quantised)
from index.evaluation import NpyRows, RecallReport, nearest_neighbours, recall_at_k
from index.manifest import (CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, read_manifest,
                            resolve_image_paths)
from index.shards import ShardVectors

FORMAT = "coinsp-catalog/1"
INFO_FILE = "catalog.json"
LOCK_FILE = ".lock"
VERSIONS_DIR = "versions"
INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "embeddings.npy"
METADATA_FILE = "metadata.parquet"
# On-disk catalogs (index.ondisk): the inverted lists beside index.faiss, memory-mapped, and where
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

RECALL_TARGET = 0.95  # recall@10 against exact search that tuning aims for
RECALL_K = 10
EXACT_POOL_FLOATS = 16_000_000  # a filtered pool this small (rows x d) is searched exactly
CHUNK_ROWS = 65_536  # rows per block when streaming embeddings
RERANK_MAX = 256  # tuning stops here: 2,560 rows re-scored for 10 results (8 ms at 10^7 x 512)
SINGLE_THREAD_QUERIES = 4  # searches of this few queries run FAISS on one thread (see faiss_threads)

if TYPE_CHECKING:  # torch is imported only where a model runs: loading and evaluating need none
    from embedder.embed import Embedder


class CatalogError(ValueError):
    """A catalog that cannot be used or changed as asked; the message says what to do."""


class CatalogLockedError(CatalogError):
    """Another process is changing the catalog."""


class ModelMismatchError(CatalogError):
    """The model is not the one the catalog was built with."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normalise_rel(path: str) -> str:
    return posixpath.normpath(str(path).replace("\\", "/"))


def _bar(total: int, desc: str, enabled: bool, unit: str = "img"):
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or total == 0, leave=False,
                dynamic_ncols=True)


# ----------------------------------------------------------------------------- locking

@contextlib.contextmanager
def catalog_lock(folder: str | os.PathLike, operation: str, timeout: float = 0.0) -> Iterator[None]:
    """Hold DIR/.lock (an OS lock, released even if the process dies); wait up to `timeout` s."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                holder = ""
                with contextlib.suppress(OSError):
                    holder = path.read_text().strip()
                raise CatalogLockedError(
                    f"catalog {folder} is being changed by another process ({holder or 'unknown'}); "
                    "wait for it to finish and try again")
            time.sleep(0.1)
        # The lock file is not data: it only says who holds the lock, for the message above.
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, {operation} since {_now()}".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run FAISS with n OpenMP threads inside the block (None: leave as is).

    FAISS parallelises a search across queries, so one query uses one thread anyway; the other
    threads only wait at barriers, which costs several milliseconds on a busy CPU (measured:
    36 ms vs 5 ms for one exact query over 10k x 2048 with a training run beside it).
    """
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextlib.contextmanager
def _c_stdout_to_devnull() -> Iterator[None]:
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
    with _c_stdout_to_devnull():
        index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


class _IndexCodes:
    """An on-disk catalog's vectors as its index stores them (decoded codes), indexed by row.

    Scores against these are the index's own scores, so re-scoring keeps the index's order;
    reading the full vectors from the shards for every result would cost a row group each.
    """

    def __init__(self, catalog: "Catalog"):
        self.catalog = catalog

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.catalog.ids), self.catalog.dim

    def __getitem__(self, rows) -> np.ndarray:
        ids = np.ascontiguousarray(self.catalog.ids[rows], np.int64).reshape(-1)
        if len(ids) == 0:
            return np.zeros((0, self.catalog.dim), np.float32)
        return self.catalog.index.reconstruct_batch(ids)


# ----------------------------------------------------------------------------- files and hashes

def _file_facts(path: Path) -> tuple[str, int, int]:
    """(content hash of the bytes, size, mtime_ns)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32], int(stat.st_size), int(stat.st_mtime_ns)


def _embed_files(embedder: "Embedder", paths: Sequence[Path], progress: bool, desc: str
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]], list[tuple[str, int, int]]]:
    """Embed and fingerprint files: (vectors, indices embedded, [(index, reason)], facts per vector)."""
    if not paths:
        return np.zeros((0, embedder.feature_dim), np.float32), np.zeros(0, np.int64), [], []
    with _bar(len(paths), desc, progress) as bar:
        def step(done: int, total: int) -> None:
            bar.update(done - bar.n)
        result = embedder.embed_files([str(p) for p in paths], progress=step)
    failures = [(int(i), reason) for i, _, reason in result.failures]
    vectors, embedded, facts, keep = result.embeddings, np.asarray(result.embedded, np.int64), [], []
    for j, i in enumerate(embedded):
        try:
            facts.append(_file_facts(paths[i]))
            keep.append(j)
        except OSError as exc:  # vanished between embedding and hashing
            failures.append((int(i), f"file not readable: {exc.strerror or exc}"))
    keep = np.asarray(keep, np.int64)
    return np.ascontiguousarray(vectors[keep], np.float32), embedded[keep], sorted(failures), facts


# ----------------------------------------------------------------------------- the catalog

def _count_present(sorted_ids: np.ndarray, values: Iterable[int]) -> int:
    """How many of `values` are in `sorted_ids` (ascending), by binary search."""
    values = np.fromiter(values, np.int64)
    if len(sorted_ids) == 0 or len(values) == 0:
        return 0
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return int((sorted_ids[at] == values).sum())


@dataclass
class SearchHits:
    """Per query: scores (cosine, descending) and ids; fewer than k where the pool ran out."""
    scores: list[np.ndarray]
    ids: list[np.ndarray]

    def padded(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) arrays; missing places have score NaN and id -1."""
        scores = np.full((len(self.ids), k), np.nan, np.float32)
        ids = np.full((len(self.ids), k), -1, np.int64)
        for i, (s, j) in enumerate(zip(self.scores, self.ids)):
            scores[i, :len(s)], ids[i, :len(j)] = s[:k], j[:k]
        return scores, ids


class Catalog:
    """A loaded catalog (no model needed): embeddings, metadata, info and the search index."""

    def __init__(self, folder: Path | None, info: dict, embeddings: np.ndarray, metadata: pd.DataFrame,
                 index: faiss.Index | None = None, index_path: Path | None = None,
                 rerank_vectors: np.ndarray | None = None):
        self.folder = None if folder is None else Path(folder)
        self.info = info
        self.embeddings = embeddings
        # Results are re-scored with these: the stored vectors, or for an on-disk catalog (whose
        # vectors are in shards, too slow to read per result) its float16 copy of them where it has
        # one, else the vectors its index codes decode to.
        self.on_disk = bool(info.get("vectors"))
        if not self.on_disk:
            self.scoring_vectors = embeddings
        else:
            self.scoring_vectors = _IndexCodes(self) if rerank_vectors is None else rerank_vectors
        self._index, self._index_path = index, index_path
        self.choice = IndexChoice.from_dict(info["index"])
        self.ids = metadata[ID_COLUMN].to_numpy(np.int64)
        if len(self.ids) > 1 and not (np.diff(self.ids) > 0).all():
            raise CatalogError("catalog metadata is not sorted by id: the catalog is damaged; rebuild it")
        root = info.get("root") or ""
        self.metadata = metadata
        if PATH_COLUMN in metadata:
            self.metadata = metadata.assign(**{IMAGE_PATH_COLUMN: root.rstrip("/\\") + os.sep
                                               + metadata[PATH_COLUMN].astype(str)})
        self._pools: dict[str, tuple[np.ndarray, np.ndarray, faiss.IDSelector]] = {}
        self._columns: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = True) -> "Catalog":
        """Open the current version of DIR; embeddings are memory-mapped (read-only) by default."""
        folder = Path(folder)
        for attempt in range(3):
            info = read_info(folder)
            version = folder / VERSIONS_DIR / info["version"]
            rerank_vectors = None
            try:
                if info.get("vectors"):  # on-disk catalog: the vectors stay in the embedding shards
                    locations = np.load(version / VECTOR_LOCATIONS_FILE, mmap_mode="r" if mmap else None)
                    embeddings = ShardVectors(info["vectors"]["folder"], info["vectors"]["files"],
                                              info["feature_dim"], locations)
                    if info["vectors"].get("rerank_copy"):
                        rerank_vectors = np.load(version / RERANK_VECTORS_FILE, mmap_mode="r")
                else:
                    embeddings = np.load(version / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
                metadata = pd.read_parquet(version / METADATA_FILE)
                if not (version / INDEX_FILE).is_file():
                    raise FileNotFoundError(version / INDEX_FILE)
                break
            except FileNotFoundError:
                if attempt == 2 or read_info(folder)["version"] == info["version"]:
                    raise CatalogError(f"catalog {folder} is damaged: version {info['version']} is incomplete; "
                                       "rebuild it with `python -m index build`") from None
        if len(metadata) != embeddings.shape[0] or embeddings.shape[1] != info["feature_dim"] or (
                rerank_vectors is not None and rerank_vectors.shape != embeddings.shape):
            raise CatalogError(f"catalog {folder} is inconsistent ({len(metadata)} rows, embeddings "
                               f"{embeddings.shape}); run `python -m index rebuild --catalog DIR --reembed`")
        # The index is read on first search: evaluation and the app's quality page never need it.
        return cls(folder, info, embeddings, metadata, index_path=version / INDEX_FILE, rerank_vectors=rerank_vectors)

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            try:
                index = read_index(self._index_path, on_disk=self.on_disk)
            except RuntimeError as exc:  # FAISS read errors
                raise CatalogError(f"catalog {self.folder}: index file unreadable ({str(exc).splitlines()[0]}); "
                                   "run `python -m index rebuild --catalog DIR`") from None
            if _stores_no_vectors(self.choice.factory) and index.ntotal == 0:
                _add_blocks(index, self.embeddings, self.ids, progress=False, desc="")  # a memory copy
            if index.ntotal != len(self.ids):
                raise CatalogError(f"catalog {self.folder} is inconsistent (index {index.ntotal} vectors, "
                                   f"{len(self.ids)} items); run `python -m index rebuild --catalog DIR`")
            self._index = index
        return self._index

    # ------------------------------------------------------------------ facts

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.info["feature_dim"])

    @property
    def fingerprint(self) -> str:
        return self.info["model_fingerprint"]

    @property
    def root(self) -> Path:
        return Path(self.info["root"])

    def categories(self) -> list[str]:
        if CATEGORY_COLUMN not in self.metadata:
            return []
        return sorted(self.metadata[CATEGORY_COLUMN].dropna().astype(str).unique())

    def rows_of(self, ids: Iterable[int]) -> np.ndarray:
        """Row positions of ids; CatalogError naming unknown ones."""
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), np.int64).reshape(-1)
        if len(self.ids) == 0:
            bad = np.ones(len(ids), bool)
            rows = np.zeros(len(ids), np.int64)
        else:
            rows = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
            bad = self.ids[rows] != ids
        if bad.any():
            shown = ", ".join(str(i) for i in ids[bad][:5])
            span = f"ids {self.ids.min()}..{self.ids.max()}" if len(self.ids) else "empty"
            raise CatalogError(f"no item with id {shown} in the catalog ({len(self.ids):,} items, {span})")
        return rows

    def vectors_of(self, ids: Iterable[int]) -> np.ndarray:
        """Stored embeddings of items, in the order given."""
        return np.asarray(self.embeddings[self.rows_of(ids)], np.float32)

    # ------------------------------------------------------------------ search

    def _pool(self, category: str) -> tuple[np.ndarray, np.ndarray, faiss.IDSelector]:
        """(rows, bitmap, selector) of a category, cached."""
        if category not in self._pools:
            if CATEGORY_COLUMN not in self.metadata:
                raise CatalogError("this catalog has no category column to filter on")
            rows = np.flatnonzero(self.metadata[CATEGORY_COLUMN].astype(str).to_numpy() == str(category))
            if len(rows) == 0:
                shown = ", ".join(self.categories()[:20])
                raise CatalogError(f"no items in category {category!r} (categories: {shown})")
            size = int(self.ids.max()) + 1
            bits = np.zeros(size, bool)
            bits[self.ids[rows]] = True
            bitmap = np.packbits(bits, bitorder="little")
            selector = faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap))
            self._pools[category] = (rows, bitmap, selector)
        return self._pools[category]

    def _params(self, k: int, selector=None, effort: float = 1.0):
        kind, params = index_kind(self.choice.factory), self.choice.params
        if kind == "hnsw":
            ef = int(min(max(params.get("efSearch", 64) * effort, k), 4096))
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        if kind == "ivf":
            nlist = faiss.extract_index_ivf(self.index).nlist
            nprobe = int(min(max(math.ceil(params.get("nprobe", 16) * effort), 1), nlist))
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _index_search(self, queries: np.ndarray, k: int, selector=None, effort: float = 1.0) -> np.ndarray:
        k = max(1, min(k, self.index.ntotal))
        _, ids = self.index.search(queries, k, params=self._params(k, selector, effort))
        return ids

    def _exact_pool(self, query: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
        """Ids of the exact top-k over `rows` (None: all), scanning embeddings in blocks."""
        total = len(self.ids) if rows is None else len(rows)
        k = min(k, total)
        best_scores, best_ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
        for start in range(0, total, CHUNK_ROWS):
            block_rows = np.arange(start, min(start + CHUNK_ROWS, total)) if rows is None else rows[start:start + CHUNK_ROWS]
            scores = np.asarray(self.scoring_vectors[block_rows], np.float32) @ query
            top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
            best_scores = np.concatenate([best_scores, scores[top]])
            best_ids = np.concatenate([best_ids, self.ids[block_rows[top]]])
            if len(best_scores) > k:
                keep = np.argpartition(-best_scores, k - 1)[:k]
                best_scores, best_ids = best_scores[keep], best_ids[keep]
        return best_ids

    def _finish(self, query: np.ndarray, candidates: np.ndarray, k: int, exclude: set,
                hide_above: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine of candidates, best first, minus excluded ids and near-duplicates."""
        candidates = candidates[candidates >= 0]
        if len(candidates) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        candidates = np.unique(candidates)
        rows = self.rows_of(candidates)
        vectors = np.asarray(self.scoring_vectors[rows], np.float32)
        scores = vectors @ query
        order = np.lexsort((candidates, -scores))  # best score first, ties by id: deterministic
        kept: list[int] = []
        for j in order:
            if int(candidates[j]) in exclude:
                continue
            if hide_above is not None and kept and float((vectors[kept] @ vectors[j]).max()) > hide_above:
                continue
            kept.append(int(j))
            if len(kept) == k:
                break
        return scores[kept].astype(np.float32), candidates[kept]

    def search_vectors(self, vectors, k: int = 10, *, category: str | None = None,
                       exclude_ids: Sequence[Iterable[int]] | None = None,
                       hide_duplicates_above: float | None = None) -> SearchHits:
        """Top-k catalog items for each query vector (rows L2-normalised, or they are normalised).

        category: only items of that category, still k of them when it has at least k: a small
        category is searched exactly over its rows; a large one through the index with an
        IDSelector (FAISS filters while it searches, with search effort raised by 1/share), and
        exactly over its rows if the index still finds fewer than k.
        exclude_ids: per query, ids never to return (e.g. the query item itself).
        hide_duplicates_above: drop a result whose cosine to a better-ranked kept one is above it.
        """
        queries = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = queries / np.where(norms > 0, norms, 1)
        if k < 1:
            raise ValueError("k must be at least 1")
        excludes = [set()] * len(queries) if exclude_ids is None else [set(int(i) for i in e) for e in exclude_ids]
        if len(excludes) != len(queries):
            raise ValueError("exclude_ids needs one entry per query")
        kind = index_kind(self.choice.factory)
        rows, selector, effort, pool_size = None, None, 1.0, len(self.ids)
        if category is not None:
            rows, _, selector = self._pool(category)
            pool_size = len(rows)
            effort = max(1.0, len(self.ids) / pool_size)
        pool_ids = self.ids if rows is None else self.ids[rows]
        # A small category of an approximate index: scanning its rows exactly is cheaper and sure.
        exact_pool = rows is not None and kind != "flat" and pool_size * self.dim <= EXACT_POOL_FLOATS
        # Compressed (SQ/PQ) scores blur near-ties: fetch more candidates, re-score them exactly.
        oversample = int(self.choice.params.get("rerank", RERANK_QUANTISED)) if quantised(self.choice.factory) else 1
        dup_factor = 3 if hide_duplicates_above is not None else 1
        max_exclude = max((len(e) for e in excludes), default=0)
        fetch = max(1, min((k + max_exclude) * oversample * dup_factor, pool_size))
        max_fetch = pool_size if hide_duplicates_above is None else min(pool_size, max(64 * fetch, 10_000))
        with faiss_threads(1 if len(queries) <= SINGLE_THREAD_QUERIES else None):
            return self._search_loop(queries, k, excludes, rows, pool_ids, pool_size, selector, effort, exact_pool,
                                     fetch, max_fetch, hide_duplicates_above)

    def _search_loop(self, queries, k, excludes, rows, pool_ids, pool_size, selector, effort, exact_pool, fetch,
                     max_fetch, hide_duplicates_above) -> SearchHits:
        def fetch_ids(query_block: np.ndarray, n_fetch: int, exact: bool, more_effort: float) -> np.ndarray:
            if exact:
                return np.stack([self._exact_pool(q, rows, n_fetch) for q in query_block])
            return self._index_search(query_block, n_fetch, selector, effort * more_effort)

        first = fetch_ids(queries, fetch, exact_pool, 1.0) if len(queries) else None
        out_scores, out_ids = [], []
        for i, query in enumerate(queries):
            excluded = excludes[i]
            in_pool = _count_present(pool_ids, excluded) if excluded else 0
            want = max(0, min(k, pool_size - in_pool))
            exact, n_fetch, more_effort = exact_pool, fetch, 1.0
            candidates = first[i]
            while True:
                scores, ids = self._finish(query, candidates, k, excluded, hide_duplicates_above)
                if len(ids) >= want:
                    break
                asked = min(n_fetch, pool_size)
                if not exact and int((candidates >= 0).sum()) < asked:
                    # The approximate index gave fewer than asked (a strict filter): search harder,
                    # then exactly over the pool.
                    if more_effort < 64:
                        more_effort *= 4
                    else:
                        exact = True
                elif n_fetch >= max_fetch:
                    break  # all there is: exclusions and near-duplicates took the rest
                else:
                    n_fetch = min(n_fetch * 4, max_fetch)
                    more_effort *= 2
                candidates = fetch_ids(query[None], n_fetch, exact, more_effort)[0]
            out_scores.append(scores)
            out_ids.append(ids)
        return SearchHits(out_scores, out_ids)

    def results_frame(self, scores: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
        """rank, score (cosine), id, the metadata (path, category, product_id, ...) and image_path."""
        ids = np.asarray(ids, np.int64)
        ok = ids >= 0
        rows = self.rows_of(ids[ok])
        if self._columns is None:  # column arrays, built once: a DataFrame per search stays cheap
            shown = [c for c in self.metadata.columns if c not in INTERNAL_COLUMNS and c != ID_COLUMN]
            shown = [c for c in shown if c != IMAGE_PATH_COLUMN] + ([IMAGE_PATH_COLUMN] if IMAGE_PATH_COLUMN in shown else [])
            self._columns = {c: self.metadata[c].to_numpy() for c in shown}
        data = {"rank": np.arange(1, len(rows) + 1), "score": np.asarray(scores, np.float32)[ok].astype(float),
                ID_COLUMN: ids[ok]}
        data.update({c: values[rows] for c, values in self._columns.items()})
        return pd.DataFrame(data)

    def search_frame(self, vector, k: int = 10, **options) -> pd.DataFrame:
        hits = self.search_vectors(np.asarray(vector)[None], k, **options)
        return self.results_frame(hits.scores[0], hits.ids[0])

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, label_column: str = PRODUCT_COLUMN, *, max_queries: int | None = None, seed: int = 0,
                 ks: Sequence[int] = (1, 2, 4, 8, 10, 100)) -> tuple[RecallReport, dict]:
        """Recall@k of the catalog over its own embeddings (shared recall_at_k, exact search).

        Leave-one-out: every item queries all the others. With max_queries < n, a seeded random
        sample of items queries all the others, which bounds the time on big catalogs and
        estimates the same figure. The embeddings are read from disk a block at a time, so
        memory stays bounded whatever the catalog's size. Returns (report, how it was run).
        """
        if label_column not in self.metadata:
            raise CatalogError(f"the catalog has no {label_column!r} column: recall needs the product label "
                               f"of every item (columns: {[c for c in self.metadata.columns if c not in INTERNAL_COLUMNS]})")
        labels = self.metadata[label_column].astype(str).to_numpy()
        categories = (self.metadata[CATEGORY_COLUMN].astype(str).to_numpy()
                      if CATEGORY_COLUMN in self.metadata else None)
        n = len(self.ids)
        stored = getattr(self.embeddings, "filename", None)  # a memory map: read it by blocks instead
        vectors = NpyRows(stored) if stored else self.embeddings
        if max_queries is None or max_queries >= n:
            report = recall_at_k(vectors, labels, ks=ks, query_categories=categories)
            how = {"mode": "leave-one-out", "queries": n, "gallery": n - 1}
        else:
            sample = np.sort(np.random.default_rng(seed).choice(n, size=max_queries, replace=False))
            report = recall_at_k(np.asarray(self.embeddings[sample]), labels[sample], gallery=vectors,
                                 gallery_labels=labels, ks=ks, query_gallery_rows=sample,
                                 query_categories=None if categories is None else categories[sample])
            how = {"mode": f"sampled: {max_queries:,} random items (seed {seed}), each against all other items",
                   "queries": int(max_queries), "gallery": int(n - 1)}
        how.update(label=label_column, items=n)
        return report, how


# ----------------------------------------------------------------------------- info

def read_info(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    def absent() -> str:
        what = "no such folder" if not folder.exists() else "catalog.json missing"
        return (f"no catalog at {folder} ({what}); build one with "
                "`python -m index build --manifest M --model CKPT --out DIR`")
    return read_format_json(folder / INFO_FILE, FORMAT, "a catalog", CatalogError, absent)


# ----------------------------------------------------------------------------- building indexes

def _train_sample(embeddings: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    n = embeddings.shape[0]
    if size >= n:
        return np.ascontiguousarray(embeddings, np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(embeddings[rows], np.float32)


def _new_index(choice: IndexChoice, d: int, embeddings: np.ndarray, progress: bool) -> faiss.Index:
    """An empty (trained) index for the choice, accepting add_with_ids."""
    index = faiss.index_factory(d, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        n = embeddings.shape[0]
        ivf = faiss.try_extract_index_ivf(index)
        needed = ivf.nlist if ivf is not None else 256
        if n < needed:
            raise CatalogError(f"index {choice.factory!r} needs at least {needed:,} vectors to train, "
                               f"the catalog has {n:,}; choose a smaller index (e.g. --index Flat)")
        if ivf is not None:
            ivf.cp.niter = 10
            size = min(n, max(ivf.nlist * 40, 20_000))
        else:
            size = min(n, 100_000)
        if progress:
            tqdm.write(f"training {choice.factory} on {size:,} vectors…")
        index.train(_train_sample(embeddings, size))
    try:
        index.add_with_ids(np.zeros((0, d), np.float32), np.zeros(0, np.int64))
    except RuntimeError:  # Flat, HNSW: stable ids through an id map
        index = faiss.IndexIDMap2(index)
    return index


def _add_blocks(index: faiss.Index, embeddings: np.ndarray, ids: np.ndarray, progress: bool, desc: str) -> None:
    with _bar(len(ids), desc, progress and len(ids) > CHUNK_ROWS, unit="vec") as bar:
        for start in range(0, len(ids), CHUNK_ROWS):
            block = np.ascontiguousarray(embeddings[start:start + CHUNK_ROWS], np.float32)
            index.add_with_ids(block, np.ascontiguousarray(ids[start:start + CHUNK_ROWS]))
            bar.update(len(block))


def _exact_top(queries: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows (shared nearest_neighbours), gallery streamed in blocks to bound memory."""
    block = 262_144
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_r = np.zeros((len(queries), 0), np.int64)
    for start in range(0, embeddings.shape[0], block):
        scores, rows = nearest_neighbours(queries, np.asarray(embeddings[start:start + block], np.float32), k)
        best_s = np.concatenate([best_s, scores], axis=1)
        best_r = np.concatenate([best_r, rows + start], axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_r, order, 1)
    return best_r


def measure_recall(catalog: Catalog, queries: int = 1000, k: int = RECALL_K, seed: int = 0,
                   exact: tuple[np.ndarray, list[np.ndarray]] | None = None) -> tuple[float, int, float]:
    """Recall@k of what catalog.search_vectors returns against exact search, items as queries
    (each excluding itself). Returns (recall, number of queries, lower 95% confidence bound)."""
    n, d = catalog.embeddings.shape
    if n < 2:
        return 1.0, 0, 1.0
    if exact is None:
        exact = _exact_reference(catalog, queries, k, seed)
    sample, truth = exact
    hits = catalog.search_vectors(np.asarray(catalog.embeddings[sample]), k,
                                  exclude_ids=[[i] for i in catalog.ids[sample]])
    found = np.array([len(set(h.tolist()) & set(t.tolist())) / max(len(t), 1) for h, t in zip(hits.ids, truth)])
    recall = float(found.mean())
    lower = recall - 1.96 * float(found.std(ddof=1)) / np.sqrt(len(found)) if len(found) > 1 else recall
    return recall, len(sample), float(lower)


def _exact_reference(catalog: Catalog, queries: int, k: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    n, d = catalog.embeddings.shape
    # Bound the exact work (queries x n x d multiply-adds) to about 1e12 (a minute on 2 cores)
    # on big catalogs, but keep at least 500 queries: fewer make the tuned recall too noisy.
    q = int(min(n, queries, max(500, 1e12 // max(n * d, 1))))
    sample = np.sort(np.random.default_rng(seed).choice(n, size=q, replace=False))
    rows = _exact_top(np.ascontiguousarray(catalog.embeddings[sample], np.float32), catalog.embeddings,
                      min(k + 1, n))
    truth = [catalog.ids[r[r != s][:k]] for r, s in zip(rows, sample)]
    return sample, truth


def _tune(catalog: Catalog, progress: bool, stop_gain: float | None = None) -> dict:
    """Raise efSearch / nprobe until recall@10 vs exact search reaches the target with 95%
    confidence (its lower confidence bound, over the sampled queries); returns the quality record.

    stop_gain: also stop when a step gains less recall than this (compressed codes, not the
    lists searched, then limit recall: more effort only costs time)."""
    kind = index_kind(catalog.choice.factory)
    if kind == "flat":
        return {"recall_at_10": 1.0, "recall_queries": 0, "note": "exact search"}
    exact = _exact_reference(catalog, 1000, RECALL_K, 0)
    if kind == "hnsw":
        knob, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    elif kind == "ivf":
        nlist = faiss.extract_index_ivf(catalog.index).nlist
        knob, values = "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if v < nlist] + [nlist]
    else:
        recall, q, lower = measure_recall(catalog, exact=exact)
        return {"recall_at_10": recall, "recall_at_10_lower95": lower, "recall_queries": q}
    tried, measured, reached, levelled, previous = {}, {}, None, None, 0.0
    for i, value in enumerate(values):
        catalog.choice.params[knob] = value
        recall, q, lower = measured[value] = measure_recall(catalog, exact=exact)
        tried[str(value)] = round(recall, 4)
        if progress:
            tqdm.write(f"  {knob}={value}: recall@10 {recall:.4f} (95% lower bound {lower:.4f}, {q} queries)")
        if reached is not None:
            break  # the margin step has been measured
        if stop_gain is not None and i > 0 and recall - previous < stop_gain:
            levelled = value
            break
        previous = recall
        if lower >= RECALL_TARGET:
            reached = value
            if i + 1 == len(values):
                break
    # One step of margin: catalog items as queries overestimate recall for new photos (measured
    # on 10^6 x 2048: nprobe=1 gave 0.988 on items, 0.897 on photos between near-duplicates).
    record = {"recall_at_10": recall, "recall_at_10_lower95": lower, "recall_queries": q, "tuned": knob,
              "target_reached_at": reached, "tried": tried}
    if levelled is not None:
        record["levelled_off_at"] = levelled
        record["note"] = (f"recall@10 stopped rising (less than {stop_gain} per step) at {knob}={levelled} "
                          f"before the {RECALL_TARGET} target: the compressed codes limit it")
        paid = values[values.index(levelled) - 1]  # the last step that still gained (never the first)
        catalog.choice.params[knob] = paid
        recall, q, lower = _tune_rerank(catalog, exact, measured[paid], stop_gain, progress, record)
        record.update(recall_at_10=recall, recall_at_10_lower95=lower, recall_queries=q)
    elif reached is None:
        record["note"] = f"recall@10 target {RECALL_TARGET} not reached with confidence at the largest {knob}"
    return record


def _tune_rerank(catalog: Catalog, exact, current: tuple[float, int, float], stop_gain: float, progress: bool,
                 record: dict) -> tuple[float, int, float]:
    """Where the codes limit recall and results are re-scored from real vectors, more candidates
    per result is what pays (measured at 10^7 x 512, PQ64: 16 -> 0.705, 64 -> 0.874 at the same
    p50); raise it by 4x steps while a step gains at least stop_gain, up to RERANK_MAX.
    `current`: (recall, queries, lower bound) measured with the present parameters."""
    params = catalog.choice.params
    if isinstance(catalog.scoring_vectors, _IndexCodes) or not quantised(catalog.choice.factory):
        return current  # codes rank the same however many candidates
    best = int(params.get("rerank", RERANK_QUANTISED))
    recall, q, lower = current
    tried = {str(best): round(recall, 4)}
    while best * 4 <= RERANK_MAX and lower < RECALL_TARGET:
        params["rerank"] = best * 4
        more, more_q, more_lower = measure_recall(catalog, exact=exact)
        tried[str(best * 4)] = round(more, 4)
        if progress:
            tqdm.write(f"  rerank={best * 4}: recall@10 {more:.4f} (95% lower bound {more_lower:.4f}, {more_q} queries)")
        if more - recall < stop_gain:
            break
        best, recall, q, lower = best * 4, more, more_q, more_lower
    params["rerank"] = best
    record["rerank_tried"] = tried
    return recall, q, lower


def _build_index(choice: IndexChoice, embeddings: np.ndarray, metadata: pd.DataFrame, info: dict,
                 progress: bool, tune: bool = True) -> tuple[faiss.Index, dict]:
    started = time.perf_counter()
    d = embeddings.shape[1]
    index = _new_index(choice, d, embeddings, progress)
    _add_blocks(index, embeddings, metadata[ID_COLUMN].to_numpy(np.int64), progress, f"indexing ({choice.factory})")
    built = time.perf_counter() - started
    record = dict(choice.to_dict())
    record["params"] = dict(choice.params)
    quality = {}
    if tune:
        probe = Catalog(None, {**info, "index": record}, embeddings, metadata, index)
        quality = _tune(probe, progress)
        record["params"] = dict(probe.choice.params)
    record.update(quality, build_seconds=round(built, 3), tune_seconds=round(time.perf_counter() - started - built, 3))
    return index, record


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
        try:
            done = 0
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


def _write_embeddings(target: Path, blocks: Sequence[np.ndarray], d: int) -> None:
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


def _write_metadata(target: Path, metadata: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        metadata.drop(columns=[IMAGE_PATH_COLUMN], errors="ignore").to_parquet(tmp, index=False)


def _stores_no_vectors(factory: str) -> bool:
    """An exact (Flat) index is nothing but the vectors: its index.faiss holds the empty index and
    the vectors are added from embeddings.npy on load, so every write writes them once, not twice."""
    return index_kind(factory) == "flat"


def _empty_like(factory: str, d: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT))


def _write_index(target: Path, index: faiss.Index | None, factory: str, d: int) -> None:
    if index is None or _stores_no_vectors(factory):
        index = _empty_like(factory, d)
    with atomic_path(target) as tmp:
        faiss.write_index(index, str(tmp))


def _write_info(folder: Path, info: dict) -> None:
    with atomic_path(folder / INFO_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")


def _commit(folder: Path, embedding_blocks: Sequence[np.ndarray], metadata: pd.DataFrame, index: faiss.Index,
            info: dict, previous: str | None) -> dict:
    """Write a complete new version, then point catalog.json at it (the atomic step); tidy up."""
    def write(staging: Path) -> None:
        _write_embeddings(staging / EMBEDDINGS_FILE, embedding_blocks, int(info["feature_dim"]))
        _write_metadata(staging / METADATA_FILE, metadata)
        _write_index(staging / INDEX_FILE, index, info["index"]["factory"], int(info["feature_dim"]))
    return commit_version(folder, write, info, previous)


def commit_version(folder: Path, write, info: dict, previous: str | None) -> dict:
    """The commit protocol of every write: write(staging) fills a new version folder (each file
    complete and fsynced), which is renamed into place; then catalog.json is pointed at it."""
    versions = folder / VERSIONS_DIR
    versions.mkdir(parents=True, exist_ok=True)
    version = _new_version()
    staging = versions / f".tmp-{version}"
    staging.mkdir()
    try:
        write(staging)
        os.replace(staging, versions / version)
        _fsync_dir(versions)
        info = {**info, "version": version, "previous_version": previous, "built_at": _now()}
        _write_info(folder, info)  # the commit point
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if (versions / version).exists() and read_info_or_none(folder, "version") != version:
            shutil.rmtree(versions / version, ignore_errors=True)
        raise
    _collect_garbage(folder, keep={version, previous})
    return info


def read_info_or_none(folder: Path, key: str):
    with contextlib.suppress(CatalogError, KeyError):
        return read_info(folder)[key]
    return None


def _collect_garbage(folder: Path, keep: set) -> None:
    """Remove unfinished staging folders, versions older than the previous one, and the temporary
    catalog.json of a writer that was killed (writers hold the lock, so none is being written)."""
    for stale in folder.glob(f".{INFO_FILE}.*.tmp"):
        stale.unlink(missing_ok=True)
    versions = folder / VERSIONS_DIR
    if not versions.is_dir():
        return
    for entry in versions.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


# ----------------------------------------------------------------------------- operations

@dataclass
class UpdateReport:
    """What an operation did."""
    operation: str
    folder: Path
    items: int = 0  # items in the catalog afterwards
    added: int = 0  # new items embedded
    reused: int = 0  # new items whose identical bytes were already embedded (no model run)
    updated: int = 0  # items whose file changed: re-embedded, same id
    unchanged: int = 0  # items already in the catalog
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) this operation
    index: dict = field(default_factory=dict)
    seconds: float = 0.0
    reembedded: bool = False
    wrote: bool = True

    def summary(self) -> str:
        parts = [f"{self.operation}: {self.items:,} items"]
        for name in ("added", "reused", "updated", "unchanged", "removed"):
            value = getattr(self, name)
            if value:
                parts.append(f"{value:,} {name}" if name != "reused" else f"{value:,} added from identical images")
        if self.skipped:
            parts.append(f"{len(self.skipped):,} skipped")
        if self.index:
            recall = self.index.get("recall_at_10")
            parts.append(f"index {self.index.get('factory')}"
                         + (f" (recall@10 vs exact {recall:.3f})" if recall is not None else ""))
        if not self.wrote:
            parts.append("nothing to change")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"

    def to_dict(self) -> dict:
        return {"operation": self.operation, "folder": str(self.folder), "items": self.items, "added": self.added,
                "reused": self.reused, "updated": self.updated, "unchanged": self.unchanged,
                "removed": self.removed, "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "index": self.index, "seconds": round(self.seconds, 3), "reembedded": self.reembedded,
                "wrote": self.wrote}


def _load_embedder(model, precision: str) -> tuple["Embedder", str | None]:
    from embedder.embed import Embedder

    if isinstance(model, Embedder):
        return model, None
    embedder = Embedder.from_checkpoint(model, precision=precision)
    return embedder, str(Path(model).absolute())


def _check_columns(table: pd.DataFrame, source: str) -> None:
    clash = [c for c in RESERVED_COLUMNS if c in table.columns]
    if clash:
        raise CatalogError(f"{source} has column(s) {clash} that the catalog reserves; rename them")


def _relative_paths(table: pd.DataFrame, manifest_root: Path, catalog_root: Path,
                    known: Iterable[str] = ()) -> list[str]:
    """Manifest paths rebased on the catalog's image root; refuses images outside it.

    Paths already in the catalog (`known`, same root) were checked when they were added; only
    the others go through the shared check (resolve_image_paths).
    """
    if manifest_root.absolute() == catalog_root:
        normalised = [_normalise_rel(p) for p in table[PATH_COLUMN]]
        known = set(known)
        new_rows = [i for i, p in enumerate(normalised) if p not in known]
        if new_rows:
            resolve_image_paths(table.iloc[new_rows], manifest_root)
        return normalised
    out = []
    for path in resolve_image_paths(table, manifest_root):
        try:
            out.append(path.relative_to(catalog_root).as_posix())
        except ValueError:
            raise CatalogError(f"{path} is outside the catalog's image folder {catalog_root}; put new images "
                               "below it (paths are stored relative to it) or build a new catalog") from None
    return out


def _merge_skipped(old: list[dict], new: list[tuple[str, str]], now_ok: Iterable[str] = ()) -> list[dict]:
    merged = {entry["path"]: entry["reason"] for entry in old}
    for path in now_ok:
        merged.pop(path, None)
    merged.update(dict(new))
    return [{"path": p, "reason": r} for p, r in merged.items()]


def _counts(metadata: pd.DataFrame, skipped: list[dict]) -> dict:
    counts = {"items": int(len(metadata)), "skipped": len(skipped)}
    if CATEGORY_COLUMN in metadata:
        counts["categories"] = {str(k): int(v) for k, v in metadata[CATEGORY_COLUMN].value_counts().sort_index().items()}
    return counts


def _resolve_choice(index: str | None, n: int, d: int, budget: int, previous: dict | None) -> IndexChoice:
    if index:
        choice = choice_from_factory(index, d)
        return IndexChoice(choice.factory, reason=choice.reason, params=choice.params)
    if previous and previous.get("user_given"):
        return IndexChoice(previous["factory"], reason=previous.get("reason", ""), params=dict(previous.get("params", {})))
    return choose_index(n, d, budget)


def check_new_catalog_folder(out: Path, overwrite: bool) -> None:
    """A folder a new catalog may be written to: new, empty, or a catalog to be replaced (overwrite)."""
    if (out / INFO_FILE).exists() and not overwrite:
        raise CatalogError(f"{out} already holds a catalog; use `add`/`rebuild` to change it, "
                           "or build with --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise CatalogError(f"{out} is a file, not a catalog folder")
    if out.is_dir() and not (out / INFO_FILE).exists() and \
            any(p.name not in (LOCK_FILE, VERSIONS_DIR) for p in out.iterdir()):
        raise CatalogError(f"{out} is a folder with other files in it; choose a new or empty folder")


def build_catalog(manifest: str | os.PathLike, model, out: str | os.PathLike, *, index: str | None = None,
                  memory_budget: int | None = None, precision: str = "bf16", overwrite: bool = False,
                  progress: bool = True, lock_timeout: float = 0.0) -> UpdateReport:
    """Embed every image of a manifest and write a catalog folder.

    Unreadable images (missing, corrupt, not an image) are skipped and listed with the reason.
    `model` is a checkpoint path (or an Embedder). An existing catalog is replaced only with
    overwrite=True (ids then start again from 0: it is a new catalog).
    """
    started = time.perf_counter()
    manifest, out = Path(manifest), Path(out)
    table = read_manifest(manifest)
    _check_columns(table, f"manifest {manifest}")
    root = manifest.parent.absolute()
    paths = resolve_image_paths(table, root)
    check_new_catalog_folder(out, overwrite)
    embedder, model_path = _load_embedder(model, precision)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    with catalog_lock(out, "build", lock_timeout):
        previous = read_info_or_none(out, "version")
        vectors, embedded, failures, facts = _embed_files(embedder, paths, progress, "embedding")
        if len(vectors) == 0:
            reasons = "; ".join(f"{table[PATH_COLUMN].iloc[i]}: {r}" for i, r in failures[:3])
            raise CatalogError(f"none of the {len(paths):,} images of {manifest} could be used ({reasons})")
        metadata = table.iloc[embedded].reset_index(drop=True)
        metadata[PATH_COLUMN] = [_normalise_rel(p) for p in metadata[PATH_COLUMN]]
        metadata.insert(0, ID_COLUMN, np.arange(len(metadata), dtype=np.int64))
        metadata[HASH_COLUMN] = [f[0] for f in facts]
        metadata[SIZE_COLUMN] = np.asarray([f[1] for f in facts], np.int64)
        metadata[MTIME_COLUMN] = np.asarray([f[2] for f in facts], np.int64)
        skipped = [(_normalise_rel(table[PATH_COLUMN].iloc[i]), reason) for i, reason in failures]
        choice = _resolve_choice(index, len(vectors), vectors.shape[1], budget, None)
        info = {
            "format": FORMAT,
            "model_fingerprint": embedder.fingerprint,
            "model_path": model_path,
            "precision": embedder.precision,
            "feature_dim": int(vectors.shape[1]),
            "created_at": _now(),
            "root": str(root),
            "manifest": str(manifest.absolute()),
            "memory_budget_bytes": budget,
            "next_id": int(len(metadata)),
        }
        index_obj, record = _build_index(choice, vectors, metadata, info, progress)
        record["user_given"] = bool(index)
        skipped_list = _merge_skipped([], skipped)
        info.update(index=record, counts=_counts(metadata, skipped_list), skipped=skipped_list)
        report = UpdateReport("build", out, items=len(metadata), added=len(metadata), skipped=skipped,
                              index=record)
        info["last_operation"] = {"operation": "build", "added": len(metadata), "skipped": len(skipped), "at": _now()}
        _commit(out, [vectors], metadata, index_obj, info, previous)
    report.seconds = time.perf_counter() - started
    return report


def _open_embedder_for(catalog: Catalog, model) -> "Embedder":
    """The catalog's own model (by default the checkpoint it was built from), fingerprint-checked."""
    if model is None:
        model = catalog.info.get("model_path")
        if not model:
            raise CatalogError("the catalog does not record its model's checkpoint path; pass --model")
    embedder, _ = _load_embedder(model, catalog.info.get("precision", "bf16"))
    check_model(catalog.info, embedder.fingerprint, str(model) if isinstance(model, (str, os.PathLike)) else "the model")
    return embedder


def check_model(info: dict, fingerprint: str, model_name: str = "the model") -> None:
    if fingerprint != info["model_fingerprint"]:
        built_with = info.get("model_path") or "another model"
        raise ModelMismatchError(
            f"{model_name} (fingerprint {fingerprint}) is not the model this catalog was built with "
            f"({built_with}, fingerprint {info['model_fingerprint']}): its vectors are not comparable. "
            "Rebuild the catalog with this model (`python -m index rebuild --catalog DIR --model CKPT`), "
            "or load the model it was built with")


def add_to_catalog(folder: str | os.PathLike, manifest: str | os.PathLike | None = None, *,
                   images: str | os.PathLike | None = None, model=None, progress: bool = True,
                   lock_timeout: float = 0.0) -> UpdateReport:
    """Add the images of a manifest (or an image folder) that the catalog does not hold yet.

    A file whose path is in the catalog with the same bytes is left alone (size and mtime
    equal: not even read); same path, new bytes: re-embedded under its id; a new path whose
    bytes are already in the catalog reuses that embedding; only the rest are embedded.
    """
    started = time.perf_counter()
    folder = Path(folder)
    if (manifest is None) == (images is None):
        raise CatalogError("give a manifest or an image folder to add")
    if images is not None:
        from index.importers import import_image_folder
        try:
            manifest = import_image_folder(images)
        except FileNotFoundError as exc:
            raise CatalogError(str(exc)) from None
    manifest = Path(manifest)
    table = read_manifest(manifest)
    _check_columns(table, f"manifest {manifest}")
    with catalog_lock(folder, "add", lock_timeout):
        catalog = Catalog.load(folder)
        _refuse_on_disk(catalog, "add")
        info, old_meta = dict(catalog.info), catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN], errors="ignore")
        rel = _relative_paths(table, manifest.parent.absolute(), catalog.root, known=old_meta[PATH_COLUMN].astype(str))
        table = table.assign(**{PATH_COLUMN: rel}).drop_duplicates(PATH_COLUMN, keep="first").reset_index(drop=True)
        row_of_path = dict(zip(old_meta[PATH_COLUMN].astype(str), range(len(old_meta))))
        old_hash = old_meta[HASH_COLUMN].to_numpy(object)
        old_size = old_meta[SIZE_COLUMN].to_numpy(np.int64)
        old_mtime = old_meta[MTIME_COLUMN].to_numpy(np.int64)
        row_of_hash = {}
        for r, h in enumerate(old_hash):
            row_of_hash.setdefault(h, r)
        root = str(catalog.root)
        unchanged, changed_rows, changed_j, reuse, to_embed, failures, facts_of = [], [], [], [], [], [], {}
        with _bar(len(table), "checking files", progress, unit="file") as bar:
            for j, path in enumerate(table[PATH_COLUMN].tolist()):
                file = os.path.join(root, path)
                try:
                    stat = os.stat(file)
                except OSError:
                    failures.append((path, f"file not found: {file}"))
                    continue
                r = row_of_path.get(path)
                # Same size and modification time: the same file (as git and rsync assume); not read.
                if r is not None and old_size[r] == stat.st_size and old_mtime[r] == stat.st_mtime_ns:
                    unchanged.append(r)
                    continue
                try:
                    facts = _file_facts(Path(file))
                except OSError as exc:
                    failures.append((path, f"file not readable: {exc.strerror or exc}"))
                    continue
                facts_of[j] = facts
                if r is not None and old_hash[r] == facts[0]:
                    unchanged.append(r)  # touched, same bytes
                elif r is not None:
                    changed_rows.append(r)
                    changed_j.append(j)
                elif facts[0] in row_of_hash:
                    reuse.append(j)
                else:
                    to_embed.append(j)
                if j % 1024 == 0:
                    bar.update(j - bar.n)
            bar.update(len(table) - bar.n)
        todo = changed_j + to_embed
        vectors = np.zeros((0, catalog.dim), np.float32)
        embedded_j: list[int] = []
        if todo:
            embedder = _open_embedder_for(catalog, model)
            vectors, embedded, embed_failures, new_facts = _embed_files(
                embedder, [catalog.root / table[PATH_COLUMN].iat[j] for j in todo], progress, "embedding new images")
            embedded_j = [todo[i] for i in embedded]
            for i, f in zip(embedded, new_facts):
                facts_of[todo[i]] = f
            failures += [(table[PATH_COLUMN].iat[todo[i]], reason) for i, reason in embed_failures]
        vector_of = dict(zip(embedded_j, vectors))
        updated = [(r, j) for r, j in zip(changed_rows, changed_j) if j in vector_of]
        new_js = [j for j in sorted(set(reuse) | set(to_embed)) if j in vector_of or j in reuse]
        report = UpdateReport("add", folder, unchanged=len(set(unchanged)),
                              skipped=[(p, r) for p, r in failures])
        if not updated and not new_js:
            info_skipped = _merge_skipped(info.get("skipped", []), failures)
            report.items, report.wrote = len(old_meta), False
            if info_skipped != info.get("skipped", []):
                info.update(skipped=info_skipped, counts=_counts(old_meta, info_skipped))
                _write_info(folder, info)
            report.seconds = time.perf_counter() - started
            return report

        # New metadata: old rows (changed ones refreshed), then new rows with new ids.
        new_meta = old_meta.copy()
        extra = [c for c in table.columns if c not in new_meta.columns]
        for column in extra:
            new_meta[column] = pd.Series([pd.NA] * len(new_meta), dtype=object)
        for r, j in updated:
            for column in table.columns:
                new_meta.at[r, column] = table.at[j, column]
            h, s, m = facts_of[j]
            new_meta.at[r, HASH_COLUMN], new_meta.at[r, SIZE_COLUMN], new_meta.at[r, MTIME_COLUMN] = h, s, m
        first_id = int(info["next_id"])
        added_rows = table.iloc[new_js].reset_index(drop=True)
        added_rows.insert(0, ID_COLUMN, np.arange(first_id, first_id + len(new_js), dtype=np.int64))
        added_rows[HASH_COLUMN] = [facts_of[j][0] for j in new_js]
        added_rows[SIZE_COLUMN] = np.asarray([facts_of[j][1] for j in new_js], np.int64)
        added_rows[MTIME_COLUMN] = np.asarray([facts_of[j][2] for j in new_js], np.int64)
        new_meta = pd.concat([new_meta, added_rows[[c for c in new_meta.columns if c in added_rows]]],
                             ignore_index=True)
        new_vectors = np.stack([vector_of[j] if j in vector_of else
                                np.asarray(catalog.embeddings[row_of_hash[facts_of[j][0]]], np.float32)
                                for j in new_js]).astype(np.float32) if new_js else np.zeros((0, catalog.dim), np.float32)

        # Embeddings: the old file's rows (changed rows patched in a copy of their block), then new.
        blocks: list[np.ndarray] = [catalog.embeddings]
        if updated:  # old rows with the changed ones replaced, as slices (nothing loaded whole)
            blocks, at = [], 0
            for r, j in sorted(updated):
                blocks += [catalog.embeddings[at:r], vector_of[j][None]]
                at = r + 1
            blocks.append(catalog.embeddings[at:])
        blocks.append(new_vectors)

        record = dict(info["index"])
        rebuilt = False
        flat = _stores_no_vectors(record["factory"])  # nothing to update: its vectors are embeddings.npy
        index = None if flat else catalog.index
        if updated and not flat:
            changed_ids = catalog.ids[[r for r, _ in updated]]
            try:
                index.remove_ids(faiss.IDSelectorBatch(changed_ids))
                index.add_with_ids(np.stack([vector_of[j] for _, j in updated]), changed_ids)
            except RuntimeError:  # HNSW cannot remove: rebuild from the embeddings
                rebuilt = True
        if rebuilt:
            all_vectors = np.concatenate(blocks)
            index, record = _build_index(IndexChoice.from_dict(record), all_vectors, new_meta, info, progress,
                                         tune=False)
            record = {**info["index"], **{k: v for k, v in record.items() if k in ("build_seconds",)}}
        elif not flat:
            index.add_with_ids(new_vectors, new_meta[ID_COLUMN].to_numpy(np.int64)[len(old_meta):])
        ok_paths = set(table[PATH_COLUMN].iloc[[j for _, j in updated] + new_js])
        info_skipped = _merge_skipped(info.get("skipped", []), failures, now_ok=ok_paths)
        info.update(next_id=first_id + len(new_js), index=record, counts=_counts(new_meta, info_skipped),
                    skipped=info_skipped)
        report.items, report.updated = len(new_meta), len(updated)
        report.reused = sum(1 for j in new_js if j not in vector_of)
        report.added = len(new_js) - report.reused
        report.index = record
        info["last_operation"] = {"operation": "add", "added": report.added + report.reused,
                                  "updated": report.updated, "skipped": len(failures), "at": _now()}
        _commit(folder, blocks, new_meta, index, info, info.get("version"))
    report.seconds = time.perf_counter() - started
    return report


def _refuse_on_disk(catalog: Catalog, operation: str) -> None:
    if catalog.on_disk:
        raise CatalogError(
            f"catalog {catalog.folder} is an on-disk catalog built from embedding shards, which {operation} "
            "does not change: embed the new manifest (`python -m index embed-ray`) and build it again with "
            "`python -m index build-from-shards ... --overwrite`")


def _ids_for_paths(catalog: Catalog, paths: Iterable[str]) -> list[int]:
    by_path = dict(zip(catalog.metadata[PATH_COLUMN].astype(str), catalog.ids))
    root = catalog.root
    found, missing = [], []
    for raw in paths:
        path = Path(raw)
        key = _normalise_rel(raw)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                key = path.relative_to(root).as_posix()
        if key in by_path:
            found.append(int(by_path[key]))
        else:
            missing.append(str(raw))
    if missing:
        raise CatalogError(f"not in the catalog: {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                           + " (paths are relative to the catalog's image folder "
                           f"{root}, as in its metadata)")
    return found


def _kept_rows(embeddings: np.ndarray, keep: np.ndarray) -> list[np.ndarray]:
    """The kept rows as blocks: runs of kept rows are slices of the mapped file (nothing loaded whole)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [embeddings[start:stop] for start, stop in zip(edges[::2], edges[1::2])]


def remove_from_catalog(folder: str | os.PathLike, *, ids: Iterable[int] = (), paths: Iterable[str] = (),
                        progress: bool = True, lock_timeout: float = 0.0) -> UpdateReport:
    """Remove items by id and/or path; their ids are never given out again."""
    started = time.perf_counter()
    folder = Path(folder)
    ids, paths = [int(i) for i in ids], list(paths)
    if not ids and not paths:
        raise CatalogError("give the ids or paths of the items to remove")
    with catalog_lock(folder, "remove", lock_timeout):
        catalog = Catalog.load(folder)
        _refuse_on_disk(catalog, "remove")
        info = dict(catalog.info)
        catalog.rows_of(ids)  # raises on unknown ids
        targets = np.unique(np.asarray(ids + _ids_for_paths(catalog, paths), np.int64))
        if len(targets) >= len(catalog):
            raise CatalogError("that would remove every item; delete the catalog folder instead")
        keep = ~np.isin(catalog.ids, targets)
        metadata = catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN])[keep].reset_index(drop=True)
        record = dict(info["index"])
        flat = _stores_no_vectors(record["factory"])
        index = None if flat else catalog.index
        try:
            removed = len(targets) if flat else index.remove_ids(faiss.IDSelectorBatch(targets))
            if removed != len(targets):
                raise RuntimeError("index and metadata disagree")
            kept_vectors = _kept_rows(catalog.embeddings, keep)
        except RuntimeError:  # e.g. HNSW cannot remove: rebuild from the stored embeddings
            kept_vectors = [np.asarray(catalog.embeddings[keep], np.float32)]
            index, built = _build_index(IndexChoice.from_dict(record), kept_vectors[0], metadata, info, progress,
                                        tune=False)
            record["build_seconds"] = built["build_seconds"]
        info.update(index=record, counts=_counts(metadata, info.get("skipped", [])))
        info["last_operation"] = {"operation": "remove", "removed": int(len(targets)), "at": _now()}
        _commit(folder, kept_vectors, metadata, index, info, info.get("version"))
    return UpdateReport("remove", folder, items=len(metadata), removed=int(len(targets)), index=record,
                        seconds=time.perf_counter() - started)


def rebuild_catalog(folder: str | os.PathLike, *, model=None, index: str | None = None,
                    memory_budget: int | None = None, precision: str | None = None, reembed: bool = False,
                    progress: bool = True, lock_timeout: float = 0.0) -> UpdateReport:
    """Re-index from the stored embeddings; re-embed every image when the model changed (or reembed).

    Ids and metadata are kept; items whose image can no longer be read during a re-embedding
    are dropped and listed as skipped. Without --index the index is chosen again for the
    current size (unless the user had fixed it).
    """
    started = time.perf_counter()
    folder = Path(folder)
    with catalog_lock(folder, "rebuild", lock_timeout):
        catalog = Catalog.load(folder)
        _refuse_on_disk(catalog, "rebuild")
        info = dict(catalog.info)
        metadata = catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN])
        embeddings: np.ndarray = catalog.embeddings
        skipped: list[tuple[str, str]] = []
        report = UpdateReport("rebuild", folder)
        embedder = None
        if model is not None:
            embedder, model_path = _load_embedder(model, precision or info.get("precision", "bf16"))
            if embedder.fingerprint != info["model_fingerprint"]:
                reembed = True
            info["model_path"] = model_path or info.get("model_path")
        elif reembed:
            embedder = _open_embedder_for(catalog, None)
            if precision and precision != embedder.precision:
                embedder, _ = _load_embedder(info["model_path"], precision)
        if reembed:
            paths = [catalog.root / p for p in metadata[PATH_COLUMN].astype(str)]
            vectors, embedded, failures, facts = _embed_files(embedder, paths, progress, "re-embedding")
            if len(vectors) == 0:
                raise CatalogError("none of the catalog's images could be read for re-embedding "
                                   f"(first: {failures[0][1] if failures else '?'}); are they still under {catalog.root}?")
            skipped = [(str(metadata[PATH_COLUMN].iat[i]), reason) for i, reason in failures]
            metadata = metadata.iloc[embedded].reset_index(drop=True)
            metadata[HASH_COLUMN] = [f[0] for f in facts]
            metadata[SIZE_COLUMN] = np.asarray([f[1] for f in facts], np.int64)
            metadata[MTIME_COLUMN] = np.asarray([f[2] for f in facts], np.int64)
            embeddings = vectors
            info.update(model_fingerprint=embedder.fingerprint, feature_dim=int(vectors.shape[1]),
                        precision=embedder.precision)
            report.reembedded = True
        budget = int(memory_budget) if memory_budget is not None else int(info.get("memory_budget_bytes", DEFAULT_MEMORY_BUDGET))
        previous_index = info["index"] if index is None else None  # keeps a factory the user had given
        choice = _resolve_choice(index, len(metadata), embeddings.shape[1], budget, previous_index)
        info["memory_budget_bytes"] = budget
        index_obj, record = _build_index(choice, embeddings, metadata, info, progress)
        record["user_given"] = bool(index) or bool(previous_index and previous_index.get("user_given"))
        skipped_list = _merge_skipped(info.get("skipped", []), skipped)
        info.update(index=record, counts=_counts(metadata, skipped_list), skipped=skipped_list)
        info["last_operation"] = {"operation": "rebuild", "reembedded": report.reembedded,
                                  "skipped": len(skipped), "at": _now()}
        _commit(folder, [embeddings], metadata, index_obj, info, info.get("version"))
    report.items, report.skipped, report.index = len(metadata), skipped, record
    report.seconds = time.perf_counter() - started
    return report
