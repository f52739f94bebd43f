"""How a catalog version holds its vectors, behind one small interface.

Every holding is read like an array: `shape` and `holding[rows]` -> float32 rows. A catalog has

    stored   the full vectors, row i belonging to metadata row i: embeddings.npy memory-mapped
             (in-memory catalogs), or read from the Parquet embedding shards (on-disk catalogs)
    scoring  what results are re-scored with: the stored vectors, or for an on-disk catalog (whose
             shards are too slow to read per result) its float16 copy, else its index's codes

open_vectors decides which, from the catalog's description; nothing else looks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.catalog.description import CatalogInfo
from index.catalog.store import EMBEDDINGS_FILE, RERANK_VECTORS_FILE, VECTOR_LOCATIONS_FILE
from index.catalog.view import CatalogView, Vectors
from index.scale.shards import ShardVectors


@dataclass
class Holdings:
    stored: Vectors
    rerank_copy: Vectors | None  # on-disk catalogs: the float16 copy for re-scoring, where kept
    on_disk: bool


def open_vectors(version: Path, info: CatalogInfo, mmap: bool = True) -> Holdings:
    """The vectors of a catalog version (FileNotFoundError where a file is missing)."""
    mode = "r" if mmap else None
    if info.vectors is None:
        return Holdings(np.load(version / EMBEDDINGS_FILE, mmap_mode=mode), None, on_disk=False)
    locations = np.load(version / VECTOR_LOCATIONS_FILE, mmap_mode=mode)
    stored = ShardVectors(info.vectors.folder, info.vectors.files, info.feature_dim, locations)
    copy = np.load(version / RERANK_VECTORS_FILE, mmap_mode="r") if info.vectors.rerank_copy else None
    return Holdings(stored, copy, on_disk=True)


def scoring_vectors(catalog: CatalogView, stored: Vectors, rerank_copy: Vectors | None, on_disk: bool) -> Vectors:
    """What the catalog's results are re-scored with (see the module's note)."""
    if not on_disk:
        return stored
    return IndexCodes(catalog) if rerank_copy is None else rerank_copy


class IndexCodes:
    """An on-disk catalog's vectors as its index stores them (decoded codes), indexed by row.

    Scores against these are the index's own scores, so re-scoring keeps the index's order;
    reading the full vectors from the shards for every result would cost a row group each.
    """

    def __init__(self, catalog: CatalogView):
        self.catalog = catalog

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.catalog.ids), self.catalog.dim

    def __getitem__(self, rows) -> np.ndarray:
        ids = np.ascontiguousarray(self.catalog.ids[rows], np.int64).reshape(-1)
        if len(ids) == 0:
            return np.zeros((0, self.catalog.dim), np.float32)
        return self.catalog.index.reconstruct_batch(ids)
