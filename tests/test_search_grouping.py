"""Grouped search (one result per product, still k products) and metadata filters (AND across
columns, OR within one), in the search service, the CLI and the HTTP API."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image


from index.__main__ import main as cli
from index.search.filters import FilterError, parse_filter
from index.catalog.operations import build_catalog
from index.search.service import CatalogItem, SearchService
from index.catalog.store import CatalogError
from tests.support.models import random_model
from tests.support.exact_ranking import TIE, assert_exact_top_k  # noqa: E402

COLOURS, BRANDS = ["red", "blue", "green"], ["X", "Y"]
PRODUCTS, PHOTOS = 24, 4



@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """24 products x 4 photos each (a base pattern plus noise), with colour and brand columns."""
    root = tmp_path_factory.mktemp("grouped")
    images = root / "shop" / "images"
    images.mkdir(parents=True)
    rows = []
    for p in range(PRODUCTS):
        base = np.random.default_rng(p).integers(40, 255, (20, 20))
        for v in range(PHOTOS):
            pixels = np.zeros((28, 28), np.uint8)
            noise = np.random.default_rng(1000 * p + v).integers(-25, 25, (20, 20))
            pixels[4:24, 4:24] = np.clip(base + noise, 0, 255)
            Image.fromarray(pixels, mode="L").save(images / f"p{p}-v{v}.png")
            rows.append({"path": f"images/p{p}-v{v}.png", "category": ["tops", "shoes"][p % 2],
                         "product_id": f"p{p}", "color": COLOURS[p % 3], "brand": BRANDS[(p // 3) % 2]})
    manifest = root / "shop" / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    model = random_model(root / "model.pt", ["tops", "shoes"], grid=2)
    build_catalog(manifest, model, root / "catalog", progress=False)
    return {"folder": root / "catalog", "model": model, "images": images}


@pytest.fixture(scope="module")
def service(shop):
    return SearchService(shop["folder"], shop["model"])


def exact_scores(service, query_id: int) -> np.ndarray:
    """Every catalog item's exact cosine to the query item, in metadata row order."""
    metadata = service.catalog.metadata
    vectors = np.asarray(service.catalog.embeddings, np.float32)
    query = vectors[int(np.flatnonzero(metadata["id"] == query_id)[0])]
    return vectors @ query


def assert_filtered_top_k(service, query_id: int, keep: pd.Series, k: int, found: pd.DataFrame) -> None:
    """The results are an exact top-k among rows where `keep` holds, the query item left out (ties in any order)."""
    metadata = service.catalog.metadata
    allowed = keep.to_numpy() & (metadata["id"] != query_id).to_numpy()
    assert_exact_top_k(found["id"], found["score"], metadata["id"], exact_scores(service, query_id), allowed, k)


def test_grouping_returns_k_distinct_products_each_its_best_photo(service):
    metadata = service.catalog.metadata
    for query in (0, 17, 50):
        found = service.search(CatalogItem(query), k=8, group_by="product_id").frame
        assert len(found) == 8 and found["product_id"].is_unique
        ungrouped = service.search(CatalogItem(query), k=len(metadata) - 1).frame
        best = ungrouped.groupby("product_id")["score"].max()  # each product's best photo's score
        assert_exact_top_k(found["product_id"], found["score"], best.index, best.to_numpy(),
                           np.ones(len(best), bool), 8)  # the 8 best products, ties in any order
        photo_score = dict(zip(ungrouped["id"], ungrouped["score"]))
        np.testing.assert_allclose([photo_score[i] for i in found["id"]], found["score"], atol=TIE)  # its best photo
        assert (found["product_photos"] == PHOTOS).all()
        last = found["score"].iloc[-1]
        for _, row in found.iterrows():  # matched: its photos scoring at least as well as the last product shown
            same = ungrouped[(ungrouped["product_id"] == row["product_id"]) & (ungrouped["score"] >= last)]
            assert row["matched_photos"] == len(same)


def test_grouping_needs_a_column_the_catalog_has(service):
    with pytest.raises(CatalogError, match="cannot group by 'sku'"):
        service.search(CatalogItem(0), k=5, group_by="sku")


