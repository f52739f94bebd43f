"""The category the model sees in a query photo, from the checkpoint's category head
(embedder/category_head.py). A checkpoint without one gives no guess."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from embedder.category_head import category_logits, mlp_from_state
from embedder.checkpoint import load_checkpoint


@dataclass(frozen=True)
class CategoryGuess:
    name: str
    probability: float  # softmax of the head's logits
    probabilities: dict  # every category's probability, highest first
    # The photo is not like anything the catalog sells (index.search.query_confidence): no category is named.
    unlike_catalog: bool = False

    def as_dict(self) -> dict:
        if self.unlike_catalog:
            return {"name": None, "probability": None, "unlike_catalog": True,
                    "text": "not like anything this catalog sells"}
        return {"name": self.name, "probability": self.probability}


class CategoryPredictor:
    """The category head on the backbone's raw features of a query's model input (the head's MLP
    batch norm is not scale-free, so it reads the features before normalisation)."""

    def __init__(self, head: dict, categories: list[str], embedder):
        if head["weight"].shape[0] != len(categories):
            raise ValueError(f"the category head has {head['weight'].shape[0]} outputs "
                             f"for {len(categories)} categories")
        self.head, self.categories, self.embedder = head, list(categories), embedder
        self.mlp = mlp_from_state(head["mlp"]) if head.get("input") == "mlp" else None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, embedder) -> "CategoryPredictor | None":
        payload = load_checkpoint(path)
        head = payload.get("coarse_head")
        return None if head is None else cls(head, payload["categories"], embedder)

    def predict(self, batch_uint8: torch.Tensor) -> CategoryGuess:
        """The top category of one model input (uint8 1 x C x H x W, as the embedder prepares it)."""
        return self.predict_features(self.embedder.features_uint8(batch_uint8))

    @torch.inference_mode()
    def predict_features(self, features: torch.Tensor) -> CategoryGuess:
        """The top category from the backbone's raw features of one input (1 x d, Embedder.features_uint8):
        a search computes them once for both its vector and its category."""
        probabilities = torch.softmax(category_logits(self.head, features.float(), self.mlp), dim=1)[0].tolist()
        ranked = sorted(zip(self.categories, probabilities), key=lambda pair: -pair[1])
        return CategoryGuess(ranked[0][0], float(ranked[0][1]), {name: float(p) for name, p in ranked})
