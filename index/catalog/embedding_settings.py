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

# Raise when the meaning of the record changes, or the decoding it stands for: 2 = a light subject on
# transparency is laid on black, not white (embedder.images).
RECORD_VERSION = 2


def preprocessing_record(preprocessing: "Preprocessing") -> dict:
    from embedder.domain_settings import DomainSettings

    record = {"record": RECORD_VERSION, **preprocessing.to_dict()}
    if preprocessing.domain:
        record["domain_settings"] = dataclasses.asdict(DomainSettings())
    return record


def preprocessing_changed(stored: dict | None, preprocessing: "Preprocessing") -> bool:
    """True when a catalog's vectors were not made the way this preprocessing makes them now
    (a catalog that records nothing was built before the record existed)."""
    return stored != preprocessing_record(preprocessing)


def why_reembed(stored_fingerprint: str, stored_record: dict | None, fingerprint: str,
                preprocessing: "Preprocessing") -> str | None:
    """Why a catalog's vectors no longer match this model and its preprocessing, in words; None when they do."""
    if fingerprint != stored_fingerprint:
        return f"the model changed ({stored_fingerprint} -> {fingerprint})"
    if preprocessing_changed(stored_record, preprocessing):
        return ("the catalog was embedded with " + ("an earlier" if stored_record else "the old (before domain "
                "normalisation)") + " preparation of images")
    return None
