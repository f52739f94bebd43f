"""A catalog's index served by Milvus (Milvus Lite in this process, or a Milvus server or cluster).

    catalog = Catalog.load(folder, backend="milvus-lite:catalog.db")   # or COINSP_BACKEND
    catalog.search_vectors(queries, k=10, category="footwear")          # candidates from Milvus
    catalog.backend.sync(catalog)                                       # bring the collection in step

The collection: `id` (INT64, the catalog's stable id, primary key), `vector` (FLOAT_VECTOR, the
L2-normalised embedding, metric IP = cosine), `row_hash` (INT64: the row's vector, file and
metadata, to find what changed), and every filterable metadata column as VARCHAR holding the text
a filter compares with (index.search.filters.as_text); `category` is the partition key, so a category
filter searches only its partitions. Its properties record the catalog version and model
fingerprint it holds, the column names and the index (milvus_index_choice).

What Milvus does here: propose candidates inside a pool (a category, a metadata filter turned
into a boolean expression whose values are quoted and escaped, never spliced in as syntax).
What stays in index.search.algorithm / index.search.grouping: exact re-scoring from the folder's vectors, excluded
ids, near-duplicates, one result per product, the photo's own copy, weak-match calibration.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from embedder.files import format_size
from index.scale.backends import INSTALL_HINT, BackendSpec
from index.catalog.choose import DEFAULT_MEMORY_BUDGET, RERANK_QUANTISED, choose_index, index_kind
from index.search.filters import NOT_FILTERABLE, as_text
from index.manifest import CATEGORY_COLUMN
from index.catalog.store import CHUNK_ROWS, HASH_COLUMN, ID_COLUMN, CatalogError, read_info
from index.catalog.view import CatalogView
from index.search.exact import RECALL_TARGET, exact_reference, measure_recall

VECTOR_FIELD, HASH_FIELD = "vector", "row_hash"
MAX_VARCHAR = 65_535  # bytes; Milvus's limit for one VARCHAR value
MAX_TOPK = 16_384  # Milvus's limit on one search's limit; beyond it index.search.algorithm scans the pool exactly
BATCH_BYTES = 16 * 1024 * 1024  # vectors per insert request (gRPC messages stay well under 64 MB)
CONNECT_TIMEOUT_S = 10.0
LITE_INDEXES = {"FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8"}  # what Milvus Lite builds (no PQ, no DiskANN)
TUNE_QUERIES = 200
PROPERTY = "coinsp."  # collection properties written by the catalog
OWNER = "catalog"  # PROPERTY + "owner": a collection made for a catalog (any other is never dropped)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()

logging.getLogger("milvus_lite").addHandler(logging.NullHandler())  # its tracebacks are turned into one line here


class MilvusUnavailableError(CatalogError):
    """Milvus cannot be reached or opened (the message names the URI)."""


@dataclass(frozen=True)
class MilvusPool:
    """A search pool as Milvus sees it: a boolean expression over the collection's fields."""
    expression: str


@dataclass(frozen=True)
class MilvusIndexChoice:
    index_type: str  # FLAT, HNSW, IVF_FLAT, IVF_SQ8, IVF_PQ, ...
    build: dict  # build parameters (M, efConstruction, nlist, m)
    search: dict  # search parameters, tuned on sync (ef, nprobe)
    reason: str
    rerank: int = 1  # candidates per result re-scored exactly (compressed vectors)
    recall_at_10: float | None = None  # measured against exact search when the search parameters were tuned

    def to_dict(self) -> dict:
        return {"index_type": self.index_type, "build": self.build, "search": self.search, "reason": self.reason,
                "rerank": self.rerank, "recall_at_10": self.recall_at_10}

    @classmethod
    def from_dict(cls, d: dict) -> "MilvusIndexChoice":
        return cls(d["index_type"], dict(d.get("build", {})), dict(d.get("search", {})), d.get("reason", ""),
                   int(d.get("rerank", 1)), d.get("recall_at_10"))


