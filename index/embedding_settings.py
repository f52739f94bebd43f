"""What a catalog's vectors were made with besides the model's weights: the preprocessing and,
when photos are brought into the catalog's domain, the normalisation's settings.

The model fingerprint covers the weights and the checkpoint's stored preprocessing, not the
code that normalises a photo; a catalog records this so that `python -m index ensure` embeds
it again when the way images are prepared changed (vectors made one way are not comparable
with queries made another).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch: imported only where a model runs
    from embedder.preprocess import Preprocessing

RECORD_VERSION = 1  # raise when the meaning of the record changes


def preprocessing_record(preprocessing: "Preprocessing") -> dict:
    from embedder.domain import DomainSettings

    record = {"record": RECORD_VERSION, **preprocessing.to_dict()}
    if preprocessing.domain:
        record["domain_settings"] = dataclasses.asdict(DomainSettings())
    return record


def preprocessing_changed(stored: dict | None, preprocessing: "Preprocessing") -> bool:
    """True when a catalog's vectors were not made the way this preprocessing makes them now
    (a catalog that records nothing was built before the record existed)."""
    return stored != preprocessing_record(preprocessing)
