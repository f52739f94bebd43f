"""What a search shows, once candidates are ranked: the query's own catalog copy marked,
near-duplicates hidden (and listed), one result per product.

    shown = rank_results(catalog, vector, k=10, group_by="product_id", hide_duplicates_above=0.95,
                         pool=filter_pool(catalog, flt), mark_copies=True)
    shown.frame     # k results (k products when grouped): rank, score, id, metadata, image_path,
                    # query_copy, and when grouped product_photos / matched_photos
    shown.hidden    # the near-duplicates left out, each with duplicate_of (the id it repeats)

The index is asked for more candidates, four times as many each round, until k results survive
the hiding and the grouping or the pool is exhausted, so a grouped search still returns k
distinct products where the catalog holds k. A caller serving strangers bounds that widening
(`max_candidates`, `deadline`): the results are then the best found so far, and `Shown.cut_short`
says which bound stopped it.

Near-duplicates are compared among the results only. A photo query's own catalog copy is shown
but hides nothing, so it does not take every close variant with it: that is every result scoring
at least SAME_PHOTO_SCORE (the same picture; marked `query_copy`), and the best result when it is
itself a near-duplicate of the photo (scores above the hiding threshold: the catalog photo
re-encoded or resized by the shopper scores 0.987-0.992 on the default catalog, as close as its
nearest other items, so it is not marked, but it hides nothing either).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from index.search.algorithm import best_of_views, search_vectors
from index.catalog.store import CatalogError

SAME_PHOTO_SCORE = 0.995  # cosine: at or above, a result is the query photo itself (re-encoding aside)
GROW = 4  # each round asks the index for this many times more candidates


@dataclass(frozen=True)
class Shown:
    frame: pd.DataFrame  # the results, best first
    hidden: pd.DataFrame  # near-duplicates left out among the places shown, with duplicate_of
    # Fewer than k results because a bound stopped the widening: {"reason": "max_candidates" or
    # "time_budget", "candidates": how many were looked at}; None when nothing was cut short.
    cut_short: dict | None = None


def check_group_column(catalog, column: str) -> str:
    usable = [c for c in catalog.metadata.columns if c not in ("image_path", "id")]
    if column not in usable:
        raise CatalogError(f"cannot group by {column!r}: the catalog has no such column (columns: {', '.join(usable)})")
    return column


_CODES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # catalog -> {column: group code per row}


def group_codes(catalog, column: str) -> np.ndarray:
    """The group of each catalog row as an integer: one per value of `column`, and one of its own
    for a row whose value is missing. Computed once per loaded catalog and column."""
    per_catalog = _CODES.setdefault(catalog, {})
    if column not in per_catalog:
        codes, uniques = pd.factorize(catalog.metadata[column], use_na_sentinel=True)
        missing = codes < 0
        codes = codes.astype(np.int64)
        codes[missing] = len(uniques) + np.flatnonzero(missing)
        per_catalog[column] = codes
    return per_catalog[column]


def rank_results(catalog, vector: np.ndarray, k: int, *, exclude: set[int] | None = None,
                 pool: tuple[np.ndarray, object] | None = None, pool_size: int | None = None,
                 hide_duplicates_above: float | None = None, group_by: str | None = None,
                 mark_copies: bool = False, max_candidates: int | None = None,
                 deadline: float | None = None) -> Shown:
    """The k results of one normalised query vector (see the module's docstring), or of several
    views of one query as rows (each item scored by its best view: index.search.algorithm.best_of_views).

    pool: (rows, FAISS selector) to search within (a category or a metadata filter);
    exclude: ids never shown (the query item); mark_copies: the query is a photo, so results
    scoring SAME_PHOTO_SCORE or more are its own catalog copy; max_candidates: never ask the index
    for more; deadline (time.monotonic()): past it, no new round starts and the round under way
    stops comparing."""
    exclude = exclude or set()
    total = len(catalog.ids) if pool is None else len(pool[0])
    if pool_size is not None:
        total = pool_size
    per_group, sizes = 1, None
    if group_by is not None:
        check_group_column(catalog, group_by)
        sizes = group_sizes(catalog, group_by, pool)
        per_group = max(1, int(np.ceil(total / max(1, int((sizes > 0).sum())))))
    limit = total if max_candidates is None else min(total, max(1, max_candidates))
    n = min(limit, k * per_group * (2 if hide_duplicates_above is not None else 1) + 1)
    views = np.atleast_2d(vector)
    while True:
        hits = search_vectors(catalog, views, max(1, n), exclude_ids=[exclude] * len(views), normalised=True,
                              pool=pool)
        scores, ids, rows = best_of_views(hits)
        exhausted = min(len(found) for found in hits.ids) < n
        shown = _arrange(catalog, scores, ids, rows, k, hide_duplicates_above, group_by, mark_copies, sizes,
                         deadline)
        if len(shown.frame) >= k:
            return shown
        if deadline is not None and time.monotonic() >= deadline:  # the walk may have stopped early too
            return replace(shown, cut_short={"reason": "time_budget", "candidates": int(n)})
        if exhausted or n >= total:
            return shown
        if n >= limit:
            return replace(shown, cut_short={"reason": "max_candidates", "candidates": int(n)})
        n = min(limit, n * GROW)


def group_sizes(catalog, column: str, pool: tuple | None) -> np.ndarray:
    """Photos per group code (group_codes) within the pool (a category or filter)."""
    codes = group_codes(catalog, column)
    return np.bincount(codes if pool is None else codes[np.asarray(pool[0])], minlength=int(codes.max()) + 1)


def _arrange(catalog, scores, ids, rows, k, hide_above, group_by, mark_copies, sizes, deadline=None) -> Shown:
    copies = (scores >= SAME_PHOTO_SCORE) if mark_copies else np.zeros(len(ids), bool)
    keys = group_codes(catalog, group_by)[rows] if group_by is not None else None
    hides_none = copies.copy()
    if mark_copies and hide_above is not None and len(scores) and scores[0] > hide_above:
        hides_none[0] = True  # the best result, a near-duplicate of the photo itself
    shown, hidden, duplicate_of = _walk(catalog, rows, hides_none, keys, k, hide_above, deadline)
    frame = catalog.results_frame(scores[shown], ids[shown], rows=rows[shown])
    _add_column(frame, "query_copy", copies[shown])
    if keys is not None and shown:
        floor = scores[shown[-1]]  # a product's photos that match at least as well as the last one shown
        above = np.bincount(keys[scores >= floor], minlength=len(sizes))
        _add_column(frame, "matched_photos", above[keys[shown]].astype(int))
        _add_column(frame, "product_photos", sizes[keys[shown]].astype(int))
    hidden_frame = catalog.results_frame(scores[hidden], ids[hidden], rows=rows[hidden])
    _add_column(hidden_frame, "duplicate_of", [duplicate_of[j] for j in hidden])
    return Shown(frame, hidden_frame)


def _add_column(frame: pd.DataFrame, name: str, values) -> None:
    """Add a column before image_path, which stays last (the results' documented layout)."""
    at = frame.columns.get_loc("image_path") if "image_path" in frame.columns else len(frame.columns)
    frame.insert(at, name, values)


def _walk(catalog, rows, hides_none, keys, k, hide_above, deadline=None) -> tuple[list[int], list[int], dict[int, int]]:
    """(shown positions, hidden positions, hidden position -> the id it repeats), best first, down
    to the k-th result shown, or as far as it got by `deadline` (time.monotonic()).

    A result is hidden when its cosine to a better shown result, not a copy of the query, is above
    `hide_above`; with `keys`, only the best result of each group is shown."""
    vectors = np.asarray(catalog.scoring_vectors[rows], np.float32) if hide_above is not None else None
    ids = catalog.ids[rows]
    shown, references, hidden, duplicate_of, groups = [], [], [], {}, set()
    for j in range(len(rows)):
        if deadline is not None and j % 64 == 63 and time.monotonic() >= deadline:
            break  # the caller sees fewer than k and that its deadline passed
        if vectors is not None and references:
            similar = vectors[references] @ vectors[j]
            best = int(np.argmax(similar))
            if float(similar[best]) > hide_above:
                hidden.append(j)
                duplicate_of[j] = int(ids[references[best]])
                continue
        if keys is not None:
            if keys[j] in groups:
                continue  # another photo of a product shown: neither shown nor compared with
            groups.add(keys[j])
        shown.append(j)
        if not hides_none[j]:
            references.append(j)
        if len(shown) == k:
            break
    return shown, hidden, duplicate_of
