"""Export a catalog's ids, vectors and metadata: one Parquet file, or a Qdrant collection.

    python -m index export --catalog DIR --parquet OUT.parquet
    python -m index export --catalog DIR --qdrant-path LOCAL_DIR --collection NAME     # embedded Qdrant
    python -m index export --catalog DIR --qdrant-url http://host:6333 --collection NAME [--api-key KEY]

Both read the catalog's current version (embeddings.npy memory-mapped) in blocks of rows, so a
catalog larger than memory streams through. Exported metadata is what search results show: the
manifest's columns (path, category, product_id, others), not the bookkeeping (hashes, sizes).

Parquet: columns `id` (int64), `vector` (fixed-size list of float32), then the metadata; one row
group per block; the schema's metadata key `coinsp` holds the catalog version, the model
fingerprint and the vector size. The file is written beside the target and renamed when complete.

Qdrant (`qdrant-client`, an optional extra: `pip install -r requirements-distributed.txt`):
cosine distance, point id = catalog id, payload = metadata, batched upserts. An existing
collection must have the same vector size; points of items no longer in the catalog are deleted
afterwards, so exporting again brings the collection up to date.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from embedder.files import atomic_path
from embedder.progress import ProgressOption, Stage, as_callback
from index.catalog.loaded import Catalog
from index.catalog.store import CHUNK_ROWS, ID_COLUMN, IMAGE_PATH_COLUMN, INTERNAL_COLUMNS, CatalogError

VECTOR_COLUMN = "vector"
PARQUET_KEY = b"coinsp"
QDRANT_BATCH = 256  # points per upsert: 256 x 2048 floats is about 2 MB of JSON/gRPC per request
INSTALL_HINT = "pip install -r requirements-distributed.txt"


@dataclass
class ExportReport:
    target: str
    items: int
    dim: int
    version: str
    deleted: int = 0  # Qdrant: points of items no longer in the catalog

    def summary(self) -> str:
        extra = f", {self.deleted:,} stale points deleted" if self.deleted else ""
        return f"exported {self.items:,} items ({self.dim}-d, catalog version {self.version}) to {self.target}{extra}"


def _exported_metadata(catalog: Catalog) -> pd.DataFrame:
    return catalog.metadata.drop(columns=[c for c in (*INTERNAL_COLUMNS, IMAGE_PATH_COLUMN) if c in catalog.metadata])


def _blocks(catalog: Catalog, rows: int) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """(metadata rows, their float32 vectors) in catalog order, `rows` at a time."""
    metadata = _exported_metadata(catalog)
    for start in range(0, len(catalog), rows):
        yield (metadata.iloc[start:start + rows],
               np.ascontiguousarray(catalog.embeddings[start:start + rows], np.float32))


# ----------------------------------------------------------------------------- Parquet

def export_parquet(folder: str | os.PathLike, out: str | os.PathLike, *, rows_per_group: int = CHUNK_ROWS,
                   progress: ProgressOption = True) -> ExportReport:
    """Write ids, vectors and metadata of the catalog to one Parquet file, a row group per block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    catalog = Catalog.load(folder)
    dim, out = catalog.dim, Path(out)
    metadata = _exported_metadata(catalog)
    # One schema from the whole table: a block whose column is all empty must not change its type.
    meta_schema = pa.Schema.from_pandas(metadata, preserve_index=False)
    fields = [meta_schema.field(ID_COLUMN), pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim))]
    fields += [f for f in meta_schema if f.name != ID_COLUMN]
    provenance = {"catalog_version": catalog.info.version, "model_fingerprint": catalog.fingerprint,
                  "feature_dim": dim, "items": len(catalog)}
    schema = pa.schema(fields, metadata={PARQUET_KEY: json.dumps(provenance).encode()})
    written = Stage(as_callback(progress), "exporting to Parquet", len(catalog))
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for rows, vectors in _blocks(catalog, rows_per_group):
            table = pa.Table.from_pandas(rows, schema=meta_schema, preserve_index=False)
            vector_array = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
            table = table.add_column(1, schema.field(VECTOR_COLUMN), vector_array)
            writer.write_table(table.select(schema.names).cast(schema))
            written.advance(len(rows))
    return ExportReport(str(out), len(catalog), dim, catalog.info.version)