def milvus_index_choice(n: int, d: int, memory_budget_bytes: int | None = None, lite: bool = True
                        ) -> MilvusIndexChoice:
    """The Milvus index for n vectors of d dims: the same decision as index.catalog.choose (exact while a
    query scans them fast enough, a graph while vectors and graph fit the budget and build in
    reasonable time, an inverted file beyond, compressed when even the vectors do not fit), in
    Milvus's index types. Milvus Lite has no PQ: IVF_SQ8 stands in, the reason says so."""
    faiss_choice = choose_index(n, d, memory_budget_bytes)
    kind, factory = index_kind(faiss_choice.factory), faiss_choice.factory
    same = f"the rule of index.catalog.choose, which chose {factory} for the FAISS catalog: {faiss_choice.reason}"
    if kind == "flat":
        return MilvusIndexChoice("FLAT", {}, {}, f"FLAT (exact search over the collection): {same}")
    if kind == "hnsw":
        return MilvusIndexChoice("HNSW", {"M": 32, "efConstruction": 40}, {"ef": 64},
                                 f"HNSW (M 32, efConstruction 40, as FAISS's HNSW32): {same}; ef tuned on sync")
    nlist = int(re.match(r"IVF(\d+)", factory).group(1))
    if ",PQ" in factory and not lite:
        m = int(re.search(r"PQ(\d+)", factory).group(1))
        return MilvusIndexChoice("IVF_PQ", {"nlist": nlist, "m": m, "nbits": 8}, {"nprobe": 32},
                                 f"IVF_PQ (nlist {nlist}, m {m}): {same}; nprobe tuned on sync", RERANK_QUANTISED)
    if ",SQ8" in factory or ",PQ" in factory:
        why = "" if ",SQ8" in factory else " (Milvus Lite builds no PQ index: 8-bit scalar codes instead)"
        return MilvusIndexChoice("IVF_SQ8", {"nlist": nlist}, {"nprobe": 16},
                                 f"IVF_SQ8 (nlist {nlist}){why}: {same}; nprobe tuned on sync", RERANK_QUANTISED)
    return MilvusIndexChoice("IVF_FLAT", {"nlist": nlist}, {"nprobe": 16},
                             f"IVF_FLAT (nlist {nlist}): {same}; nprobe tuned on sync")


