"""What a real match scores, measured on the catalog itself and stored in catalog.json; the
preprocessing a catalog was embedded with, recorded so that `ensure` embeds it again once."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from index.__main__ import main
from index.search.calibration import PERCENTILES, calibrate
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog, rebuild_catalog
from index.search.service import CatalogItem, SearchService
from index.catalog.store import INFO_FILE, read_info


def nearest_same_product_scores(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The definition, item by item."""
    scores = []
    for i, label in enumerate(labels):
        others = [j for j in range(len(labels)) if j != i and labels[j] == label]
        if others:
            scores.append(max(float(vectors[i] @ vectors[j]) for j in others))
    return np.asarray(scores)


def test_a_build_stores_the_distribution_of_nearest_same_product_scores(tiny_shop):
    info = read_info(tiny_shop.catalog)
    catalog = Catalog.load(tiny_shop.catalog)
    expected = nearest_same_product_scores(np.asarray(catalog.embeddings), catalog.metadata["product_id"].to_numpy())
    calibration = info.calibration
    assert calibration.label == "product_id" and calibration.items == len(expected) == 24 and not calibration.sampled
    for p in PERCENTILES:
        assert calibration.percentiles[f"p{p}"] == pytest.approx(np.percentile(expected, p), abs=1e-5)
    assert calibration.weak_below == calibration.percentiles["p5"] <= calibration.typical
    assert json.loads((tiny_shop.catalog / INFO_FILE).read_text())["calibration"]["label"] == "product_id"


def test_without_product_ids_the_category_says_which_items_belong_together():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadata = pd.DataFrame({"category": ["a"] * 6 + ["b"] * 5 + ["c"]})
    calibration = calibrate([vectors[:5], vectors[5:]], metadata)  # blocks, as a catalog holds them
    expected = nearest_same_product_scores(vectors, metadata["category"].to_numpy())
    assert calibration.label == "category" and calibration.items == 11  # the lone "c" has no partner
    assert calibration.percentiles["p50"] == pytest.approx(np.median(expected), abs=1e-5)
    assert calibrate([vectors], pd.DataFrame({"category": list("abcdefghijkl")})) is None  # nothing shared


def test_a_sample_of_a_large_catalog_stays_close_to_the_whole():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(50, 16))
    labels = rng.integers(0, 50, 3000)
    vectors = (centres[labels] + 0.8 * rng.normal(size=(3000, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadata = pd.DataFrame({"product_id": labels.astype(str)})
    whole = calibrate([vectors], metadata, max_queries=10_000)
    sample = calibrate([vectors], metadata, max_queries=500)
    assert sample.sampled and not whole.sampled and sample.items == 500
    assert sample.percentiles["p5"] == pytest.approx(whole.percentiles["p5"], abs=0.03)


@pytest.fixture
def old_catalog(tiny_shop, tmp_path):
    """A copy of the tiny shop's catalog as written before catalogs recorded calibration and preprocessing."""
    folder = tmp_path / "catalog"
    shutil.copytree(tiny_shop.catalog, folder)
    stored = json.loads((folder / INFO_FILE).read_text())
    for key in ("calibration", "preprocessing"):
        stored.pop(key)
    (folder / INFO_FILE).write_text(json.dumps(stored))
    return folder


def test_an_old_catalog_loads_and_searches_without_a_confidence_until_it_is_rebuilt(old_catalog, tiny_shop):
    info = read_info(old_catalog)
    assert info.calibration is None and info.preprocessing is None
    found = SearchService(old_catalog, tiny_shop.model).search(CatalogItem(0), k=3)
    assert len(found.frame) == 3 and found.confidence is None
    rebuild_catalog(old_catalog, progress=False)
    assert read_info(old_catalog).calibration == read_info(tiny_shop.catalog).calibration


def test_ensure_re_embeds_a_catalog_made_before_the_preprocessing_was_recorded_once(old_catalog, tiny_shop, capsys):
    before = read_info(old_catalog)
    args = ["ensure", "--manifest", str(tiny_shop.manifest), "--model", str(tiny_shop.model), "--out", str(old_catalog)]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "re-embedding the catalog" in out.out and "re-embedding" in out.err  # its progress bar
    after = read_info(old_catalog)
    assert after.last_operation["reembedded"] is True and after.version != before.version
    assert after.preprocessing["domain"] is True and "domain_settings" in after.preprocessing
    assert after.calibration is not None
    assert main(args) == 0  # once: the next run finds it up to date
    again = capsys.readouterr().out
    assert "re-embedding" not in again and "nothing to change" in again
    assert read_info(old_catalog).version == after.version


def test_a_catalog_records_the_preprocessing_of_its_vectors(tiny_shop, tmp_path):
    from embedder.checkpoint import load_checkpoint, preprocessing_from_checkpoint
    from index.catalog.embedding_settings import preprocessing_changed

    build_catalog(tiny_shop.manifest, tiny_shop.model, tmp_path / "c", progress=False)
    stored = read_info(tmp_path / "c").preprocessing
    preprocessing = preprocessing_from_checkpoint(load_checkpoint(tiny_shop.model))
    assert not preprocessing_changed(stored, preprocessing)
    assert preprocessing_changed({**stored, "domain_settings": {**stored["domain_settings"], "context": 0.5}},
                                 preprocessing)


def test_adding_to_a_catalog_embedded_with_an_older_preparation_is_refused_until_it_is_embedded_again(
        tiny_shop, tmp_path):
    from tests.support.photos import product_photo
    from index.catalog.add import add_to_catalog
    from index.catalog.store import CatalogError

    shop = tmp_path / "shop"
    shutil.copytree(tiny_shop.manifest.parent, shop)
    folder = tmp_path / "catalog"
    build_catalog(shop / "manifest.csv", tiny_shop.model, folder, progress=False)
    stored = json.loads((folder / INFO_FILE).read_text())
    stored["preprocessing"]["domain_settings"]["context"] = 0.5  # vectors made with another preparation
    (folder / INFO_FILE).write_text(json.dumps(stored))
    (shop / "images" / "new.png").write_bytes(product_photo((180, 40, 40)))
    new = shop / "new.csv"
    new.write_text("path,category,product_id\nimages/new.png,hats,hats-new\n")
    before = len(Catalog.load(folder))
    with pytest.raises(CatalogError, match="embed the catalog again before adding"):
        add_to_catalog(folder, new, progress=False)
    assert len(Catalog.load(folder)) == before  # nothing added, nothing lost
    rebuild_catalog(folder, reembed=True, progress=False)
    add_to_catalog(folder, new, progress=False)
    assert len(Catalog.load(folder)) == before + 1