@pytest.mark.parametrize("expression, keep", [
    ("color=red", lambda m: m["color"] == "red"),
    ("color=red OR color=blue", lambda m: m["color"].isin(["red", "blue"])),
    ("brand=X AND color=green", lambda m: (m["brand"] == "X") & (m["color"] == "green")),
    ("color=red OR color=blue AND brand=Y", lambda m: m["color"].isin(["red", "blue"]) & (m["brand"] == "Y")),
    ('brand="Y" AND category=tops', lambda m: (m["brand"] == "Y") & (m["category"] == "tops")),
])
def test_filters_match_a_brute_force_reference_and_still_return_k(service, expression, keep):
    metadata = service.catalog.metadata
    mask = keep(metadata)
    for query in (0, 33):
        found = service.search(CatalogItem(query), k=10, metadata_filter=expression)
        assert_filtered_top_k(service, query, mask, 10, found.frame)
        assert len(found.frame) == min(10, int(mask.sum()) - int(mask[metadata["id"] == query].sum()))
        assert found.filter_matches == int(mask.sum())


def test_a_filter_combines_with_category_and_grouping(service):
    metadata = service.catalog.metadata
    found = service.search(CatalogItem(0), k=3, category="shoes", metadata_filter="color=red OR color=green",
                           group_by="product_id").frame
    assert len(found) == 3 and found["product_id"].is_unique
    assert set(found["category"]) == {"shoes"} and set(found["color"]) <= {"red", "green"}
    mask = (metadata["category"] == "shoes") & metadata["color"].isin(["red", "green"])
    assert_filtered_top_k(service, 0, mask, 1, found.head(1))  # the best product is the best item


def test_a_filter_no_item_meets_returns_nothing_and_says_so(service):
    found = service.search(CatalogItem(0), k=5, metadata_filter="color=purple")
    assert found.frame.empty and found.filter_matches == 0
    assert found.summary()["filter"] == {"expression": "color=purple", "matching_items": 0}


