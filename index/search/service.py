"""The search the CLI, the app and the HTTP API use: a photo or a catalog item in, similar items out.

    service = SearchService("catalogs/fashion-mnist-test", "models/coinsp-fmnist.pt")
    results = service.search("query.jpg", k=10, category="footwear", hide_duplicates_above=0.98,
                             box=(120, 40, 610, 580), min_score=0.8)
    results.frame                # rank, score, id, metadata, image_path
    results.timing.as_dict()     # {"decode_embed_ms": ..., "search_ms": ..., "total_ms": ...}
    results.category             # CategoryGuess("footwear", 0.97), when the model has a category head
    results.confidence.weak      # the best score is below what a real match scores in this catalog
    results.dropped              # results under min_score left out
    service.search(CatalogItem(42), k=10)    # items like catalog item 42, itself left out
    service.search(photo, group_by="product_id", metadata_filter="color=red OR color=blue AND brand=X")
    results.hidden               # near-duplicates left out (with duplicate_of), when hiding them
    results.filter_matches       # items the metadata filter admits (0: nothing to search)

A photo is decoded once, refused when it holds nothing to search for (blank, uniform, tiny:
embedder.domain.UnusablePhotoError) and brought into the catalog's domain by the embedder; `box`
(x0, y0, x1, y1 in the photo's pixels) is the shopper's query region (embedder.regions.BoxError
when it selects no part of the photo).

A search keeps no state in the service: each call returns its results and their timing, so
one service answers many threads at once. Results are a DataFrame: rank, score (cosine
similarity), id, the item's metadata (path, category, product_id, other manifest columns) and
image_path (absolute, for display).
"""
from __future__ import annotations

import dataclasses

import io
import os
import time
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
import pandas as pd
import torch
from PIL import Image

from embedder.domain import UnusablePhotoError, check_photo, refuse_unusable
from embedder.embed import Embedder
from embedder.images import decode_image
from embedder.regions import Box, BoxError, check_box
from index.search.calibration import MatchConfidence, assess
from index.catalog.loaded import Catalog
from index.catalog.projection import projecting_embedder
from index.search.category_guess import CategoryGuess, CategoryPredictor
from index.search.query_confidence import QueryConfidenceModel, judged, neighbour_features
from index.search.filters import FilterError, FilterPool, MetadataFilter, filter_pool, metadata_filter as checked_filter
from index.search.grouping import rank_results
from index.catalog.store import CatalogError, ModelMismatchError, UnknownItemError, check_model

ImageInput = Union[bytes, bytearray, str, os.PathLike, Image.Image, BinaryIO]

__all__ = ["SearchService", "SearchTiming", "Results", "CatalogItem", "CategoryGuess", "MatchConfidence",
           "ModelMismatchError", "CatalogError", "UnknownItemError", "UnusablePhotoError", "BoxError", "to_rgb",
           "product_region", "object_regions", "FilterError"]


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
    category: CategoryGuess | None = None  # the model's category for the photo (None: no category head, or an item)
    confidence: MatchConfidence | None = None  # the best score against the catalog's calibration (None: not calibrated)
    dropped: int = 0  # results under min_score left out
    region: tuple[int, int, int, int] | None = None  # the query region used, in whole pixels (None: automatic)
    view: np.ndarray | None = None  # what the model saw: uint8 C x size x size (photo queries)
    hidden: pd.DataFrame | None = None  # near-duplicates left out among the places shown (duplicate_of: the id)
    filter: MetadataFilter | None = None  # the metadata filter searched within
    filter_matches: int | None = None  # how many catalog items it admits (0: no item matches it)
    group_by: str | None = None  # one result per value of this column (product_id)
    cut_short: dict | None = None  # a bound stopped the search widening (index.search.grouping.Shown.cut_short)
    evidence: np.ndarray | None = None  # what the confidence model read (index.search.query_confidence.FEATURES)

    def summary(self) -> dict:
        """What the CLI's JSON and the HTTP API return beside the results."""
        hidden = [] if self.hidden is None else [
            {"id": int(i), "score": float(s), "duplicate_of": int(d)}
            for i, s, d in zip(self.hidden["id"], self.hidden["score"], self.hidden["duplicate_of"])]
        return {"predicted_category": self.category.as_dict() if self.category else None,
                "confidence": self.confidence.as_dict() if self.confidence else None,
                "dropped_below_min_score": self.dropped,
                "region": list(self.region) if self.region else None,
                "hidden_near_duplicates": hidden,
                "filter": None if self.filter is None else {"expression": str(self.filter),
                                                            "matching_items": self.filter_matches},
                "group_by": self.group_by,
                "cut_short": self.cut_short}


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


