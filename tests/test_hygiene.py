"""Catalog hygiene: near-duplicates, mis-categorised items and products whose photos disagree,
found from the stored vectors and metadata (index.hygiene), and its CLI."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from index.__main__ import main as index_main
from index.catalog import Catalog
from index.hygiene import HygieneError, neighbours_of, report_from_vectors

CATEGORIES = ("apparel", "bags", "footwear")
PRODUCTS_PER_CATEGORY = 20
PHOTOS_PER_PRODUCT = 5
PLANTED = 10


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted_shop():
    """300 photos of 60 products in 3 categories (vectors: category + product + photo noise), then
    10 copies under a wrong category, 10 near-duplicates, and one product with a stranger's photo."""
    rng = np.random.default_rng(0)
    d = 48
    category_centre = rng.standard_normal((len(CATEGORIES), d)) * 3
    rows, vectors = [], []
    for c, category in enumerate(CATEGORIES):
        for p in range(PRODUCTS_PER_CATEGORY):
            product_centre = category_centre[c] + rng.standard_normal(d)
            for _ in range(PHOTOS_PER_PRODUCT):
                vectors.append(product_centre + 0.5 * rng.standard_normal(d))
                rows.append({"path": f"{category}/{p}/{len(rows)}.png", "category": category,
                             "product_id": f"{category}-{p}"})
    base = len(rows)
    sources = rng.choice(base, 2 * PLANTED, replace=False)
    wrong, duplicates = sources[:PLANTED], sources[PLANTED:]
    for n, row in enumerate(wrong):
        other = [c for c in CATEGORIES if c != rows[row]["category"]][n % 2]
        rows.append({**rows[row], "path": f"planted/wrong-{n}.png", "category": other})
        vectors.append(vectors[row] + 0.05 * rng.standard_normal(d))
    for n, row in enumerate(duplicates):
        rows.append({**rows[row], "path": f"planted/dup-{n}.jpg"})
        vectors.append(vectors[row] + 0.05 * rng.standard_normal(d))
    # Product apparel-3's third photo is really a photo of bags-7.
    stranger = next(i for i, r in enumerate(rows) if r["product_id"] == "apparel-3")
    vectors[stranger + 2] = category_centre[1] + rng.standard_normal(d)
    metadata = pd.DataFrame(rows)
    metadata.insert(0, "id", np.arange(len(metadata)))
    return unit(np.asarray(vectors)), metadata, wrong, duplicates, base


def test_neighbours_are_exact_and_never_the_item_itself(planted_shop):
    vectors = planted_shop[0]
    neighbours = neighbours_of(vectors, 5)
    brute = vectors @ vectors.T
    np.fill_diagonal(brute, -np.inf)
    assert (neighbours.rows != np.arange(len(vectors))[:, None]).all()
    np.testing.assert_allclose(neighbours.scores, -np.sort(-brute, axis=1)[:, :5], atol=1e-5)


def test_planted_wrong_categories_lead_the_miscategorised_report(planted_shop):
    vectors, metadata, wrong, _, base = planted_shop
    report = report_from_vectors(vectors, metadata, k=10, duplicate_threshold=0.99)
    planted_ids = set(range(base, base + PLANTED))
    top = report.miscategorised.head(2 * PLANTED)
    assert planted_ids <= set(top["id"])
    suggested = dict(zip(top["id"], top["suggested_category"]))
    assert all(suggested[base + n] == metadata.loc[row, "category"] for n, row in enumerate(wrong))
    assert list(report.miscategorised["rank"]) == list(range(1, len(report.miscategorised) + 1))
    assert (report.miscategorised["share"] > 0.5).all()
    assert report.miscategorised["share"].is_monotonic_decreasing


