"""What shoppers' photos get (training.shopper_recall) and its place on the Quality page: shopper
photos rendered from held-out catalog items, searched as uploads are, scored by the one Recall@k."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from embedder.embed import Embedder
from index.catalog.loaded import Catalog
from index.quality.evaluation import recall_at_k
from training.shopper_recall import ITEM_SIDE, item_of_photo, sample_rows, shopper_photo, shopper_recall

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def test_a_catalog_photo_becomes_a_light_product_on_black():
    photo = np.full((40, 80, 3), 250, np.uint8)  # a dark product, taller than wide, on a white, wide photo
    photo[10:30, 35:45] = 20
    item = item_of_photo(Image.fromarray(photo))
    assert item.dtype == np.uint8 and item.shape[0] == item.shape[1] <= ITEM_SIDE
    middle = item.shape[0] // 2
    assert item[middle, middle] >= 240 and item[0, 0] == 0 and item[middle, 2] == 0
    assert item[1, middle] >= 240 and item[-2, middle] >= 240  # trimmed to the product: it spans the square's height
    assert item_of_photo(Image.fromarray(photo), side=16).shape == (16, 16)
    # Nothing stands out: nothing to trim, invert or stretch, only fitted (as the normalisation leaves it).
    big = item_of_photo(Image.fromarray(np.full((300, 200, 3), 10, np.uint8)))
    assert big.shape == (ITEM_SIDE, ITEM_SIDE) and big.max() <= 10
    small = np.zeros((28, 28), np.uint8)  # a catalog image already in the domain (trimmed, on black) is kept
    small[:, 9:19] = 200
    small[:, 12] = 255
    assert np.array_equal(item_of_photo(Image.fromarray(small).convert("RGB")), small)


def test_shopper_photos_are_the_same_for_a_seed_and_differ_by_backdrop():
    item = np.zeros((28, 28), np.uint8)
    item[6:22, 8:20] = 220
    plain = np.asarray(shopper_photo(item, "plain", 0, 5))
    assert np.array_equal(plain, np.asarray(shopper_photo(item, "plain", 0, 5)))
    assert not np.array_equal(plain, np.asarray(shopper_photo(item, "plain", 0, 6)))
    assert not np.array_equal(plain, np.asarray(shopper_photo(item, "textured", 0, 5)))
    assert np.array_equal(sample_rows(10, 20, 0), np.arange(10))
    rows = sample_rows(1000, 50, 3)
    assert len(rows) == 50 and np.all(np.diff(rows) > 0) and np.array_equal(rows, sample_rows(1000, 50, 3))


def test_shopper_recall_beside_the_catalog_photos_own(tiny_shop):
    catalog = Catalog.load(tiny_shop.catalog)
    embedder = Embedder.from_checkpoint(tiny_shop.model)
    seen = []
    result = shopper_recall(catalog, embedder, items=10, ks=(1, 5), seed=1,
                            progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert list(result.table.index) == ["catalog photos", "shopper photos, plain", "shopper photos, textured"]
    assert list(result.table.columns) == ["R@1", "R@5", "queries"]
    assert (result.table["queries"] == 10).all() and result.unreadable == 0
    assert result.table[["R@1", "R@5"]].stack().between(0, 1).all()
    assert (result.table["R@5"] >= result.table["R@1"]).all()
    # The catalog photos' row is the one Recall@k, leave-one-out, on the same sampled items.
    rows = sample_rows(len(catalog), 10, 1)
    labels = catalog.metadata["product_id"].astype(str).to_numpy()
    own = recall_at_k(np.asarray(catalog.embeddings)[rows], labels[rows], catalog.embeddings, labels, ks=(1, 5),
                      query_gallery_rows=rows)
    assert result.table.loc["catalog photos", "R@1"] == pytest.approx(own.overall[1])
    # Each shopper row agrees with its photos' first hits; the item a photo was made from is never a hit.
    for kind in ("plain", "textured"):
        hits = result.per_photo[result.per_photo["backdrop"] == kind]["first_hit"].to_numpy()
        assert result.table.loc[f"shopper photos, {kind}", "R@1"] == pytest.approx(np.mean(hits == 0))
    assert seen[-1][1] == seen[-1][2] and "shopper photos" in seen[-1][0].lower()
    again = shopper_recall(catalog, embedder, items=10, ks=(1, 5), seed=1)
    assert again.table.equals(result.table)


def test_a_product_with_one_photo_is_never_found_by_its_own(tiny_shop, tmp_path):
    """Held out: with every item its own product, no photo has another photo of its product."""
    catalog = Catalog.load(tiny_shop.catalog)
    catalog.metadata["product_id"] = [f"only-{i}" for i in range(len(catalog))]
    result = shopper_recall(catalog, Embedder.from_checkpoint(tiny_shop.model), items=6, ks=(1, 3))
    assert (result.table[["R@1", "R@3"]] == 0).all().all()


def test_quality_page_measures_what_shoppers_get(tiny_shop_env):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/quality.py").run()
    assert not at.exception, at.exception
    def shopper_tables():  # a table without selection has no key in AppTest: found by its first column
        return [d.value for d in at.dataframe if "queries from" in d.value.columns]
    assert not shopper_tables()  # measured on request only
    at.button(key="shopper_measure").click().run()
    assert not at.exception, at.exception
    assert not at.error
    (table,) = shopper_tables()
    assert list(table["queries from"]) == ["catalog photos", "shopper photos, plain", "shopper photos, textured"]
    assert {"R@1", "R@10", "photos"} <= set(table.columns)
