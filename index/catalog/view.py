"""What the modules below a loaded catalog read of it: the search algorithm (index.search.algorithm),
how its vectors are held (index.catalog.vectors), recall against exact search (index.search.exact) and a
Milvus backend (index.scale.milvus) take a catalog as a `CatalogView`.

`Catalog` (index.catalog.loaded) is the one implementation. It uses those modules, so they name
this interface rather than the class: the imports run one way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

import faiss
import numpy as np
import pandas as pd

from index.catalog.choose import IndexChoice
from index.catalog.description import CatalogInfo


class Vectors(Protocol):
    """Rows of vectors, read by position: `shape` and `vectors[rows]` -> float32 rows."""
    shape: tuple[int, int]

    def __getitem__(self, rows) -> np.ndarray: ...


class CatalogView(Protocol):
    """A loaded catalog, read-only: its items (rows sorted by id), vectors, index and where it is served."""
    folder: Path | None
    info: CatalogInfo
    metadata: pd.DataFrame
    ids: np.ndarray  # int64, ascending: row i holds item ids[i]
    embeddings: Vectors  # the stored vectors, row i for item ids[i]
    scoring_vectors: Vectors  # what results are re-scored with (index.catalog.vectors)
    choice: IndexChoice  # the index and its search parameters
    on_disk: bool
    backend: Any  # None: the folder's FAISS index; else candidates come from it (index.scale.backends)

    @property
    def dim(self) -> int: ...

    @property
    def index(self) -> faiss.Index: ...

    def rows_of(self, ids: Iterable[int]) -> np.ndarray: ...

    def category_pool(self, category: str) -> tuple[np.ndarray, faiss.IDSelector]: ...
