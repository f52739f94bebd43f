"""Precision is chosen on the machine that runs the model, never frozen in a checkpoint or catalog."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from embedder import precision as precision_module
from embedder.embed import Embedder
from embedder.precision import CHOICES, PrecisionError, choose_precision, machine_key, measure
from index.catalog.operations import build_catalog
from index.search.service import SearchService

# bf16 keeps 8 bits of mantissa: a vector made in bf16 and the same photo's fp32 vector agree to this cosine.
CROSS_PRECISION_COSINE = 0.99


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder and no precision pinned by the environment."""
    monkeypatch.delenv("COINSP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("COINSP_PRECISION", raising=False)
    return tmp_path / "xdg" / "coinsp" / "precision.json"


class FakeTiming:
    """Stands in for the measurement: says which precision was faster and counts the calls."""

    def __init__(self, faster: str):
        self.faster, self.calls = faster, 0

    def __call__(self, device, task, **model):
        self.calls += 1
        return {"fp32_ms": 2.0 if self.faster == "fp32" else 9.0, "bf16_ms": 9.0 if self.faster == "fp32" else 2.0,
                "choice": self.faster}


def test_the_first_use_measures_and_the_choice_is_cached_per_processor_and_task(cache):
    timing = FakeTiming("fp32")
    assert choose_precision(None, "cpu", "inference", measure_with=timing) == "fp32"
    assert choose_precision("auto", "cpu", "inference", measure_with=timing) == "fp32"
    assert timing.calls == 1
    stored = json.loads(cache.read_text())
    assert stored[machine_key("cpu", "inference")]["choice"] == "fp32"
    assert precision_module.processor_name() in machine_key("cpu", "inference")
    choose_precision(None, "cpu", "training", measure_with=timing)
    assert timing.calls == 2  # training is measured on its own


def test_a_machine_where_bf16_is_faster_gets_bf16(cache):
    assert choose_precision(None, "cpu", "inference", measure_with=FakeTiming("bf16")) == "bf16"


def test_an_explicit_request_beats_the_environment_which_beats_the_cache(cache, monkeypatch):
    timing = FakeTiming("bf16")
    monkeypatch.setenv("COINSP_PRECISION", "fp32")
    assert choose_precision(None, measure_with=timing) == "fp32"
    assert choose_precision("bf16", measure_with=timing) == "bf16"
    assert timing.calls == 0
    monkeypatch.setenv("COINSP_PRECISION", "fast")
    with pytest.raises(PrecisionError, match="COINSP_PRECISION"):
        choose_precision(None, measure_with=timing)
    with pytest.raises(PrecisionError, match="fp32, bf16, auto"):
        choose_precision("fp16", measure_with=timing)


def test_the_cache_dir_can_be_named(tmp_path, monkeypatch):
    monkeypatch.delenv("COINSP_PRECISION", raising=False)
    monkeypatch.setenv("COINSP_CACHE_DIR", str(tmp_path / "mine"))
    choose_precision(None, measure_with=FakeTiming("fp32"))
    assert (tmp_path / "mine" / "precision.json").is_file()


def test_a_real_measurement_times_both_precisions():
    result = measure("cpu", "inference", repeats=1)
    assert result["fp32_ms"] > 0 and result["bf16_ms"] > 0
    assert result["choice"] in CHOICES


def test_an_embedder_measures_its_own_model_at_first_use(tiny_shop, cache):
    embedder = Embedder.from_checkpoint(tiny_shop.model)
    assert embedder.precision in CHOICES
    stored = json.loads(cache.read_text())
    (key,) = [k for k in stored if "SmallCNN" in k]
    assert key.startswith(machine_key("cpu", "inference")) and "3x32px" in key
    assert stored[key]["choice"] == embedder.precision


def test_a_catalog_recorded_in_bf16_is_searched_in_this_machines_precision(tiny_shop, tmp_path, monkeypatch):
    catalog = tmp_path / "bf16-catalog"
    build_catalog(tiny_shop.manifest, tiny_shop.model, catalog, precision="bf16", progress=False)
    monkeypatch.setenv("COINSP_PRECISION", "fp32")
    service = SearchService(catalog, tiny_shop.model)
    assert service.catalog.info.precision == "bf16"  # a record of how the vectors were made
    assert service.embedder.precision == "fp32"  # not a request


def test_vectors_made_in_one_precision_are_found_by_queries_in_the_other(tiny_shop, tmp_path):
    """The stated tolerance: the same photo's vectors in fp32 and bf16 agree to cosine >= 0.99, and a
    query in either precision finds its own photo first in a catalog embedded in the other."""
    paths = [tiny_shop.manifest.parent / p for p in tiny_shop.items["path"]]
    vectors = {p: Embedder.from_checkpoint(tiny_shop.model, precision=p).embed_files([str(x) for x in paths]).embeddings
               for p in CHOICES}
    agreement = (vectors["fp32"] * vectors["bf16"]).sum(1)
    assert agreement.min() >= CROSS_PRECISION_COSINE
    for catalog_precision, query_precision in (("bf16", "fp32"), ("fp32", "bf16")):
        catalog = tmp_path / f"catalog-{catalog_precision}"
        build_catalog(tiny_shop.manifest, tiny_shop.model, catalog, precision=catalog_precision, progress=False)
        service = SearchService(catalog, tiny_shop.model, precision=query_precision)
        for path in paths[:6]:
            results = service.search(Image.open(path).convert("RGB"), k=1, mirror=False)
            top = results.frame.iloc[0]
            assert top["path"] == str(path.relative_to(tiny_shop.manifest.parent))
            assert top["score"] >= CROSS_PRECISION_COSINE
    assert np.isfinite(agreement).all()
