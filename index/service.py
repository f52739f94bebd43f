"""The search the CLI, the app and the HTTP API use: a photo or a catalog item in, similar items out.

    service = SearchService("catalogs/fashion-mnist-test", "models/coinsp-fmnist.pt")
    results = service.search("query.jpg", k=10, category="footwear", hide_duplicates_above=0.98)
    results.frame                # rank, score, id, metadata, image_path
    results.timing.as_dict()     # {"decode_embed_ms": ..., "search_ms": ..., "total_ms": ...}
    service.search(CatalogItem(42), k=10)    # items like catalog item 42, itself left out

A search keeps no state in the service: each call returns its results and their timing, so
one service answers many threads at once. Results are a DataFrame: rank, score (cosine
similarity), id, the item's metadata (path, category, product_id, other manifest columns) and
image_path (absolute, for display).
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
import pandas as pd
from PIL import Image

from embedder.embed import Embedder
from embedder.images import decode_image
from index.catalog import Catalog
from index.store import CatalogError, ModelMismatchError, UnknownItemError, check_model

ImageInput = Union[bytes, bytearray, str, os.PathLike, Image.Image, BinaryIO]

__all__ = ["SearchService", "SearchTiming", "Results", "CatalogItem", "ModelMismatchError", "CatalogError",
           "UnknownItemError", "to_rgb"]


@dataclass(frozen=True)
class CatalogItem:
    """A query by an item of the catalog: its stored vector, no image decoded, no model run."""
    id: int


Query = Union[ImageInput, CatalogItem]


@dataclass(frozen=True)
class SearchTiming:
    decode_embed_s: float  # decoding the photo and running the model (0 for a catalog item)
    search_s: float  # the catalog search, re-scoring and filtering included

    @property
    def total_s(self) -> float:
        return self.decode_embed_s + self.search_s

    def as_dict(self) -> dict:
        return {"decode_embed_ms": 1000 * self.decode_embed_s, "search_ms": 1000 * self.search_s,
                "total_ms": 1000 * self.total_s}


@dataclass(frozen=True)
class Results:
    frame: pd.DataFrame
    timing: SearchTiming


def to_rgb(image: ImageInput) -> Image.Image:
    """Any accepted query input -> upright RGB image through the one decoding path (an RGB
    image is returned as it is: it has been decoded already)."""
    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return image
        buffer = io.BytesIO()  # alpha, palettes, 16-bit: let decode_image apply its rules
        image.save(buffer, format="PNG")
        return decode_image(buffer.getvalue())
    return decode_image(image)


class SearchService:
    """A model and a catalog, checked to belong together (same model fingerprint).

    Torch's thread count is the process's: a server of many small queries sets it once at start
    (app.api sets 1 per worker); nothing here changes it per query.
    """

    def __init__(self, catalog_folder: str | os.PathLike, checkpoint_path: str | os.PathLike,
                 device: str = "cpu", precision: str | None = None):
        self.catalog = Catalog.load(catalog_folder)
        precision = precision or self.catalog.info.precision
        self.embedder = Embedder.from_checkpoint(checkpoint_path, device=device, precision=precision)
        check_model(self.catalog.info, self.embedder.fingerprint, str(checkpoint_path))

    @classmethod
    def from_parts(cls, catalog: Catalog, embedder: Embedder) -> "SearchService":
        """A service over an already loaded catalog and model (fingerprint still checked)."""
        service = cls.__new__(cls)
        check_model(catalog.info, embedder.fingerprint)
        service.catalog, service.embedder = catalog, embedder
        return service

    def embed(self, image: ImageInput) -> np.ndarray:
        """The query's feature vector (d,), L2-normalised. Raises embedder.images.ImageError."""
        return self.embedder.embed_image(to_rgb(image))

    def search(self, query: Query, k: int = 10, category: str | None = None,
               hide_duplicates_above: float | None = None) -> Results:
        """Catalog items most similar to a photo (bytes, path, file object or PIL image) or to a
        CatalogItem (the item itself left out).

        Raises embedder.images.ImageError for an unusable photo, UnknownItemError for an id the
        catalog does not hold, CatalogError for other requests it cannot answer (a category it
        does not have)."""
        started = time.perf_counter()
        exclude = None
        if isinstance(query, CatalogItem):
            vector, exclude = self.catalog.vectors_of([int(query.id)])[0], [[int(query.id)]]
            embedded = started
        else:
            vector = self.embed(query)
            embedded = time.perf_counter()
        hits = self.catalog.search_vectors(vector[None], k, category=category, exclude_ids=exclude,
                                           hide_duplicates_above=hide_duplicates_above, normalised=True)
        frame = self.catalog.results_frame(hits.scores[0], hits.ids[0], rows=hits.rows[0])
        return Results(frame, SearchTiming(embedded - started, time.perf_counter() - embedded))
