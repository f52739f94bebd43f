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

    def as_dict(self) -> dict:
        return {"name": self.name, "probability": self.probability}


class CategoryPredictor:
    """Runs the backbone on the query's model input and the category head on its features.

    The embedder returns only the normalised vector; the head may need the raw features (its
    MLP's batch norm is not scale-free), so the backbone runs once more on the same small
    input (a few milliseconds at 28 px)."""

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

    @torch.inference_mode()
    def predict(self, batch_uint8: torch.Tensor) -> CategoryGuess:
        """The top category of one model input (uint8 1 x C x H x W, as the embedder prepares it)."""
        embedder = self.embedder
        x = embedder.preprocessing.normalise(batch_uint8.to(embedder.device))
        features = embedder.backbone(x.contiguous(memory_format=torch.channels_last)).float().cpu()
        probabilities = torch.softmax(category_logits(self.head, features, self.mlp), dim=1)[0].cpu().tolist()
        ranked = sorted(zip(self.categories, probabilities), key=lambda pair: -pair[1])
        return CategoryGuess(ranked[0][0], float(ranked[0][1]), {name: float(p) for name, p in ranked})
