"""What a real match scores in this catalog, measured on the catalog itself.

Each item's score (cosine) to its nearest other item of the same product is what a search
finds when the product is in the catalog. The distribution of those scores, stored in the
catalog's description at every build, add, remove and rebuild, says when a query's best score
is lower than real matches score: a weak match (the catalog may not hold the product).

Same product = the same `product_id`; a catalog without product ids uses the same `category`
(a looser notion: the scores are then those of similar items, not of the same product).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

PERCENTILES = (1, 5, 10, 25, 50, 75, 95)
WEAK_PERCENTILE = 5  # a best score below this share of real matches' scores is a weak match
MAX_QUERIES = 2_000  # items whose nearest same-product score is measured (a seeded sample above this)
MAX_CANDIDATES = 20_000  # per product (or category): members compared with, sampled above this
LABEL_COLUMNS = ("product_id", "category")


@dataclass(frozen=True)
class ScoreCalibration:
    """The distribution of items' scores to their nearest other item of the same `label`."""
    label: str  # the column that says which items are the same product
    items: int  # items measured
    percentiles: dict  # {"p5": score, ...} over PERCENTILES
    mean: float
    sampled: bool = False  # items (or candidates) were a seeded sample, not all of them

    @property
    def weak_below(self) -> float:
        """Best scores under this are weak matches (the WEAK_PERCENTILE-th percentile)."""
        return float(self.percentiles[f"p{WEAK_PERCENTILE}"])

    @property
    def typical(self) -> float:
        return float(self.percentiles["p50"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ScoreCalibration":
        return cls(label=str(data["label"]), items=int(data["items"]),
                   percentiles={str(k): float(v) for k, v in data["percentiles"].items()},
                   mean=float(data["mean"]), sampled=bool(data.get("sampled", False)))


@dataclass(frozen=True)
class MatchConfidence:
    """A search's best score against what real matches score in its catalog; where the model has
    a confidence model fitted on shopper photos (index.search.query_confidence), its judgement decides."""
    best_score: float
    weak_below: float
    typical: float
    label: str
    probability_right: float | None = None  # P(the first result is the right product), from shopper photos
    in_catalog: float | None = None  # P(the photo shows something this catalog sells)
    judged_weak: bool | None = None  # the confidence model's verdict (None: the score rule decides)
    unlike_catalog: bool = False  # the photo is not like anything this catalog sells

    @property
    def weak(self) -> bool:
        if self.judged_weak is not None:
            return self.judged_weak
        return self.best_score < self.weak_below

    def as_dict(self) -> dict:
        out = {"weak": self.weak, "best_score": self.best_score, "weak_below": self.weak_below,
               "typical_match_score": self.typical, "same": self.label}
        if self.probability_right is not None:
            out.update({"probability_right": round(self.probability_right, 4),
                        "probability_in_catalog": round(float(self.in_catalog), 4), "unlike_catalog": self.unlike_catalog})
        return out

    def notice(self) -> str:
        """The weak-match notice, in a shopper's words."""
        if self.unlike_catalog:
            return ("No good match: this photo does not look like anything this catalog sells. The results below "
                    "are only the least unlike it; try a photo of the product alone, or adjust the crop box.")
        if self.probability_right is not None:
            return (f"Weak match: photos like this one find the right product first only about "
                    f"{100 * self.probability_right:.0f}% of the time. The catalog may not hold this product, or the "
                    "photo shows it differently: try a photo of the product alone, or adjust the crop box around it.")
        what = "two photos of the same product" if self.label == "product_id" else "two similar items"
        return (f"Weak match: the best score here ({self.best_score:.3f}) is lower than 95% of the scores "
                f"between {what} in this catalog (those are {self.weak_below:.3f} or more, typically "
                f"{self.typical:.3f}). The catalog may not hold this product, or the photo shows it "
                "differently: try a photo of the product alone, or adjust the crop box around it.")


def assess(best_score: float | None, calibration: ScoreCalibration | None) -> MatchConfidence | None:
    if best_score is None or calibration is None or not np.isfinite(best_score):
        return None
    return MatchConfidence(float(best_score), calibration.weak_below, calibration.typical, calibration.label)


def _label_column(metadata: pd.DataFrame) -> str | None:
    for column in LABEL_COLUMNS:
        if column in metadata and metadata[column].notna().any() and metadata[column].duplicated().any():
            return column
    return None


def _gather(blocks: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows (sorted or not) of the vertical stack of `blocks`, without stacking them all."""
    bounds = np.cumsum([0] + [len(b) for b in blocks])
    out = np.empty((len(rows), blocks[0].shape[1]), np.float32)
    which = np.searchsorted(bounds, rows, side="right") - 1
    for b in np.unique(which):
        at = np.flatnonzero(which == b)
        out[at] = np.asarray(blocks[b][rows[at] - bounds[b]], np.float32)
    return out


def calibrate(blocks: Sequence[np.ndarray], metadata: pd.DataFrame, *, max_queries: int = MAX_QUERIES,
              max_candidates: int = MAX_CANDIDATES, seed: int = 0) -> ScoreCalibration | None:
    """The nearest same-product score distribution of a catalog's vectors (rows of the stacked
    blocks, in metadata order); None when no two items share a product (or category)."""
    column = _label_column(metadata)
    if column is None or not blocks or sum(len(b) for b in blocks) != len(metadata):
        return None
    labels = metadata[column].astype("string").to_numpy()
    known = ~pd.isna(labels)
    groups = pd.Series(np.arange(len(labels))[known]).groupby(labels[known]).agg(list)
    groups = groups[groups.map(len) >= 2]
    eligible = np.concatenate([np.asarray(g, np.int64) for g in groups]) if len(groups) else np.zeros(0, np.int64)
    if len(eligible) == 0:
        return None
    rng = np.random.default_rng(seed)
    sampled = len(eligible) > max_queries
    queries = np.sort(rng.choice(eligible, max_queries, replace=False)) if sampled else np.sort(eligible)
    query_set = set(queries.tolist())
    scores = []
    for members in groups:
        members = np.asarray(members, np.int64)
        asking = np.asarray([m for m in members if m in query_set], np.int64)
        if len(asking) == 0:
            continue
        if len(members) > max_candidates:
            sampled = True
            kept = asking[:max_candidates // 2]
            pool = np.setdiff1d(members, kept)
            others = rng.choice(pool, min(len(pool), max_candidates - len(kept)), replace=False)
            members = np.sort(np.concatenate([kept, others]))
        similarity = _gather(blocks, asking) @ _gather(blocks, members).T
        similarity[asking[:, None] == members[None, :]] = -np.inf  # not the item itself
        best = similarity.max(axis=1)
        scores.append(best[np.isfinite(best)])
    scores = np.concatenate(scores) if scores else np.zeros(0)
    if len(scores) == 0:
        return None
    values = np.percentile(scores, PERCENTILES)
    return ScoreCalibration(label=column, items=int(len(scores)),
                            percentiles={f"p{p}": round(float(v), 6) for p, v in zip(PERCENTILES, values)},
                            mean=round(float(scores.mean()), 6), sampled=sampled)
