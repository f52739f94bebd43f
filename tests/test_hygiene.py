"""Catalog hygiene: near-duplicates, mis-categorised items and products whose photos disagree,
found from the stored vectors and metadata (index.quality.hygiene), and its CLI."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from benchmarks import store_copies
from benchmarks.store_copies import KINDS, copy_of
from index.__main__ import main as index_main
from index.catalog.loaded import Catalog
from index.quality.duplicates import match_score
from index.quality.hygiene import DEFAULT_PIXEL_THRESHOLD, report_from_vectors
from index.quality.hygiene_report import HygieneError
from index.quality.near_duplicates import connected_groups
from index.quality.neighbours import neighbours_of
from index.quality.photo_prints import WORK_SIDE, print_of_grey

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


# ---------------------------------------------------------------- the pixel check of duplicate candidates

def garment(kind: str, seed: int, *, stripe: bool = False, logo: bool = False, longer_sleeves: bool = False
            ) -> Image.Image:
    """A 28-px catalog-style photo: a light garment with a blocky pattern on black. Variants are
    other items that look alike: a dark band across the chest (`stripe`), a small dark logo on
    the chest (`logo`), sleeves two pixels longer (`longer_sleeves`)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((28, 28), bool)
    if kind == "top":  # body and sleeves
        mask[4:26, 8:20], mask[4:14 if longer_sleeves else 12, 2:26] = True, True
    else:  # trousers: a waistband and two legs
        mask[2:6, 7:21], mask[6:27, 7:13], mask[6:27, 15:21] = True, True, True
    pattern = np.kron(rng.uniform(80, 250, (7, 7)), np.ones((4, 4)))
    pixels = np.where(mask, pattern, 0)
    if stripe:
        pixels[14:17, 8:20] = 60
    if logo:
        pixels[8:11, 15:18] = 30
    return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")


def grey_print(image: Image.Image):
    return print_of_grey(np.asarray(image.convert("L"), np.float32))


LOOK_ALIKES = {"a dark band across the chest": dict(stripe=True), "a small logo": dict(logo=True),
               "longer sleeves": dict(longer_sleeves=True)}


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_copy_of_each_kind_matches_its_original(kind):
    top = garment("top", 0)
    rng = np.random.default_rng(5)
    for _ in range(3):  # three draws of the kind's parameters (shift, crop, border colour, watermark ...)
        assert match_score(grey_print(top), grey_print(copy_of(top, kind, rng))) >= DEFAULT_PIXEL_THRESHOLD


@pytest.mark.parametrize("difference", LOOK_ALIKES)
def test_a_distinct_item_that_looks_alike_is_refused(difference):
    """The same garment, pattern and all, but for one detail: another product."""
    top = grey_print(garment("top", 0))
    assert match_score(top, grey_print(garment("top", 0, **LOOK_ALIKES[difference]))) < DEFAULT_PIXEL_THRESHOLD


def test_distinct_items_of_one_type_or_another_type_are_refused():
    top = grey_print(garment("top", 0))
    for other in (garment("top", 2), garment("trousers", 0)):
        assert match_score(top, grey_print(other)) < DEFAULT_PIXEL_THRESHOLD


def test_a_look_alike_stays_refused_after_a_store_edit():
    """A re-saved, shifted or mirrored photo of a look-alike is still another product."""
    top = grey_print(garment("top", 0))
    rng = np.random.default_rng(3)
    for kind in ("re-encoded", "shifted", "mirrored", "bordered"):
        copy = copy_of(garment("top", 0, logo=True), kind, rng)
        assert match_score(top, grey_print(copy)) < DEFAULT_PIXEL_THRESHOLD


def test_the_descriptors_propose_mirrored_bordered_and_shifted_copies():
    """`whole` and `moment` are the same for a photo and its mirror image; a border leaves the
    product centred and scaled by its spread (`moment`) where it was; a shift that pushes part of
    the product out of the frame leaves the corner view away from the cut where it was."""
    def cosine(x, y):
        return float(x.astype(np.float32) @ y.astype(np.float32))
    top = garment("top", 0)
    original = grey_print(top)
    mirrored = grey_print(ImageOps.mirror(top))
    assert cosine(original.whole, mirrored.whole) == pytest.approx(1.0, abs=2e-3)
    assert cosine(original.moment, mirrored.moment) == pytest.approx(1.0, abs=2e-3)
    for fill in ((255, 255, 255), (128, 128, 128), (0, 0, 0)):
        bordered = grey_print(ImageOps.expand(top, border=3, fill=fill))
        assert cosine(original.moment, bordered.moment) >= 0.95
    trousers = garment("trousers", 0)  # waistband at the top row 2, legs down to the bottom edge
    pushed_down = grey_print(store_copies.shifted(trousers, 2, 3))  # the legs' ends cut off at the bottom
    top_left, top_right = 0, 1
    assert cosine(grey_print(trousers).corners[top_left], pushed_down.corners[top_left]) >= 0.95
    pushed_left = grey_print(store_copies.shifted(top, -3, 0))  # the left sleeve's end cut off
    assert cosine(original.corners[top_right], pushed_left.corners[top_right]) >= 0.95


