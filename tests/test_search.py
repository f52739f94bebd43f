"""The search API: photos and items in, ranked catalog items out; filters, dedupe, model checks."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedder.images import ImageError
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog, rebuild_catalog
from index.search.service import CatalogItem, ModelMismatchError, SearchService
from index.catalog.store import CatalogError, UnknownItemError
from tests.support.models import random_model

CATEGORIES = ["tops", "shoes", "bags"]
PER_CATEGORY = 8



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """24 distinct images plus two exact copies (near-duplicates), a catalog, two models."""
    root = tmp_path_factory.mktemp("search")
    images = root / "shop" / "images"
    images.mkdir(parents=True)
    rows = []
    for c, category in enumerate(CATEGORIES):
        for p in range(PER_CATEGORY):
            rng = np.random.default_rng(10 * c + p)
            pixels = np.zeros((28, 28), np.uint8)  # a textured product on the catalog's black background
            pixels[4:24, 3 + 3 * c:25] = rng.integers(60, 255, (20, 22 - 3 * c))
            Image.fromarray(pixels, mode="L").save(images / f"{category}-{p}.png")
            rows.append({"path": f"images/{category}-{p}.png", "category": category, "product_id": f"{category}-{p}"})
    for name in ("tops-0", "shoes-0"):
        shutil.copy(images / f"{name}.png", images / f"{name}-copy.png")
        rows.append({"path": f"images/{name}-copy.png", "category": name.split("-")[0], "product_id": name})
    manifest = root / "shop" / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    model_a, model_b = random_model(root / "a.pt", CATEGORIES, seed=0, grid=2), random_model(root / "b.pt", CATEGORIES, seed=1, grid=2)
    folder = root / "catalog"
    build_catalog(manifest, model_a, folder, progress=False)
    return {"root": root, "manifest": manifest, "folder": folder, "model": model_a, "model_b": model_b,
            "images": images}


@pytest.fixture(scope="module")
def service(setup):
    return SearchService(setup["folder"], setup["model"])


def test_a_photo_finds_itself_whatever_the_input_type(service, setup):
    path = setup["images"] / "bags-3.png"
    found = service.search(path, k=5)
    by_path = found.frame
    assert list(by_path.columns[:3]) == ["rank", "score", "id"] and by_path.columns[-1] == "image_path"
    assert {"path", "category", "product_id"} <= set(by_path.columns)
    assert "content_hash" not in by_path.columns
    assert by_path["path"].iloc[0] == "images/bags-3.png" and by_path["score"].iloc[0] == pytest.approx(1, abs=1e-4)
    assert by_path["rank"].tolist() == [1, 2, 3, 4, 5] and by_path["score"].is_monotonic_decreasing
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in by_path["image_path"])
    with Image.open(path) as image:
        by_image = service.search(image.copy(), k=5).frame
    by_bytes = service.search(path.read_bytes(), k=5).frame
    with open(path, "rb") as f:
        by_file = service.search(f, k=5).frame
    for other in (by_image, by_bytes, by_file):
        assert other["id"].tolist() == by_path["id"].tolist()
    timing = found.timing.as_dict()
    assert set(timing) == {"decode_embed_ms", "search_ms", "total_ms"} and timing["decode_embed_ms"] > 0


def test_search_by_id_leaves_the_item_out(service):
    found = service.search(CatalogItem(5), k=10)
    results = found.frame
    assert len(results) == 10 and 5 not in results["id"].tolist()
    assert found.timing.decode_embed_s == 0
    with pytest.raises(UnknownItemError, match="no item with id 999"):
        service.search(CatalogItem(999))


def test_one_service_answers_many_threads_at_once_with_the_same_results(service, setup):
    """A search keeps no state in the service: threads need no lock around it."""
    queries = [setup["images"] / f"{c}-{p}.png" for c in CATEGORIES for p in range(3)] + [CatalogItem(i) for i in range(8)]
    alone = [service.search(q, k=5, category=None).frame["id"].tolist() for q in queries]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: service.search(q, k=5).frame["id"].tolist(), queries * 4))
    assert together == alone * 4


def test_category_filter_still_returns_k(service):
    for category in CATEGORIES:
        results = service.search(CatalogItem(0), k=PER_CATEGORY, category=category).frame
        assert len(results) == PER_CATEGORY and set(results["category"]) == {category}
        assert 0 not in results["id"].tolist()
    with pytest.raises(CatalogError, match="no items in category 'hats'"):
        service.search(CatalogItem(0), category="hats")


@pytest.mark.parametrize("factory, knob", [("HNSW8", {"efSearch": 1}), ("IVF8,Flat", {"nprobe": 1}),
                                           ("IVF4,PQ4x4", {"nprobe": 1})])
def test_category_filter_on_approximate_indexes(setup, tmp_path, factory, knob, monkeypatch):
    folder = tmp_path / "catalog"
    shutil.copytree(setup["folder"], folder)
    rebuild_catalog(folder, index=factory, progress=False)
    catalog = Catalog.load(folder)
    catalog.choice.params.update(knob)  # the weakest search: filters must still fill k
    monkeypatch.setattr("index.search.algorithm.EXACT_POOL_FLOATS", 0)  # force the index path, not the exact pool
    exact = Catalog.load(setup["folder"])
    for category in CATEGORIES:
        got = catalog.search_frame(catalog.vectors_of([1])[0], 6, category=category)
        want = exact.search_frame(exact.vectors_of([1])[0], 6, category=category)
        assert len(got) == 6 and set(got["category"]) == {category}
        np.testing.assert_allclose(got["score"], np.sort(got["score"])[::-1])
        assert len(set(got["id"]) & set(want["id"])) >= 4


def test_near_duplicates_are_hidden(service):
    plain = service.search(CatalogItem(0), k=5).frame  # tops-0: its exact copy ranks first
    copy_id = int(plain["id"].iloc[0])
    assert plain["path"].iloc[0] == "images/tops-0-copy.png" and plain["score"].iloc[0] == pytest.approx(1, abs=1e-4)
    query = service.catalog.vectors_of([copy_id])[0]
    full = service.catalog.search_frame(query, k=5)
    assert {"images/tops-0.png", "images/tops-0-copy.png"} <= set(full["path"])
    deduped = service.catalog.search_frame(query, k=5, hide_duplicates_above=0.999)
    assert len(deduped) == 5
    assert len({"images/tops-0.png", "images/tops-0-copy.png"} & set(deduped["path"])) == 1
    vectors = service.catalog.vectors_of(deduped["id"])
    similarity = vectors @ vectors.T
    assert (similarity[np.triu_indices(5, 1)] <= 0.999).all()


def test_a_catalog_built_with_another_model_is_refused(setup):
    with pytest.raises(ModelMismatchError) as caught:
        SearchService(setup["folder"], setup["model_b"])
    message = str(caught.value)
    assert "Rebuild the catalog with this model" in message and "load the model it was built with" in message


def test_bad_query_photos_raise_image_errors(service, setup):
    with pytest.raises(ImageError):
        service.search(b"not an image at all")
    with pytest.raises(ImageError, match="not found"):
        service.search(setup["images"] / "nope.png")


def test_catalog_search_needs_no_model(setup):
    catalog = Catalog.load(setup["folder"])
    hits = catalog.search_vectors(np.asarray(catalog.embeddings[:4]), 3, exclude_ids=[[i] for i in catalog.ids[:4]])
    scores, ids = hits.padded(3)
    assert ids.shape == (4, 3)
    assert (ids != catalog.ids[:4, None]).all()
    padded_scores, padded_ids = catalog.search_vectors(np.asarray(catalog.embeddings[:1]), 100,
                                                       category="bags").padded(100)
    assert (padded_ids[0] >= 0).sum() == PER_CATEGORY and np.isnan(padded_scores[0, PER_CATEGORY:]).all()


# ---------------------------------------------------------------- query region, unusable photos, threshold (CLI)

def cli(capsys, *args) -> tuple[int, str, str]:
    from index.__main__ import main

    status = main(["-q", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_cli_searches_a_query_region_given_with_box(setup, capsys):
    photo = setup["images"] / "bags-3.png"
    base = ["search", "--catalog", setup["folder"], "--model", setup["model"], "--image", photo, "--json"]
    status, out, _ = cli(capsys, *base, "--box", "0,0,28,28")
    import json

    whole = json.loads(out)
    assert status == 0 and whole["region"] == [0, 0, 28, 28]
    status, out, _ = cli(capsys, *base, "--box", "12,2,28,26")
    part = json.loads(out)
    assert status == 0 and part["region"] == [12, 2, 28, 26]
    assert [r["id"] for r in part["results"]] != [r["id"] for r in whole["results"]]


@pytest.mark.parametrize("box, message", [
    ("1,2,3", "--box: a box is four numbers x0,y0,x1,y1; got '1,2,3'"),
    ("one,2,3,4", "a box is four numbers"),
    ("20,2,10,26", "empty or reversed"),
    ("0,0,29,40", "reaches outside the 28x28 photo"),
])
def test_a_bad_box_is_a_clear_cli_error(setup, capsys, box, message):
    status, out, err = cli(capsys, "search", "--catalog", setup["folder"], "--model", setup["model"],
                           "--image", setup["images"] / "bags-3.png", "--box", box)
    assert status == 2 and out == "" and err.startswith("error: ") and message in err


def test_a_box_needs_a_photo(setup, capsys):
    status, _, err = cli(capsys, "search", "--catalog", setup["folder"], "--model", setup["model"], "--id", 1,
                         "--box", "0,0,5,5")
    assert status == 2 and "--box is a region of the photo given with --image" in err


@pytest.mark.parametrize("image, words", [(Image.new("RGB", (1, 1)), "too small"),
                                          (Image.new("RGB", (300, 200), "white"), "blank or uniform")])
def test_a_photo_with_nothing_to_search_for_is_refused_with_exit_status_2(setup, capsys, tmp_path, image, words):
    path = tmp_path / "blank.png"
    image.save(path)
    status, out, err = cli(capsys, "search", "--catalog", setup["folder"], "--model", setup["model"], "--image", path)
    assert status == 2 and out == "" and err.startswith(f"error: {path}: ") and words in err
    with pytest.raises(ImageError, match=words):
        SearchService(setup["folder"], setup["model"]).search(path)


def test_min_score_leaves_out_weaker_results_and_says_how_many(service, setup, capsys):
    scores = service.search(CatalogItem(3), k=8).frame["score"].tolist()
    # The threshold goes in the widest gap between neighbouring scores, never at a tie: the fixture holds
    # exact copies, whose scores are equal on one machine and a rounding apart on another.
    gaps = [scores[i] - scores[i + 1] for i in range(len(scores) - 1)]
    kept = int(np.argmax(gaps)) + 1
    assert gaps[kept - 1] > 1e-4  # a hundred times any BLAS's rounding of these cosines
    threshold = (scores[kept - 1] + scores[kept]) / 2
    found = service.search(CatalogItem(3), k=8, min_score=threshold)
    np.testing.assert_allclose(found.frame["score"], scores[:kept], atol=1e-6)
    assert found.dropped == 8 - kept
    status, out, _ = cli(capsys, "search", "--catalog", setup["folder"], "--model", setup["model"], "--id", 3,
                         "--k", 8, "--min-score", threshold)
    assert status == 0 and f"{8 - kept} result(s) scoring below --min-score {threshold} left out" in out
    assert f"{kept} results over 26 items" in out


def test_the_cli_prints_the_predicted_category_and_the_weak_match_notice(fashion_shop, capsys, tmp_path):
    from tests.support.photos import shopper_photo
    from index.importers import FASHION_MNIST_CLASSES

    bags = np.flatnonzero(fashion_shop.train_labels == FASHION_MNIST_CLASSES.index("Bag"))
    bag = fashion_shop.train_images[int(bags[0])]
    (tmp_path / "bag.jpg").write_bytes(shopper_photo(bag))
    status, out, _ = cli(capsys, "search", "--catalog", fashion_shop.catalog, "--model", fashion_shop.model,
                         "--image", tmp_path / "bag.jpg", "--k", 5)
    assert status == 0 and out.startswith("predicted category: bags (") and "Weak match" not in out
    assert out.count(" Bag ") >= 3
    ring = Image.new("L", (28, 28))
    from PIL import ImageDraw

    ImageDraw.Draw(ring).line([(4, 5), (24, 9), (6, 22), (23, 24), (12, 3)], fill=255, width=2)  # a scribble
    (tmp_path / "scribble.jpg").write_bytes(shopper_photo(np.asarray(ring)))
    status, out, _ = cli(capsys, "search", "--catalog", fashion_shop.catalog, "--model", fashion_shop.model,
                         "--image", tmp_path / "scribble.jpg", "--k", 5)
    # The kept model's confidence, fitted on shopper photos, sees a scribble as unlike anything the catalog sells.
    assert status == 0 and out.startswith("predicted category: none (not like anything this catalog sells)")
    assert "No good match: this photo does not look like anything this catalog sells" in out


def test_a_model_without_a_category_head_predicts_nothing(service):
    assert service.categories is None
    found = service.search(CatalogItem(1), k=3)
    assert found.category is None and found.summary()["predicted_category"] is None