def read_parquet_export(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """(metadata with id, vectors (n, d) float32, provenance) of an exported file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    provenance = json.loads((table.schema.metadata or {}).get(PARQUET_KEY, b"{}"))
    column = table.column(VECTOR_COLUMN).combine_chunks()
    vectors = column.values.to_numpy().reshape(len(table), column.type.list_size).astype(np.float32, copy=False)
    return table.drop_columns([VECTOR_COLUMN]).to_pandas(), vectors, provenance


# ----------------------------------------------------------------------------- Qdrant

def qdrant_client(*, path: str | os.PathLike | None = None, url: str | None = None, api_key: str | None = None,
                  timeout: int = 60):
    """A QdrantClient: embedded, on a local folder (`path`, or ":memory:"), or a server/cluster (`url`)."""
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise CatalogError(f"exporting to Qdrant needs qdrant-client: {INSTALL_HINT}") from None
    if (path is None) == (url is None):
        raise CatalogError("give either a local Qdrant folder (--qdrant-path) or a server URL (--qdrant-url)")
    if path is not None:
        if str(path) == ":memory:":
            return QdrantClient(location=":memory:")
        try:
            return QdrantClient(path=str(path))
        except RuntimeError as exc:  # the folder is held by another embedded client
            raise CatalogError(f"Qdrant folder {path}: {exc}") from None
    return QdrantClient(url=url, api_key=api_key, timeout=timeout)


def _qdrant_errors() -> tuple[type[BaseException], ...]:
    """What qdrant-client raises for an unreachable server, a refused request or a bad key."""
    from qdrant_client.http.exceptions import ApiException

    return ApiException, ConnectionError, TimeoutError


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    """A metadata row as JSON-safe payload: missing values left out, numpy scalars as Python ones."""
    out = {}
    for name, value in row.items():
        if name == ID_COLUMN:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            continue
        out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def _ensure_collection(client, name: str, dim: int, recreate: bool) -> None:
    from qdrant_client import models

    config = models.VectorParams(size=dim, distance=models.Distance.COSINE)
    if recreate and client.collection_exists(name):
        client.delete_collection(name)
    if not client.collection_exists(name):
        client.create_collection(name, vectors_config=config)
        return
    existing = client.get_collection(name).config.params.vectors
    if not isinstance(existing, models.VectorParams) or existing.size != dim \
            or existing.distance != models.Distance.COSINE:
        raise CatalogError(f"Qdrant collection {name!r} holds other vectors ({existing}); this catalog's are {dim}-d "
                           "cosine: choose another --collection or pass --recreate to replace it")


def _stale_ids(client, name: str, keep: np.ndarray, page: int = 10_000) -> list[int]:
    """Ids of points in the collection that are not in `keep` (sorted catalog ids)."""
    stale, offset = [], None
    while True:
        points, offset = client.scroll(name, limit=page, offset=offset, with_payload=False, with_vectors=False)
        ids = np.fromiter((int(p.id) for p in points), np.int64, len(points))
        if len(ids):
            at = np.minimum(np.searchsorted(keep, ids), max(len(keep) - 1, 0))
            stale += ids[keep[at] != ids].tolist() if len(keep) else ids.tolist()
        if offset is None:
            return stale


def export_qdrant(folder: str | os.PathLike, client, collection: str, *, batch_size: int = QDRANT_BATCH,
                  recreate: bool = False, progress: ProgressOption = True) -> ExportReport:
    """Upsert every item of the catalog into a Qdrant collection (cosine, id = catalog id, payload = metadata)."""
    from qdrant_client import models

    if batch_size < 1:
        raise CatalogError("--batch-size must be at least 1")
    catalog = Catalog.load(folder)
    try:
        _ensure_collection(client, collection, catalog.dim, recreate)
        upserted = Stage(as_callback(progress), f"exporting to Qdrant {collection!r}", len(catalog))
        for rows, vectors in _blocks(catalog, batch_size):
            client.upsert(collection, wait=True, points=models.Batch(
                ids=rows[ID_COLUMN].astype(int).tolist(), vectors=vectors.tolist(),
                payloads=[_payload(row) for row in rows.to_dict("records")]))
            upserted.advance(len(rows))
        stale = _stale_ids(client, collection, catalog.ids)
        if stale:
            client.delete(collection, points_selector=models.PointIdsList(points=stale), wait=True)
    except _qdrant_errors() as exc:
        raise CatalogError(f"Qdrant refused or could not be reached: {str(exc).strip() or type(exc).__name__} "
                           "(upserts are idempotent: run the export again)") from None
    return ExportReport(f"Qdrant collection {collection!r}", len(catalog), catalog.dim, catalog.info.version,
                        deleted=len(stale))
