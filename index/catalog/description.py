"""What a catalog is: catalog.json, read and written through one typed description.

    info = read_info("catalogs/fashion-mnist-test")     # index.catalog.store
    info.version, info.feature_dim, info.model_fingerprint, info.index["factory"]

The file's keys are the fields below. Reading by key (info["version"], info.get("counts")) still
works, for code that shows the description as it is stored (the Catalog page lists it).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from index.search.calibration import ScoreCalibration
from index.catalog.choose import DEFAULT_MEMORY_BUDGET, IndexChoice

FORMAT = "coinsp-catalog/1"


@dataclass
class VectorShards:
    """Where an on-disk catalog's full vectors are: Parquet embedding shards (index.scale.shards), and
    whether the version keeps a float16 copy of them for re-scoring (rerank_vectors.npy)."""
    folder: str
    files: list
    dtype: str = "float32"
    rerank_copy: bool = False
    storage: str = "parquet shards"


@dataclass
class CatalogInfo(Mapping):
    """catalog.json. `index` is the index record: the IndexChoice (factory, reason, params) plus
    what building measured (recall against exact search, seconds, whether the user chose it)."""
    model_fingerprint: str
    feature_dim: int
    root: str
    index: dict
    format: str = FORMAT
    version: str | None = None
    previous_version: str | None = None
    built_at: str | None = None
    created_at: str | None = None
    model_path: str | None = None
    precision: str = "bf16"
    manifest: str | None = None
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET
    next_id: int = 0
    counts: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    last_operation: dict | None = None
    vectors: VectorShards | None = None  # on-disk catalogs only
    # How the vectors were made besides the weights (index.catalog.embedding_settings); None: before it was recorded.
    preprocessing: dict | None = None
    # What a real match scores here (index.search.calibration); None: not measured yet, or no two items of a product.
    calibration: ScoreCalibration | None = None
    # The stored vectors are the model's projected to fewer dims (index.catalog.projection: method, dims,
    # input_dim, file, fingerprint); queries go through the same matrix. None: the model's own vectors.
    projection: dict | None = None
    extra: dict = field(default_factory=dict)  # keys this version of the product does not know, kept

    @property
    def choice(self) -> IndexChoice:
        return IndexChoice.from_dict(self.index)

    @classmethod
    def from_dict(cls, data: dict) -> "CatalogInfo":
        """The description stored as `data`; KeyError naming a missing required field."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("vectors"), dict):
            values["vectors"] = VectorShards(**{k: v for k, v in values["vectors"].items()
                                                if k in {f.name for f in dataclasses.fields(VectorShards)}})
        if isinstance(values.get("calibration"), dict):
            values["calibration"] = ScoreCalibration.from_dict(values["calibration"])
        missing = [name for name in ("model_fingerprint", "feature_dim", "root", "index") if name not in values]
        if missing:
            raise KeyError(", ".join(missing))
        values["feature_dim"] = int(values["feature_dim"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        """What catalog.json stores (fields without a value on old catalogs are left out)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in ("vectors", "preprocessing", "calibration", "projection"):
                if value is None:
                    continue
                if f.name == "vectors":
                    value = dataclasses.asdict(value)
                elif f.name == "calibration":
                    value = value.to_dict()
            out[f.name] = value
        return {**out, **self.extra}

    def replace(self, **changes) -> "CatalogInfo":
        """A copy with some fields changed (index, counts and skipped copied, not shared)."""
        copy = dataclasses.replace(self, index=dict(self.index), counts=dict(self.counts),
                                   skipped=list(self.skipped), extra=dict(self.extra))
        for name, value in changes.items():
            setattr(copy, name, value)
        return copy

    # Reading by key, as stored.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
