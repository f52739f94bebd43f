"""Near-duplicate listings for the hygiene report (index.quality.hygiene): which pairs of items are
worth comparing, which of them are copies, and the groups they form.

- Candidates: pairs proposed by the vectors (cosine at or above `candidate_threshold` among the
  CANDIDATE_NEIGHBOURS nearest) and by the photos themselves (each photo's nearest photos by each
  descriptor of index.quality.photo_prints: the whole frame and the product centred and scaled by
  its spread, both mirror-symmetric, and four views with a corner of the product's box in place: a
  border, a shift, a mirror image or a watermark can move a vector far).
- Confirmation: by the pixels (index.quality.duplicates.match_scores: frame onto frame and pixel
  onto pixel, aligned over shifts and mirror images, then the gradient fields of the overlapping
  regions compared, at `pixel_threshold` or more). Every photo is decoded once. Without image paths
  (or with no pixel threshold), or where a photo cannot be read, a pair of vector neighbours is
  linked when its cosine reaches the vectors-alone threshold.
- Groups: linked items form a group (connected components), so a photo listed three times is one
  group; the table lists each member with its closest linked item.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from index.quality.duplicates import match_scores
from index.quality.neighbours import Neighbours, similar_rows
from index.quality.photo_prints import DESCRIPTOR_FLOOR, PhotoPrints

# Chosen on Fashion-MNIST *training* photos with planted faults and store copies (python -m
# benchmarks.hygiene --calibrate), never on the test catalog the benchmark reports.
CANDIDATE_NEIGHBOURS = 20  # nearest vectors a pair may be proposed from (the reports read the k nearest)
DESCRIPTOR_NEIGHBOURS = {"whole": 5, "moment": 10, "corner": 3}  # nearest photos by each descriptor (each corner)
CHECK_BLOCK = 32_768  # candidate pairs handed to the pixel check at once


def candidate_pairs(neighbours: Neighbours, prints: PhotoPrints, rows: np.ndarray, *, candidate_threshold: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first < second) worth comparing: neighbours (every column given) at cosine >=
    candidate_threshold, and each photo's nearest photos by each descriptor (DESCRIPTOR_NEIGHBOURS,
    correlation >= DESCRIPTOR_FLOOR)."""
    n = len(neighbours.rows)
    close = (neighbours.scores >= candidate_threshold) & (neighbours.rows >= 0)
    a = [np.repeat(np.arange(n), close.sum(axis=1))]
    b = [neighbours.rows[close]]
    readable = np.asarray([r for r in rows if prints(int(r)) is not None], np.int64)
    if len(readable) > 1:
        views = [("whole", lambda p: p.whole), ("moment", lambda p: p.moment)]
        views += [("corner", lambda p, c=c: p.corners[c]) for c in range(4)]  # a corner against the same corner
        for name, of in views:
            descriptors = np.stack([of(prints(int(r))) for r in readable]).astype(np.float32)
            scores, near = similar_rows(descriptors, DESCRIPTOR_NEIGHBOURS[name])
            keep = (near >= 0) & (scores >= DESCRIPTOR_FLOOR)
            a.append(np.repeat(readable, keep.sum(axis=1)))
            b.append(readable[near[keep]])
    a, b = np.concatenate(a), np.concatenate(b)
    if len(a) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return pairs[:, 0], pairs[:, 1]