def escape_text(value: str) -> str:
    """A Milvus string literal holding exactly `value`: double-quoted, backslash and quotes escaped,
    so quotes, operators or brackets inside a filter value stay text and never become syntax."""
    escaped = (str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def filter_expression(conditions: dict[str, Iterable[str]], fields: dict[str, str]) -> str:
    """{column: values} (all columns must hold one of their values) as a Milvus boolean expression
    over the collection's fields (`fields`: column -> field name)."""
    parts = []
    for column, values in conditions.items():
        if column not in fields:
            raise CatalogError(f"the Milvus collection has no field for column {column!r}; sync it again")
        values = sorted(str(v) for v in values)
        listed = ", ".join(escape_text(v) for v in values)
        parts.append(f"({fields[column]} in [{listed}])" if values else f"({ID_COLUMN} < 0)")  # ids are >= 0
    return " and ".join(parts)


@dataclass
class SyncReport:
    """What bringing a collection in step with the catalog did."""
    target: str
    collection: str
    version: str | None
    in_step: bool = False  # it already held this version: nothing done
    recreated: bool = False  # created (or dropped and created) and filled from the folder
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    items: int = 0
    index: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        where = f"{self.target}: collection {self.collection}"
        if self.in_step:
            return f"{where} already holds version {self.version} ({self.items:,} items)"
        how = ("created from the catalog folder" if self.recreated else
               f"{self.inserted:,} inserted, {self.updated:,} updated, {self.deleted:,} deleted")
        recall = self.index.get("recall_at_10")  # None for FLAT: exact
        return (f"{where} synced to version {self.version} ({self.items:,} items, {how}), index "
                f"{self.index.get('index_type')} {self.index.get('search') or ''}"
                + (f" (recall@10 vs exact {recall:.3f})" if recall is not None else "") + f" in {self.seconds:.1f} s")


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise CatalogError(f"the Milvus backend needs pymilvus (and milvus-lite for milvus-lite:PATH.db): "
                           f"{INSTALL_HINT}") from None
    # pymilvus logs every failed call with its traceback on its own handler; the catalog reports
    # each failure itself, as one line naming the URI (MilvusUnavailableError).
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    return pymilvus


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _connect(spec: BackendSpec):
    """One client per URI per process (Milvus Lite: one engine per .db file, opened once)."""
    key = spec.lite_path or spec.uri
    with _CLIENTS_LOCK:
        if key in _CLIENTS:
            return _CLIENTS[key]
        pymilvus = _pymilvus()
        try:
            if spec.lite:
                client = pymilvus.MilvusClient(spec.lite_path, timeout=CONNECT_TIMEOUT_S)
            else:
                client = pymilvus.MilvusClient(uri=spec.uri, token=os.environ.get("MILVUS_TOKEN", ""),
                                               timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # pymilvus raises MilvusException and its subclasses
            why = _one_line(exc)
            if spec.lite:
                why += " (Milvus Lite opens a .db file in one process at a time: is another process using it?)"
            raise MilvusUnavailableError(f"cannot reach Milvus at {spec.text}: {why}") from None
        _CLIENTS[key] = client
        return client


def close_connections() -> None:
    """Close every client this process opened (Milvus Lite then releases its .db file)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            with contextlib.suppress(Exception):
                client.close()
        _CLIENTS.clear()


class MilvusBackend:
    """Candidates for index.search.algorithm from a Milvus collection kept in step with a catalog folder."""

    def __init__(self, spec: BackendSpec, folder=None):
        self.spec = spec
        self.collection = spec.collection or _collection_name(folder)
        self._synced_version: str | None = None
        self._fields: dict[str, str] = {}
        self._choice: MilvusIndexChoice | None = None
        self._sync_lock = threading.Lock()

    @property
    def text(self) -> str:
        return self.spec.text

    def describe(self) -> dict:
        return {"backend": self.spec.text, "collection": self.collection,
                "index": self._choice.to_dict() if self._choice else None}

    @contextlib.contextmanager
    def _calls(self, what: str):
        """Milvus errors as one-line CatalogErrors naming the URI."""
        try:
            yield
        except CatalogError:
            raise
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in ("pymilvus", "grpc", "milvus_lite"):
                raise
            raise MilvusUnavailableError(f"Milvus at {self.spec.text} ({what}): {_one_line(exc)}") from None

    # ------------------------------------------------------------------ search

    def pool(self, catalog: CatalogView, conditions) -> MilvusPool:
        """The handle of a pool for index.search.algorithm: {column: values}, or a filter's conditions (each
        with .column and .values; two on one column both hold)."""
        self.ensure_synced(catalog)
        if not isinstance(conditions, dict):
            merged: dict[str, set] = {}
            for condition in conditions:
                values = {str(v) for v in condition.values}
                merged[condition.column] = merged[condition.column] & values if condition.column in merged else values
            conditions = merged
        return MilvusPool(filter_expression(conditions, self._fields))

    def candidates(self, catalog: CatalogView, queries: np.ndarray, n: int, pool: MilvusPool | None,
                   effort: float) -> np.ndarray:
        """Candidate ids (len(queries), up to n x rerank), -1 padded; only ids this catalog version holds."""
        self.ensure_synced(catalog)
        choice = self._choice
        limit = int(max(1, min(n * choice.rerank, MAX_TOPK)))
        params = {}
        for knob, value in choice.search.items():
            value = int(math.ceil(value * effort))
            params[knob] = max(value, limit) if knob == "ef" else min(value, int(choice.build.get("nlist", value)))
        client = _connect(self.spec)
        with self._calls("search"):
            # Only the ids come back: with no output field named, Milvus Lite sends every hit's vector
            # too, and pymilvus decodes each hit it is asked for (10,000 candidates: seconds per search).
            found = client.search(self.collection, data=[np.asarray(q, np.float32) for q in queries], limit=limit,
                                  filter=pool.expression if pool is not None else "", output_fields=[ID_COLUMN],
                                  anns_field=VECTOR_FIELD, search_params={"metric_type": "IP", "params": params})
        out = np.full((len(queries), limit), -1, np.int64)
        for i, hits in enumerate(found):
            ids = np.asarray(hits.ids if hasattr(hits, "ids") else [h["id"] for h in hits], np.int64)
            ids = ids[_present(catalog.ids, ids)]  # a collection ahead of this loaded version: not its items
            out[i, :len(ids)] = ids
        return out

    # ------------------------------------------------------------------ keeping it in step

    def ensure_synced(self, catalog: CatalogView) -> None:
        if self._synced_version != catalog.info.version:
            with self._sync_lock:
                if self._synced_version != catalog.info.version:
                    self.sync(catalog)

    def sync(self, catalog: CatalogView, progress=None, tune: bool = True) -> SyncReport:
        """Bring the collection in step with the loaded catalog version: create and fill it when it
        is absent or laid out for other columns, dimensions, model or index; else insert, update
        and delete the rows whose vector, file or metadata changed. The version is recorded last,
        so an interrupted sync is finished by the next one."""
        started = time.perf_counter()
        say = progress or (lambda message: None)
        if catalog.on_disk:
            raise CatalogError("an on-disk catalog (built from shards) is searched through its own IVF-PQ files; "
                               "the Milvus backend serves ordinary catalogs")
        client, info = _connect(self.spec), catalog.info
        fields = _field_names(catalog.metadata.columns)
        choice = milvus_index_choice(len(catalog), catalog.dim, info.memory_budget_bytes or DEFAULT_MEMORY_BUDGET,
                                     lite=self.spec.lite)
        report = SyncReport(self.spec.text, self.collection, info.version, items=len(catalog))
        with self._calls("sync"):
            props = self._properties(client)
            if props:
                client.load_collection(self.collection)  # released after a restart (Milvus Lite: each process)
            layout = {"dim": catalog.dim, "fingerprint": info.model_fingerprint, "columns": fields,
                      "index_type": choice.index_type, "build": choice.build}
            if props is not None and props.get("layout") == layout:
                stored = MilvusIndexChoice.from_dict(props["index"])
                if props.get("version") == info.version or not _current(catalog):
                    # In step; or this loaded version is no longer the folder's current one, and the
                    # collection is not taken back to it (its candidates are filtered to this version's ids).
                    self._adopt(info.version, fields, stored)
                    report.in_step, report.index = props.get("version") == info.version, stored.to_dict()
                    return report
                self._delta(client, catalog, fields, report, say)
                choice = stored
            else:
                self._create(client, catalog, fields, choice, report, say)
                if tune and choice.search:
                    self._fields, self._choice = fields, choice
                    choice = self._tune(catalog, choice, say)
            client.alter_collection_properties(self.collection, properties={
                PROPERTY + "layout": json.dumps(layout, sort_keys=True), PROPERTY + "index": json.dumps(choice.to_dict()),
                PROPERTY + "version": str(info.version)})
        self._adopt(info.version, fields, choice)
        report.index, report.seconds = choice.to_dict(), time.perf_counter() - started
        return report

    def _adopt(self, version, fields, choice) -> None:
        self._fields, self._choice, self._synced_version = fields, choice, version

    def _properties(self, client) -> dict | None:
        if not client.has_collection(self.collection):
            return None
        try:
            raw = client.describe_collection(self.collection).get("properties", {}) or {}
        except Exception as exc:  # listed but not described: left half-made by a killed Milvus Lite process
            if "does not exist" not in str(exc):
                raise
            return {}
        if raw.get(PROPERTY + "owner") != OWNER:
            raise CatalogError(f"Milvus at {self.spec.text}: collection {self.collection} exists and was not made "
                               "for a catalog; name another collection (or drop that one yourself)")
        try:
            return {"layout": json.loads(raw[PROPERTY + "layout"]), "index": json.loads(raw[PROPERTY + "index"]),
                    "version": raw.get(PROPERTY + "version")}
        except (KeyError, ValueError):
            return {}  # a create that was interrupted: made again

    def _create(self, client, catalog, fields, choice, report, say) -> None:
        pymilvus = _pymilvus()
        if choice.index_type not in LITE_INDEXES and self.spec.lite:
            raise CatalogError(f"Milvus Lite cannot build a {choice.index_type} index")
        if client.has_collection(self.collection):
            client.drop_collection(self.collection)
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_COLUMN, pymilvus.DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=int(catalog.dim))
        schema.add_field(HASH_FIELD, pymilvus.DataType.INT64)
        for column, name in fields.items():
            schema.add_field(name, pymilvus.DataType.VARCHAR, max_length=MAX_VARCHAR,
                             is_partition_key=(column == CATEGORY_COLUMN))
        client.create_collection(self.collection, schema=schema, properties={PROPERTY + "owner": OWNER})
        say(f"Milvus: collection {self.collection} created, inserting {len(catalog):,} items")
        report.recreated = True
        report.inserted = self._write(client, catalog, np.arange(len(catalog)), fields, row_hashes(catalog, fields),
                                      upsert=False)
        client.flush(self.collection)
        index = client.prepare_index_params()
        index.add_index(VECTOR_FIELD, index_type=choice.index_type, metric_type="IP", params=choice.build)
        say(f"Milvus: building the {choice.index_type} index")
        client.create_index(self.collection, index)
        client.load_collection(self.collection)

    def _delta(self, client, catalog, fields, report, say) -> None:
        have = _stored_hashes(client, self.collection)
        hashes = row_hashes(catalog, fields)
        want = dict(zip(catalog.ids.tolist(), hashes.tolist()))
        gone = [i for i in have if i not in want]
        changed = [i for i, h in want.items() if i in have and have[i] != h]
        new = [i for i in want if i not in have]
        say(f"Milvus: {len(new):,} to insert, {len(changed):,} to update, {len(gone):,} to delete")
        if gone:
            for start in range(0, len(gone), CHUNK_ROWS):
                client.delete(self.collection, ids=gone[start:start + CHUNK_ROWS])
        if changed:
            self._write(client, catalog, catalog.rows_of(changed), fields, hashes, upsert=True)
        if new:
            self._write(client, catalog, catalog.rows_of(new), fields, hashes, upsert=False)
        if gone or changed or new:
            client.flush(self.collection)
        report.inserted, report.updated, report.deleted = len(new), len(changed), len(gone)

    def _write(self, client, catalog, rows: np.ndarray, fields, hashes: np.ndarray, upsert: bool) -> int:
        texts = {name: as_text(catalog.metadata[column]).to_numpy() for column, name in fields.items()}
        per_batch = max(1, BATCH_BYTES // (4 * catalog.dim))
        write = client.upsert if upsert else client.insert
        for start in range(0, len(rows), per_batch):
            block = np.sort(np.asarray(rows[start:start + per_batch], np.int64))
            vectors = np.asarray(catalog.embeddings[block], np.float32)
            for name, values in texts.items():
                too_long = [v for v in values[block] if len(v.encode("utf-8")) > MAX_VARCHAR]
                if too_long:
                    raise CatalogError(f"a {name!r} value of {format_size(len(too_long[0].encode()))} is longer "
                                       f"than Milvus keeps in one field ({MAX_VARCHAR:,} bytes)")
            data = [{ID_COLUMN: int(catalog.ids[r]), VECTOR_FIELD: vectors[j], HASH_FIELD: int(hashes[r]),
                     **{name: str(values[r]) for name, values in texts.items()}} for j, r in enumerate(block)]
            write(self.collection, data)
        return len(rows)

    def _tune(self, catalog, choice: MilvusIndexChoice, say) -> MilvusIndexChoice:
        """Raise ef / nprobe by doubling until recall@10 against exact search (items as queries,
        index.search.exact's measure) reaches its target; the measured recall goes into the record."""
        exact = exact_reference(catalog, TUNE_QUERIES, 10, 0)
        knob = next(iter(choice.search))
        limit = 4096 if knob == "ef" else int(choice.build.get("nlist", 1))
        value, recall = int(choice.search[knob]) // 4 or 1, 0.0
        while True:
            self._choice = MilvusIndexChoice(choice.index_type, choice.build, {knob: value}, choice.reason,
                                             choice.rerank)
            self._synced_version = catalog.info.version  # searching while tuning: the rows are in step
            recall, queries, _ = measure_recall(catalog, exact=exact)
            say(f"Milvus: {knob}={value}: recall@10 {recall:.4f} ({queries} queries)")
            if recall >= RECALL_TARGET or value >= limit:
                break
            value = min(value * 2, limit)
        return MilvusIndexChoice(choice.index_type, choice.build, {knob: value}, choice.reason, choice.rerank,
                                 round(recall, 4))


def _current(catalog: CatalogView) -> bool:
    """Is the loaded version still the folder's current one (a catalog without a folder: yes)?"""
    if catalog.folder is None:
        return True
    try:
        return read_info(catalog.folder).version == catalog.info.version
    except CatalogError:
        return True


def _collection_name(folder) -> str:
    """A collection name from the catalog folder's name (Milvus Lite: one .db may hold several catalogs)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(os.path.abspath(folder or "catalog")))
    return ("catalog_" + name)[:255]


def _field_names(columns: Iterable[str]) -> dict[str, str]:
    """Filterable column -> field name (the column's own name where Milvus allows it)."""
    fields, taken = {}, {ID_COLUMN, VECTOR_FIELD, HASH_FIELD}
    for i, column in enumerate(c for c in columns if c not in NOT_FILTERABLE and c != ID_COLUMN):
        name = column if _FIELD.fullmatch(column) and column not in taken else f"column_{i}"
        while name in taken:
            name += "_"
        fields[column] = name
        taken.add(name)
    return fields


def row_hashes(catalog: CatalogView, fields: dict[str, str]) -> np.ndarray:
    """A 64-bit hash per row of what the collection stores: metadata as text, the file's content
    hash and the vector's bits (a sum with odd weights), so a re-embedded or edited row differs."""
    columns = list(fields) + ([HASH_COLUMN] if HASH_COLUMN in catalog.metadata else [])
    text = pd.DataFrame({c: as_text(catalog.metadata[c]) for c in columns}, index=catalog.metadata.index)
    hashed = pd.util.hash_pandas_object(text, index=False).to_numpy(np.uint64) if columns else \
        np.zeros(len(catalog), np.uint64)
    weights = (np.arange(catalog.dim, dtype=np.uint64) * np.uint64(2654435761)) | np.uint64(1)
    sums = np.zeros(len(catalog), np.uint64)
    for start in range(0, len(catalog), CHUNK_ROWS):
        bits = np.ascontiguousarray(catalog.embeddings[start:start + CHUNK_ROWS], np.float32).view(np.uint32)
        sums[start:start + len(bits)] = (bits.astype(np.uint64) * weights).sum(axis=1)
    return (hashed ^ (sums * np.uint64(0x9E3779B97F4A7C15))).view(np.int64)


def _stored_hashes(client, collection: str) -> dict[int, int]:
    """id -> row_hash of every row in the collection, read by an iterator (no query-size limit)."""
    out: dict[int, int] = {}
    iterator = client.query_iterator(collection, batch_size=8192, filter=f"{ID_COLUMN} >= {np.iinfo(np.int64).min}",
                                     output_fields=[HASH_FIELD])
    try:
        while True:
            batch = iterator.next()
            if not batch:
                return out
            out.update((int(row[ID_COLUMN]), int(row[HASH_FIELD])) for row in batch)
    finally:
        iterator.close()


def _present(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(sorted_ids) == 0 or len(ids) == 0:
        return np.zeros(len(ids), bool)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[at] == ids
