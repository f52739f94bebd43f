"""A loaded catalog (no model needed): its items' metadata, vectors and search index, read-only.

    catalog = Catalog.load("catalogs/fashion-mnist-test")
    hits = catalog.search_vectors(query_vectors, k=10, category="footwear")
    frame = catalog.search_frame(query_vector, k=10)   # rank, score, id, metadata, image_path

Ids are stable: an item keeps its id for its whole life, and ids are never reused (catalog.json
keeps next_id). Rows are kept sorted by id, so the FAISS id -> row lookup is a binary search.
Cosine similarity is the inner product on the normalised vectors; scores are cosines, re-scored
exactly for every result (index.search.algorithm). The folder layout and how versions are written:
index.catalog.store.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np
import pandas as pd

from index.scale.backends import backend_from_environment, parse_backend
from index.catalog.description import CatalogInfo
from index.catalog.projection import Projection, ProjectionError
from index.quality.evaluation import NpyRows, RecallReport, recall_at_k
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN
from index.search.algorithm import SearchHits, search_vectors
from index.catalog.uploaded_files import image_files
from index.catalog.store import (ID_COLUMN, IMAGE_PATH_COLUMN, INDEX_FILE, INTERNAL_COLUMNS, METADATA_FILE, VERSIONS_DIR,
                                 CatalogError, UnknownItemError, add_vectors, read_index, read_info, stores_no_vectors)
from index.catalog.vectors import open_vectors, scoring_vectors


class Catalog:
    """A loaded catalog (no model needed): embeddings, metadata, info and the search index."""

    def __init__(self, folder: Path | None, info: CatalogInfo, embeddings: np.ndarray, metadata: pd.DataFrame,
                 index: faiss.Index | None = None, index_path: Path | None = None,
                 rerank_vectors: np.ndarray | None = None):
        self.folder = None if folder is None else Path(folder)
        self.info = info
        self.embeddings = embeddings
        self.on_disk = info.vectors is not None
        self.scoring_vectors = scoring_vectors(self, embeddings, rerank_vectors, self.on_disk)  # see index.catalog.vectors
        self._index, self._index_path = index, index_path
        self.choice = info.choice
        self.ids = metadata[ID_COLUMN].to_numpy(np.int64)
        if len(self.ids) > 1 and not (np.diff(self.ids) > 0).all():
            raise CatalogError("catalog metadata is not sorted by id: the catalog is damaged; rebuild it")
        root = info.root or ""
        self.metadata = metadata
        if PATH_COLUMN in metadata:  # uploaded photos lie in the catalog folder itself (index.catalog.uploaded_files)
            self.metadata = metadata.assign(**{IMAGE_PATH_COLUMN: image_files(folder, root, metadata[PATH_COLUMN])})
        self._pools: dict[str, tuple[np.ndarray, faiss.IDSelector, np.ndarray]] = {}
        self._columns: dict[str, np.ndarray] | None = None
        self.backend = None  # where candidates come from: None = the FAISS index above (index.scale.backends)
        # The matrix the stored vectors were projected by (index.catalog.projection); queries go through it.
        self.projection: Projection | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = True, backend: str | None = None) -> "Catalog":
        """Open the current version of DIR; embeddings are memory-mapped (read-only) by default.
        backend: where the index is served (index.scale.backends: faiss, milvus-lite:PATH.db,
        milvus://HOST:PORT/COLLECTION); default COINSP_BACKEND, else the folder's FAISS index."""
        spec = parse_backend(backend) if backend is not None else backend_from_environment()
        folder = Path(folder)
        for attempt in range(3):
            info = read_info(folder)
            version = folder / VERSIONS_DIR / info.version
            try:
                holdings = open_vectors(version, info, mmap)
                embeddings, rerank_vectors = holdings.stored, holdings.rerank_copy
                metadata = pd.read_parquet(version / METADATA_FILE)
                if not (version / INDEX_FILE).is_file():
                    raise FileNotFoundError(version / INDEX_FILE)
                break
            except FileNotFoundError:
                if attempt == 2 or read_info(folder).version == info.version:
                    raise CatalogError(f"catalog {folder} is damaged: version {info.version} is incomplete; "
                                       "rebuild it with `python -m index build`") from None
        if len(metadata) != embeddings.shape[0] or embeddings.shape[1] != info.feature_dim or (
                rerank_vectors is not None and rerank_vectors.shape != embeddings.shape):
            raise CatalogError(f"catalog {folder} is inconsistent ({len(metadata)} rows, embeddings "
                               f"{embeddings.shape}); run `python -m index rebuild --catalog DIR --reembed`")
        # The index is read on first search: evaluation and the app's quality page never need it.
        catalog = cls(folder, info, embeddings, metadata, index_path=version / INDEX_FILE, rerank_vectors=rerank_vectors)
        if info.projection is not None:
            try:
                catalog.projection = Projection.load(version, info.projection)
            except ProjectionError as exc:
                raise CatalogError(f"catalog {folder} is damaged: {exc}; build it again") from None
            if catalog.projection.dims != info.feature_dim:
                raise CatalogError(f"catalog {folder} is inconsistent (projection to {catalog.projection.dims} dims, "
                                   f"vectors of {info.feature_dim}); build it again")
        if spec is not None:  # a Milvus collection serves the index; it is contacted on the first search or sync
            from index.scale.milvus import MilvusBackend  # pymilvus only where Milvus is asked for

            catalog.backend = MilvusBackend(spec, folder)
        return catalog

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            try:
                index = read_index(self._index_path, on_disk=self.on_disk)
            except RuntimeError as exc:  # FAISS read errors
                raise CatalogError(f"catalog {self.folder}: index file unreadable ({str(exc).splitlines()[0]}); "
                                   "run `python -m index rebuild --catalog DIR`") from None
            if stores_no_vectors(self.choice.factory) and index.ntotal == 0:
                add_vectors(index, self.embeddings, self.ids)  # a memory copy
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
        return self.info.feature_dim

    @property
    def fingerprint(self) -> str:
        return self.info.model_fingerprint

    @property
    def root(self) -> Path:
        return Path(self.info.root)

    def categories(self) -> list[str]:
        if CATEGORY_COLUMN not in self.metadata:
            return []
        return sorted(self.metadata[CATEGORY_COLUMN].dropna().astype(str).unique())

    def rows_of(self, ids: Iterable[int]) -> np.ndarray:
        """Row positions of ids; UnknownItemError naming unknown ones."""
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
            raise UnknownItemError(f"no item with id {shown} in the catalog ({len(self.ids):,} items, {span})")
        return rows

    def vectors_of(self, ids: Iterable[int]) -> np.ndarray:
        """Stored embeddings of items, in the order given."""
        return np.asarray(self.embeddings[self.rows_of(ids)], np.float32)

    def category_pool(self, category: str) -> tuple[np.ndarray, faiss.IDSelector]:
        """(rows, FAISS id selector) of a category's items, cached."""
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
            bitmap = np.packbits(bits, bitorder="little")  # kept beside the selector, which points into it
            self._pools[category] = (rows, faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap)), bitmap)
        rows, selector, _ = self._pools[category]
        if self.backend is not None:  # the backend keeps the search inside the category its own way
            selector = self.backend.pool(self, {CATEGORY_COLUMN: [str(category)]})
        return rows, selector

    # ------------------------------------------------------------------ search

    def search_vectors(self, vectors, k: int = 10, *, category: str | None = None,
                       exclude_ids: Sequence[Iterable[int]] | None = None,
                       hide_duplicates_above: float | None = None, normalised: bool = False) -> SearchHits:
        """Top-k items for each query vector: see index.search.algorithm.search_vectors."""
        return search_vectors(self, vectors, k, category=category, exclude_ids=exclude_ids,
                              hide_duplicates_above=hide_duplicates_above, normalised=normalised)

    def results_frame(self, scores: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None) -> pd.DataFrame:
        """rank, score (cosine), id, the metadata (path, category, product_id, ...) and image_path.
        rows: the ids' rows where the caller has them (a search does), saving the lookup."""
        ids = np.asarray(ids, np.int64)
        ok = ids >= 0
        rows = self.rows_of(ids[ok]) if rows is None else np.asarray(rows, np.int64)[ok]
        if self._columns is None:  # column arrays, built once: a DataFrame per search stays cheap
            shown = [c for c in self.metadata.columns if c not in INTERNAL_COLUMNS and c != ID_COLUMN]
            shown = [c for c in shown if c != IMAGE_PATH_COLUMN] + ([IMAGE_PATH_COLUMN] if IMAGE_PATH_COLUMN in shown else [])
            self._columns = {c: self.metadata[c].to_numpy() for c in shown}
        data = {"rank": np.arange(1, len(rows) + 1), "score": np.asarray(scores, np.float32)[ok].astype(float),
                ID_COLUMN: ids[ok]}
        data.update({c: values[rows] for c, values in self._columns.items()})
        return pd.DataFrame(data)

    def search_frame(self, vector, k: int = 10, **options) -> pd.DataFrame:
        """The results of one query vector as a table (see results_frame)."""
        hits = self.search_vectors(np.asarray(vector)[None], k, **options)
        return self.results_frame(hits.scores[0], hits.ids[0], hits.rows[0])

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