@pytest.mark.parametrize("expression, message", [
    ("color", "cannot read 'color'"),
    ("color=red OR brand=X", "OR joins values of one column"),
    ("", "the filter is empty"),
    ("color=red AND", "cannot read"),
])
def test_bad_filter_syntax_is_a_clear_error(expression, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(expression)


def test_an_unknown_filter_column_names_the_columns_there_are(service):
    with pytest.raises(FilterError, match="no column 'size'.*color"):
        service.search(CatalogItem(0), k=5, metadata_filter="size=M")


def test_the_cli_groups_and_filters(shop, capsys):
    common = ["search", "--catalog", str(shop["folder"]), "--model", str(shop["model"]), "--id", "0", "--k", "5"]
    assert cli([*common, "--group-by", "product_id", "--filter", "color=red OR color=blue", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    products = [r["product_id"] for r in body["results"]]
    assert len(products) == 5 == len(set(products))
    assert {r["color"] for r in body["results"]} <= {"red", "blue"}
    assert body["group_by"] == "product_id" and body["filter"]["expression"] == "color=blue OR color=red"
    assert cli([*common, "--filter", "color=purple"]) == 0
    assert "no item matches the filter color=purple" in capsys.readouterr().out
    assert cli([*common, "--filter", "colour=red"]) == 2
    assert "error: the catalog has no column 'colour'" in capsys.readouterr().err


def test_the_api_groups_and_filters_and_refuses_bad_ones(shop):
    pytest.importorskip("fastapi", reason="optional extra: pip install -r requirements-distributed.txt")
    from fastapi.testclient import TestClient

    from app import api

    with TestClient(api.create_app(shop["folder"], shop["model"])) as http:
        body = http.post("/search", data={"id": "0", "k": "6", "group_by": "product_id",
                                          "filter": "brand=X AND color=red OR color=green"}).json()
        products = [r["metadata"]["product_id"] for r in body["results"]]
        assert len(products) == 6 == len(set(products))
        assert all(r["metadata"]["brand"] == "X" for r in body["results"])
        assert body["query"]["filter"] == "brand=X AND color=red OR color=green"
        none = http.post("/search", data={"id": "0", "filter": "brand=Z"}).json()
        assert none["results"] == [] and none["filter"]["matching_items"] == 0
        for form, words in (({"filter": "brand"}, "cannot read"), ({"filter": "size=M"}, "no column 'size'"),
                            ({"group_by": "sku"}, "cannot group by 'sku'")):
            response = http.post("/search", data={"id": "0", **form})
            assert response.status_code == 422 and words in response.json()["detail"]


@pytest.mark.parametrize("factory, knob", [("HNSW8", {"efSearch": 1}), ("IVF8,Flat", {"nprobe": 1})])
def test_filters_and_grouping_still_fill_k_on_approximate_indexes(shop, tmp_path, factory, knob, monkeypatch):
    import shutil

    from index.catalog.operations import rebuild_catalog

    folder = tmp_path / "catalog"
    shutil.copytree(shop["folder"], folder)
    rebuild_catalog(folder, index=factory, progress=False)
    approximate = SearchService(folder, shop["model"])
    approximate.catalog.choice.params.update(knob)  # the weakest search: the filter must still fill k
    monkeypatch.setattr("index.search.algorithm.EXACT_POOL_FLOATS", 0)  # the index path, not an exact scan of the pool
    found = approximate.search(CatalogItem(0), k=6, metadata_filter="color=blue AND brand=Y",
                               group_by="product_id").frame
    metadata = approximate.catalog.metadata
    mask = (metadata["color"] == "blue") & (metadata["brand"] == "Y")
    products = metadata.loc[mask, "product_id"].nunique()
    assert len(found) == min(6, products) and found["product_id"].is_unique
    assert set(found["color"]) == {"blue"} and set(found["brand"]) == {"Y"}


def test_a_photos_own_catalog_copy_hides_no_close_variant(fashion_shop):
    """The shopper's copy of a catalog photo (enlarged, re-encoded) scores below the same-picture
    score, but above the hiding threshold: it is shown first and hides nothing, so close variants
    are compared with each other, not with it."""
    import io

    service = SearchService(fashion_shop.catalog, fashion_shop.model)
    item = service.catalog.metadata.iloc[0]
    with Image.open(item["image_path"]) as image:
        buffer = io.BytesIO()
        image.convert("RGB").resize((280, 280), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=85)
    threshold = 0.95
    found = service.search(buffer.getvalue(), k=10, hide_duplicates_above=threshold)
    frame, hidden = found.frame, found.hidden
    assert int(frame["id"].iloc[0]) == int(item["id"]) and frame["score"].iloc[0] > threshold
    assert int(item["id"]) not in set(hidden["duplicate_of"])  # what was hidden repeats another result
    assert len(frame) == 10
    rest = frame.iloc[1:][~frame["query_copy"].iloc[1:]]  # the results that may hide others
    vectors = np.asarray(service.catalog.scoring_vectors[service.catalog.rows_of(rest["id"])], np.float32)
    gram = vectors @ vectors.T
    assert (gram[np.triu_indices(len(vectors), 1)] <= threshold + 1e-6).all()  # no two of them alike
    assert found.summary()["hidden_near_duplicates"] == [
        {"id": int(i), "score": float(s), "duplicate_of": int(d)}
        for i, s, d in zip(hidden["id"], hidden["score"], hidden["duplicate_of"])]


def test_several_views_of_a_query_rank_each_item_by_its_best_view(service):
    """A photo and its mirror image search as one query: each item's score is the better of its two
    cosines, and the top k are those of a brute-force ranking by that score (ties in any order)."""
    from index.search.grouping import rank_results

    catalog = service.catalog
    vectors = np.asarray(catalog.embeddings, np.float32)
    ids = catalog.metadata["id"].to_numpy()
    views = vectors[[3, 40]]
    best = np.maximum(vectors @ views[0], vectors @ views[1])
    for pool, allowed in ((None, np.ones(len(ids), bool)),
                          (catalog.category_pool("shoes"), (catalog.metadata["category"] == "shoes").to_numpy())):
        found = rank_results(catalog, views, 12, pool=pool).frame
        assert_exact_top_k(found["id"], found["score"], ids, best, allowed, 12)


def test_a_photo_facing_the_other_way_finds_the_catalog_photo_it_mirrors(shop, service, capsys):
    from PIL import ImageOps

    item = service.catalog.metadata.iloc[10]
    with Image.open(item["image_path"]) as image:
        mirrored = ImageOps.mirror(image.convert("RGB"))
    either = service.search(mirrored, k=5).frame
    as_it_is = service.search(mirrored, k=5, mirror=False).frame
    assert int(either["id"].iloc[0]) == int(item["id"]) and either["score"].iloc[0] > 0.99
    own = as_it_is.loc[as_it_is["id"] == int(item["id"]), "score"]
    assert own.empty or float(own.iloc[0]) < either["score"].iloc[0] - 0.01

    path = shop["folder"].parent / "mirrored.png"
    mirrored.save(path)
    common = ["search", "--catalog", str(shop["folder"]), "--model", str(shop["model"]), "--image", str(path),
              "--k", "5", "--json"]
    assert cli(common) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["results"]] == either["id"].tolist()
    assert cli([*common, "--no-mirror"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["results"]] == as_it_is["id"].tolist()


def test_the_api_searches_either_facing_unless_told_not_to(shop, service):
    pytest.importorskip("fastapi", reason="optional extra: pip install -r requirements-distributed.txt")
    from fastapi.testclient import TestClient
    from PIL import ImageOps

    from app import api

    item = service.catalog.metadata.iloc[10]
    with Image.open(item["image_path"]) as image:
        buffer = io.BytesIO()
        ImageOps.mirror(image.convert("RGB")).save(buffer, "PNG")
    with TestClient(api.create_app(shop["folder"], shop["model"])) as http:
        def top(**form):
            response = http.post("/search", files={"image": ("q.png", buffer.getvalue(), "image/png")},
                                 data={"k": "5", **form})
            assert response.status_code == 200, response.text
            assert response.json()["query"]["mirror"] is (form.get("mirror") != "false")  # echoed as understood
            return [r["id"] for r in response.json()["results"]]
        assert top()[0] == int(item["id"])
        assert top(mirror="false") == service.search(buffer.getvalue(), k=5, mirror=False).frame["id"].tolist()


def test_the_api_returns_the_things_found_in_a_photo_when_asked(shop):
    pytest.importorskip("fastapi", reason="optional extra: pip install -r requirements-distributed.txt")
    from fastapi.testclient import TestClient

    from app import api
    from index.search.service import object_regions

    pixels = np.full((300, 400, 3), 245, np.uint8)
    pixels[80:230, 140:270] = (40, 40, 60)  # the thing most likely the product
    pixels[120:200, 20:80] = (150, 30, 30)  # another thing beside it
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    with TestClient(api.create_app(shop["folder"], shop["model"])) as http:
        def post(**form):
            response = http.post("/search", files={"image": ("table.png", buffer.getvalue(), "image/png")},
                                 data={"k": "3", **form})
            assert response.status_code == 200, response.text
            return response.json()
        assert "objects" not in post()
        things = post(objects="true")["objects"]
        assert [tuple(t) for t in things] == object_regions(Image.fromarray(pixels)) and len(things) == 2
        second = post(box=",".join(map(str, things[1])))  # a thing offered is a query region as it is
        assert second["query"]["box"] == things[1]


def test_the_cli_names_the_other_things_in_a_photo_as_boxes_to_search(shop, capsys):
    from index.search.service import object_regions

    pixels = np.full((300, 400, 3), 245, np.uint8)
    pixels[80:230, 140:270] = (40, 40, 60)  # the thing most likely the product
    pixels[120:200, 20:80] = (150, 30, 30)  # another thing beside it
    path = shop["folder"].parent / "table.png"
    Image.fromarray(pixels).save(path)
    other = object_regions(Image.fromarray(pixels))[1]
    common = ["search", "--catalog", str(shop["folder"]), "--model", str(shop["model"]), "--image", str(path)]
    assert cli(common) == 0
    said = capsys.readouterr().out
    assert f"other things in the photo (search one with --box): {','.join(map(str, other))}" in said
    assert cli([*common, "--box", ",".join(map(str, other))]) == 0
    assert "other things in the photo" not in capsys.readouterr().out  # the shopper chose