def test_a_photo_shrunk_for_the_check_keeps_its_files_scale():
    """A large photo and its copy with a border: the pixel-onto-pixel hypothesis reads each
    photo's file scale, so the border is found though both were shrunk to WORK_SIDE."""
    big = garment("top", 0).resize((112, 112), Image.Resampling.BICUBIC)
    framed = ImageOps.expand(big, border=12, fill=(255, 255, 255))
    original, copy = grey_print(big), grey_print(framed)
    assert max(original.pixels.shape) == WORK_SIDE and max(copy.pixels.shape) == WORK_SIDE
    assert copy.scale[0] == pytest.approx(WORK_SIDE / 136)
    assert match_score(original, copy) >= DEFAULT_PIXEL_THRESHOLD


@pytest.fixture(scope="module")
def photographed_shop(tmp_path_factory):
    """A top, one store copy of it of each kind, a top with a logo whose vector sits closer to the
    top than any copy's (a model that confuses them), trousers, and a listing whose photo is
    missing. Vectors are made up (the mirrored, bordered and watermarked copies' far from the top's,
    as the model can place them); the photos are real files."""
    folder = tmp_path_factory.mktemp("photographed-shop")
    top = garment("top", 0)
    top.save(folder / "top.png")
    rng = np.random.default_rng(7)
    names = ["top.png"]
    for kind in KINDS:
        copy_of(top, kind, rng).save(folder / f"top-{kind}.jpg", quality=95)
        names.append(f"top-{kind}.jpg")
    garment("top", 0, logo=True).save(folder / "logo.png")
    garment("trousers", 1).save(folder / "trousers.png")
    names += ["logo.png", "trousers.png", "missing.png"]
    base, other = rng.standard_normal(64), rng.standard_normal(64)

    def at_cosine(cosine: float) -> np.ndarray:
        noise = rng.standard_normal(64)
        noise -= noise @ base / (base @ base) * base
        return cosine * base / np.linalg.norm(base) + np.sqrt(1 - cosine ** 2) * noise / np.linalg.norm(noise)
    far = ("mirrored", "bordered", "watermarked")
    copies = [at_cosine(0.45 if kind in far else 0.93) for kind in KINDS]
    vectors = unit(np.stack([base, *copies, at_cosine(0.975), other, at_cosine(0.985)]))
    metadata = pd.DataFrame({"id": np.arange(len(names)), "path": names,
                             "image_path": [str(folder / n) for n in names]})
    return vectors, metadata, folder


def test_pixels_group_every_store_copy_and_refuse_the_look_alike(photographed_shop):
    vectors, metadata, _ = photographed_shop
    report = report_from_vectors(vectors, metadata, k=5)
    group = dict(zip(report.duplicates["path"], report.duplicates["group"]))
    # Every copy is grouped with the top, the mirrored, bordered and watermarked ones too though
    # their vectors are far (the photos' descriptors propose them); the top with a logo is closer to
    # the top by its vector than any copy, yet is refused.
    assert all(group.get(f"top-{kind}.jpg") == group["top.png"] for kind in KINDS)
    assert "logo.png" not in group and "trousers.png" not in group
    pixels = report.duplicates.set_index("path")["pixel_similarity"]
    assert (pixels[[f"top-{kind}.jpg" for kind in KINDS]] >= DEFAULT_PIXEL_THRESHOLD).all()
    assert report.facts["photos_decoded"] == len(metadata)  # every photo read once (one of them unreadable)
    # The photo that cannot be read is judged by its vector alone (cosine 0.985 >= 0.97): no pixel figure.
    assert report.facts["pixel_unreadable"] == 1 and group["missing.png"] == group["top.png"]
    assert np.isnan(pixels["missing.png"])
    assert "aligned photos' gradient correlation" in report.summary()


def test_without_the_pixel_check_the_look_alike_is_grouped_and_the_copies_are_not(photographed_shop):
    vectors, metadata, _ = photographed_shop
    report = report_from_vectors(vectors, metadata, k=5, duplicate_threshold=0.97, pixel_threshold=None)
    grouped = set(report.duplicates["path"])
    assert {"top.png", "logo.png"} <= grouped and not {f"top-{kind}.jpg" for kind in KINDS} & grouped
    assert "pixel_similarity" not in report.duplicates and report.facts["pixel_threshold"] is None


def test_groups_are_the_connected_links():
    labels = connected_groups(7, np.array([0, 5, 3, 2]), np.array([1, 6, 5, 1]))
    assert labels.tolist() == [0, 0, 0, 3, 4, 3, 3]