def product_region(image: Image.Image) -> tuple[int, int, int, int]:
    """The automatic product region of a decoded photo, in whole pixels (the default query
    region to show a shopper); UnusablePhotoError when the photo holds nothing to search for."""
    return object_regions(image)[0]


def object_regions(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """The automatic product region, then the other things in the photo that stand out about as
    much (up to three, likeliest first: what else the shopper may have meant), in whole pixels;
    UnusablePhotoError when the photo holds nothing to search for."""
    analysis = check_photo(image)
    w, h = image.size
    return [(max(0, int(np.floor(x0 * w))), max(0, int(np.floor(y0 * h))),
             min(w, int(np.ceil(x1 * w))), min(h, int(np.ceil(y1 * h))))
            for x0, y0, x1, y1 in [analysis.box, *analysis.others]]


def check_query_photo(image: Image.Image, box: Box | None) -> tuple[int, int, int, int] | None:
    """The query region in whole pixels (None: the whole photo), after refusing a photo or region
    that holds nothing to search for."""
    region = None if box is None else check_box(box, *image.size)
    if region is None:
        refuse_unusable(image)
        return None
    try:
        refuse_unusable(image.crop(region))
    except UnusablePhotoError as exc:
        raise UnusablePhotoError(f"in the chosen region {list(region)}: {exc}") from None
    return region


class SearchService:
    """A model and a catalog, checked to belong together (same model fingerprint).

    Torch's thread count is the process's: a server of many small queries sets it once at start
    (app.api sets 1 per worker); nothing here changes it per query.
    """

    def __init__(self, catalog_folder: str | os.PathLike, checkpoint_path: str | os.PathLike,
                 device: str = "cpu", precision: str | None = None):
        self.catalog = Catalog.load(catalog_folder)
        # The catalog records the precision its vectors were made in; queries run in this machine's own
        # (embedder/precision.py): both give vectors comparable within round-off.
        self.embedder = Embedder.from_checkpoint(checkpoint_path, device=device, precision=precision)
        check_model(self.catalog.info, self.embedder.fingerprint, str(checkpoint_path))
        self.categories = CategoryPredictor.from_checkpoint(checkpoint_path, self.embedder)
        # Confidence fitted on shopper photos for this model (index.search.query_confidence), where it ships one.
        self.query_confidence = QueryConfidenceModel.load_for(checkpoint_path, self.embedder.fingerprint)
        self._project_queries()

    @classmethod
    def from_parts(cls, catalog: Catalog, embedder: Embedder, categories: CategoryPredictor | None = None,
                   query_confidence: QueryConfidenceModel | None = None) -> "SearchService":
        """A service over an already loaded catalog and model (fingerprint still checked)."""
        service = cls.__new__(cls)
        check_model(catalog.info, embedder.fingerprint)
        service.catalog, service.embedder, service.categories = catalog, embedder, categories
        service.query_confidence = query_confidence
        service._project_queries()
        return service

    def _project_queries(self) -> None:
        """A catalog of projected vectors (index.catalog.projection): queries go through its projection.
        The model's query-confidence fit read the model's own cosines, not the projected ones, so such a
        catalog's weak-match notice comes from its own calibration (measured at every commit)."""
        if self.catalog.projection is None:
            return
        self.embedder = projecting_embedder(self.embedder, self.catalog.projection)
        self.query_confidence = None

    def embed(self, image: ImageInput, box: Box | None = None) -> np.ndarray:
        """The query's feature vector (d,), L2-normalised. Raises embedder.images.ImageError."""
        return self.embedder.embed_image(to_rgb(image), box)

    def search(self, query: Query, k: int = 10, category: str | None = None,
               hide_duplicates_above: float | None = None, *, box: Box | None = None,
               min_score: float | None = None, group_by: str | None = None,
               metadata_filter: str | MetadataFilter | None = None, mirror: bool = True,
               max_candidates: int | None = None, time_budget_s: float | None = None) -> Results:
        """Catalog items most similar to a photo (bytes, path, file object or PIL image) or to a
        CatalogItem (the item itself left out).

        box: the query region of a photo (x0, y0, x1, y1 in its pixels); min_score: results
        scoring under it are left out (counted in Results.dropped); group_by: one result per
        value of this column (its best photo; still k of them); metadata_filter: only items meeting
        it (index.search.filters: `color=red OR color=blue AND brand=X`), FilterError when it cannot be read.
        A photo's own catalog copy (the same picture) is marked `query_copy` and hides no near-duplicate.
        mirror: a photo is also searched as its mirror image, each item scored by the better of the two
        (a shopper photographs a shoe facing either way; a catalog's shoes usually all face one way).
        max_candidates, time_budget_s: bounds on the widening for k results under hiding, grouping or a
        filter (index.search.grouping.rank_results); when one stops it, Results.cut_short says which.
        Raises embedder.images.ImageError for an unusable photo (UnusablePhotoError: nothing in
        it to search for; BoxError: a box that selects no part of it), UnknownItemError for an id
        the catalog does not hold, CatalogError for other requests it cannot answer (a category
        it does not have)."""
        started = time.perf_counter()
        deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
        flt, pool = None, None
        if metadata_filter is not None and str(metadata_filter).strip():
            flt = checked_filter(metadata_filter, self.catalog.metadata.columns)
            if category is not None:
                flt = flt.and_also("category", category)
            found_pool = self.filter_pool(flt)
            pool = (found_pool.rows, found_pool.selector)
        elif category is not None:
            pool = self.catalog.category_pool(category)
        exclude, guess, region, view = None, None, None, None
        if isinstance(query, CatalogItem):
            if box is not None:
                raise BoxError("a query region (box) applies to a photo, not to a catalog item")
            vector, exclude = self.catalog.vectors_of([int(query.id)])[0], [[int(query.id)]]
            embedded = started
        else:
            image = to_rgb(query)
            region = check_query_photo(image, box)
            view = self.embedder.preprocessing.to_uint8(image, region)
            views = np.stack([view, view[:, :, ::-1]]) if mirror else view[None]
            features = self.embedder.features_uint8(torch.from_numpy(views))  # once, for vectors and category
            vector = self.embedder.vectors(features)  # one row per view
            guess = self.categories.predict_features(features[:1]) if self.categories else None
            embedded = time.perf_counter()
        cut_short = None
        if pool is not None and len(pool[0]) == 0:  # no item matches the filter: nothing to search
            frame, hidden = self.catalog.results_frame(np.zeros(0), np.zeros(0, np.int64)), None
        else:
            shown = rank_results(self.catalog, vector, k, exclude=set(exclude[0]) if exclude else None, pool=pool,
                                 hide_duplicates_above=hide_duplicates_above, group_by=group_by,
                                 mark_copies=not isinstance(query, CatalogItem), max_candidates=max_candidates,
                                 deadline=deadline)
            frame, hidden, cut_short = shown.frame, shown.hidden, shown.cut_short
        confidence = assess(float(frame["score"].iloc[0]) if len(frame) else None, self.catalog.info.calibration)
        evidence = None
        if self.query_confidence is not None and not isinstance(query, CatalogItem):
            evidence = neighbour_features(self.catalog, vector, self.query_confidence.label, guess)
            confidence = judged(confidence, self.query_confidence, evidence)
            if confidence.unlike_catalog and guess is not None:
                guess = dataclasses.replace(guess, unlike_catalog=True)
        dropped = 0
        if min_score is not None:
            keep = frame["score"] >= float(min_score)
            dropped = int((~keep).sum())
            frame = frame[keep].reset_index(drop=True)
        return Results(frame, SearchTiming(embedded - started, time.perf_counter() - embedded), category=guess,
                       confidence=confidence, dropped=dropped, region=region, view=view, hidden=hidden, filter=flt,
                       filter_matches=None if flt is None else len(pool[0]), group_by=group_by,
                       cut_short=cut_short, evidence=evidence)

    def filter_pool(self, flt: MetadataFilter) -> FilterPool:
        """The catalog rows a filter admits, cached per filter (a service serves one catalog version)."""
        pools = self.__dict__.setdefault("_filter_pools", {})
        key = str(flt)
        if key not in pools:
            if len(pools) >= 64:
                pools.pop(next(iter(pools)))
            found = filter_pool(self.catalog, flt)
            if self.catalog.backend is not None:  # the backend's own expression instead of a FAISS selector
                found = FilterPool(found.rows, self.catalog.backend.pool(self.catalog, flt.conditions), None)
            pools[key] = found
        return pools[key]