def test_planted_near_duplicates_share_a_group_with_their_source(planted_shop):
    vectors, metadata, wrong, duplicates, base = planted_shop
    report = report_from_vectors(vectors, metadata, k=10, duplicate_threshold=0.99)
    group = dict(zip(report.duplicates["id"], report.duplicates["group"]))
    for n, source in enumerate(duplicates):
        assert group[base + PLANTED + n] == group[source]
    for n, source in enumerate(wrong):  # a listing copied under another category is a duplicate too
        assert group[base + n] == group[source]
    assert set(group) == set(range(base, base + 2 * PLANTED)) | set(wrong) | set(duplicates)
    sizes = report.duplicates.groupby("group").size()
    assert (report.duplicates["group_size"] == report.duplicates["group"].map(sizes)).all()
    assert (report.duplicates["similarity"] >= 0.99).all()


def test_a_product_with_a_strangers_photo_leads_the_product_report(planted_shop):
    vectors, metadata, *_ = planted_shop
    report = report_from_vectors(vectors, metadata, k=10)
    stranger = metadata.index[metadata["product_id"] == "apparel-3"][2]
    first = report.products.iloc[0]
    assert first["product_id"] == "apparel-3" and first["worst_id"] == metadata.loc[stranger, "id"]
    assert first["looks_like"].startswith("bags-") and first["worst_own"] < first["worst_other"]
    assert (report.products["odd_photos"].iloc[1:] == 0).all()  # every other product's photos agree


def test_reports_without_product_or_category_columns_and_bad_settings(planted_shop):
    vectors, metadata, *_ = planted_shop
    bare = report_from_vectors(vectors, metadata[["id", "path"]], k=5)
    assert len(bare.miscategorised) == 0 and len(bare.products) == 0 and len(bare.duplicates) > 0
    with pytest.raises(HygieneError, match="at least 2 items"):
        report_from_vectors(vectors[:1], metadata.iloc[:1])
    with pytest.raises(HygieneError, match="threshold"):
        report_from_vectors(vectors, metadata, duplicate_threshold=1.5)


def test_hygiene_cli_writes_csv_and_markdown(tiny_shop, tmp_path, capsys):
    """A catalog where one photo is listed twice, the copy under another category."""
    shop = tmp_path / "shop"
    shutil.copytree(tiny_shop.manifest.parent, shop)
    items = tiny_shop.items
    source = items.iloc[0]
    shutil.copyfile(shop / source["path"], shop / "images" / "relisted.jpg")
    relisted = {**source.to_dict(), "path": "images/relisted.jpg", "category": "shoes"}
    pd.concat([items, pd.DataFrame([relisted])]).to_csv(shop / "manifest.csv", index=False)
    catalog = tmp_path / "catalog"
    assert index_main(["-q", "build", "--manifest", str(shop / "manifest.csv"), "--model", str(tiny_shop.model),
                       "--out", str(catalog)]) == 0
    prefix = tmp_path / "reports" / "shop"
    assert index_main(["hygiene", "--catalog", str(catalog), "--out", str(prefix), "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "near-duplicate groups" in out and "shop.md" in out
    meta = Catalog.load(catalog).metadata
    ids = meta.set_index("path")["id"]
    duplicates = pd.read_csv(f"{prefix}-duplicates.csv")
    pair = duplicates[duplicates["id"].isin([ids[source["path"]], ids["images/relisted.jpg"]])]
    assert len(pair) == 2 and pair["group"].nunique() == 1 and (pair["similarity"] == 1.0).all()
    assert set(pair["category"]) == {source["category"], "shoes"}
    for name in ("miscategorised", "products"):
        assert pd.read_csv(f"{prefix}-{name}.csv").shape[1] > 3
    markdown = (tmp_path / "reports" / "shop.md").read_text()
    assert "## Near-duplicate listings" in markdown and "## Likely mis-categorised items" in markdown
    assert "1.000" in markdown  # three decimals, the CSVs too
    written = pd.read_csv(f"{prefix}-duplicates.csv", dtype=str)["similarity"]
    assert written.str.fullmatch(r"-?\d+\.\d{3}").all()


def test_hygiene_cli_on_a_missing_catalog_is_a_user_error(tmp_path, capsys):
    assert index_main(["hygiene", "--catalog", str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err