def confirmed_pairs(vectors, first: np.ndarray, second: np.ndarray, prints: PhotoPrints, *, pixel_threshold: float,
                    fallback_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(linked, cosine, pixel score) of each candidate pair: linked when the photos match at
    pixel_threshold or more (index.quality.duplicates.match_scores), or, when either photo is
    unreadable, when the cosine reaches fallback_threshold. The pixel score is NaN where the photos
    were not compared; the cosine is computed only where it is read (linked pairs and pairs judged
    by their vectors), NaN elsewhere: gathering two vectors per pair of millions is most of the
    cost otherwise. Each row's print is looked up once, not once per pair."""
    rows = np.unique(np.concatenate([first, second]))
    table = np.empty(len(rows), object)
    table[:] = [prints(int(r)) for r in rows]
    readable_row = np.array([p is not None for p in table], bool)
    at_first, at_second = np.searchsorted(rows, first), np.searchsorted(rows, second)
    readable = readable_row[at_first] & readable_row[at_second] if len(rows) else np.zeros(0, bool)
    pixels = np.full(len(first), np.nan, np.float32)
    compared = np.flatnonzero(readable)
    for at in range(0, len(compared), CHECK_BLOCK):
        block = compared[at:at + CHECK_BLOCK]
        pixels[block] = match_scores(table[at_first[block]].tolist(), table[at_second[block]].tolist())
    cosine = np.full(len(first), np.nan, np.float32)
    needed = np.flatnonzero(~readable | (pixels >= pixel_threshold))
    for at in range(0, len(needed), CHECK_BLOCK):
        block = needed[at:at + CHECK_BLOCK]
        cosine[block] = np.einsum("ij,ij->i", np.asarray(vectors[first[block]], np.float32),
                                  np.asarray(vectors[second[block]], np.float32))
    linked = np.where(readable, pixels >= pixel_threshold, cosine >= fallback_threshold)
    return linked, cosine, pixels


def duplicate_groups(n: int, first: np.ndarray, second: np.ndarray, strength: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group of each row, -1 when it has no duplicate; its closest duplicate's row; the strength
    of that link) from the linked pairs. Groups are connected components, numbered 0, 1, ... by
    their strongest link, most alike first."""
    closest = np.full(n, -1, np.int64)
    best = np.full(n, -np.inf, np.float32)
    for a, b in ((first, second), (second, first)):
        order = np.lexsort((b, -strength))  # strongest first, ties by row: the same on any machine
        for i, j, value in zip(a[order], b[order], strength[order]):
            if value > best[i]:
                best[i], closest[i] = value, j
    label = connected_groups(n, first, second)
    in_group = closest >= 0
    group = np.full(n, -1, np.int64)
    if in_group.any():
        members = np.flatnonzero(in_group)
        labels, member_group = np.unique(label[members], return_inverse=True)
        strongest = np.full(len(labels), -np.inf)
        np.maximum.at(strongest, member_group, best[members])
        order = np.lexsort((labels, -strongest))
        renumber = np.empty(len(labels), np.int64)
        renumber[order] = np.arange(len(labels))
        group[members] = renumber[member_group]
    return group, closest, np.where(in_group, best, np.nan).astype(np.float32)


def connected_groups(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The smallest row of each row's connected component over the links (first[i], second[i]):
    labels propagated along the links until none changes."""
    label = np.arange(n)
    if len(first) == 0:
        return label
    while True:
        low = np.minimum(label[first], label[second])
        before = label.copy()
        np.minimum.at(label, first, low)
        np.minimum.at(label, second, low)
        label = label[label]  # jump to the label's own label: halves the chains each round
        if np.array_equal(label, before):
            return label


def linked_pairs(vectors, wide: Neighbours, near: Neighbours, prints: PhotoPrints | None, *,
                 duplicate_threshold: float, candidate_threshold: float, pixel_threshold: float | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """(first, second, cosine, pixel score; NaN where not compared) of the linked pairs, and the
    facts the report gives of the check. With prints (every row's photo): candidate_pairs over
    `wide`, confirmed_pairs; without (or with pixel_threshold None): the pairs of `near` at cosine
    >= duplicate_threshold."""
    n = len(near.rows)
    pixel_facts: dict = {"pixel_threshold": None}
    if prints is not None and pixel_threshold is not None:
        decoded, unreadable = len(prints), prints.unreadable
        prints.load(range(n))  # every photo: the descriptors propose pairs the vectors miss
        first, second = candidate_pairs(wide, prints, np.arange(n), candidate_threshold=candidate_threshold)
        linked, cosine, pixels = confirmed_pairs(vectors, first, second, prints, pixel_threshold=pixel_threshold,
                                                 fallback_threshold=duplicate_threshold)
        pixel_facts = {"candidate_threshold": float(candidate_threshold), "pixel_threshold": float(pixel_threshold),
                       "pixel_pairs": int(np.isfinite(pixels).sum()), "photos_decoded": len(prints) - decoded,
                       "pixel_unreadable": prints.unreadable - unreadable}
    else:
        close = (near.scores >= duplicate_threshold) & (near.rows >= 0)
        first, second = np.repeat(np.arange(n), close.sum(axis=1)), near.rows[close]
        cosine = near.scores[close]
        linked, pixels = np.ones(len(first), bool), np.full(len(first), np.nan, np.float32)
    return first[linked], second[linked], cosine[linked], pixels[linked], pixel_facts


def duplicate_table(items: pd.DataFrame, ids: np.ndarray, first: np.ndarray, second: np.ndarray, cosine: np.ndarray,
                    pixels: np.ndarray, *, pixel_check: bool) -> pd.DataFrame:
    """One row per item in a group (items' own columns, in the order of `items`' rows): group,
    group_size, ..., closest_id, similarity (cosine to the closest linked item) and, when the
    photos were checked, pixel_similarity; by group, most alike first."""
    n = len(items)
    group, closest, _ = duplicate_groups(n, first, second, np.where(np.isfinite(pixels), pixels, cosine))
    members = np.flatnonzero(group >= 0)
    link_cosine = {(int(i), int(j)): float(c) for i, j, c in zip(first, second, cosine)}
    link_pixels = {(int(i), int(j)): float(p) for i, j, p in zip(first, second, pixels)}

    def of_link(table: dict, i: int, j: int) -> float:
        return table.get((i, j), table.get((j, i), np.nan))
    duplicates = items.iloc[members].reset_index(drop=True)
    duplicates.insert(0, "group", group[members])
    duplicates.insert(1, "group_size", np.bincount(group[members])[group[members]] if len(members) else [])
    duplicates["closest_id"] = ids[closest[members]]
    duplicates["similarity"] = np.array([of_link(link_cosine, i, closest[i]) for i in members], np.float32)
    if pixel_check:
        duplicates["pixel_similarity"] = np.array([of_link(link_pixels, i, closest[i]) for i in members], np.float32)
    return duplicates.sort_values(["group", "similarity", "closest_id"], ascending=[True, False, True],
                                  kind="stable").reset_index(drop=True)
