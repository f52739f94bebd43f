"""Confidence measured on queries that are not catalog photos: is the top result right, and is
the photo of anything this catalog sells at all.

Catalog-to-catalog scores (index.search.calibration) say what two catalog photos of one product score;
every shopper photo scores below them, so a threshold drawn there fires on most right answers.
This model is fitted instead on rendered shopper photos of items the catalog does not hold but
whose product type it does (right or wrong at rank 1), and on photos of things it does not sell
(`python -m training confidence`), from what a search already knows:

- the best score, and how far it stands above the first result of another product;
- how many of the ten nearest items agree with the first one's product;
- how sure the category head is, and whether it names the first result's category.

Two logistic models read these: P(the first result is the right product) and P(the photo shows
something this catalog sells). The weak-match notice shows where either is below its threshold,
both chosen on the calibration photos (the first so that at least 90% of right answers go
without the notice). It is kept beside the model (`MODEL.confidence.json`) and used only with
the model whose fingerprint it names.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedder.files import atomic_path
from index.search.calibration import MatchConfidence
from index.search.algorithm import best_of_views, search_vectors

FEATURES = ("best_score", "gap_to_other_product", "top10_agreement", "category_probability", "category_agrees")
NEIGHBOURS = 10


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """Where a model's query-confidence model is kept: beside it, MODEL.confidence.json."""
    path = Path(model_path)
    return path.with_name(path.stem + ".confidence.json")


def query_features(scores: np.ndarray, labels: np.ndarray, categories: np.ndarray, guess_name: str | None,
                   guess_probability: float | None) -> np.ndarray:
    """FEATURES of one query from its nearest catalog items (best first: scores, product labels,
    categories) and the category head's guess (None where the model has no head)."""
    if len(scores) == 0:
        return np.zeros(len(FEATURES), np.float64)
    top = labels[0]
    others = scores[labels != top]
    gap = float(scores[0] - others[0]) if len(others) else float(scores[0] - scores[-1])
    agreement = float(np.mean(labels[:NEIGHBOURS] == top))
    probability = 1.0 if guess_probability is None else float(guess_probability)
    agrees = 1.0 if guess_name is None else float(guess_name == categories[0])
    return np.array([float(scores[0]), gap, agreement, probability, agrees], np.float64)


def logistic(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P = sigmoid(w0 + w . x) for rows x (n, len(FEATURES)) or one row."""
    z = weights[0] + np.asarray(x, np.float64) @ weights[1:]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> np.ndarray:
    """Weights (bias first) of a logistic regression by Newton's method with a small ridge (no
    extra package: a handful of features and a few thousand photos)."""
    design = np.hstack([np.ones((len(x), 1)), np.asarray(x, np.float64)])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -40, 40)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass(frozen=True)
class QueryConfidenceModel:
    model_fingerprint: str
    label: str  # the column that says which items are the same product (product_id, else category)
    right_weights: tuple  # logistic weights (bias first) for P(first result right)
    in_catalog_weights: tuple  # ... for P(the photo shows something this catalog sells)
    weak_below: float  # P(right) under this: the weak-match notice
    unlike_below: float  # P(in catalog) under this: the notice, and no category is named
    calibration: dict = field(default_factory=dict)  # what it was fitted on and the shares it reached there

    def judge(self, features: np.ndarray) -> tuple[float, float]:
        """(P(first result right), P(photo of something the catalog sells))."""
        return (float(logistic(np.asarray(self.right_weights), features)),
                float(logistic(np.asarray(self.in_catalog_weights), features)))

    def to_dict(self) -> dict:
        return {**asdict(self), "features": list(FEATURES)}

    @classmethod
    def from_dict(cls, data: dict) -> "QueryConfidenceModel":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"the confidence model reads features {data.get('features')}, not {list(FEATURES)}")
        return cls(model_fingerprint=str(data["model_fingerprint"]), label=str(data["label"]),
                   right_weights=tuple(float(v) for v in data["right_weights"]),
                   in_catalog_weights=tuple(float(v) for v in data["in_catalog_weights"]),
                   weak_below=float(data["weak_below"]), unlike_below=float(data["unlike_below"]),
                   calibration=dict(data.get("calibration", {})))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load_for(cls, model_path: str | os.PathLike, fingerprint: str) -> "QueryConfidenceModel | None":
        """The model's sidecar, when there is one and it was fitted for this very model; else None."""
        path = sidecar_path(model_path)
        if not path.is_file():
            return None
        try:
            loaded = cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return loaded if loaded.model_fingerprint == fingerprint else None


def neighbour_features(catalog, vectors: np.ndarray, label: str, guess) -> np.ndarray:
    """FEATURES of a photo query from its NEIGHBOURS nearest items in the whole catalog (each item
    scored by its better view, as a search scores), whatever filter the search itself had."""
    scores, _, rows = best_of_views(search_vectors(catalog, vectors, NEIGHBOURS, normalised=True))
    meta = catalog.metadata.iloc[rows[:NEIGHBOURS]]
    labels = meta[label].astype(str).to_numpy() if label in meta else meta["category"].astype(str).to_numpy()
    return query_features(scores[:NEIGHBOURS], labels, meta["category"].astype(str).to_numpy(),
                          None if guess is None else guess.name, None if guess is None else guess.probability)


def judged(base: MatchConfidence | None, model: QueryConfidenceModel, features: np.ndarray) -> MatchConfidence:
    """The search's confidence with the confidence model's verdict on it."""
    right, inside = model.judge(features)
    unlike = inside < model.unlike_below
    weak_below, typical, label = ((base.weak_below, base.typical, base.label) if base is not None
                                  else (float("nan"), float("nan"), model.label))
    return MatchConfidence(float(features[0]), weak_below, typical, label, probability_right=right, in_catalog=inside,
                           judged_weak=bool(unlike or right < model.weak_below), unlike_catalog=bool(unlike))
