"""A catalog served by Milvus (Milvus Lite here, no server): the same results as its FAISS index,
with categories, metadata filters, grouping and near-duplicates; kept in step with the catalog
folder through build, add, remove and restore; filter values that stay text; one-line errors."""
from __future__ import annotations

import shutil
import socket
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from tests.support.models import random_model
from index.__main__ import main as cli  # noqa: E402
from index.scale.backends import ENV_BACKEND  # noqa: E402
from index.catalog.loaded import Catalog  # noqa: E402
from index.scale.milvus import MilvusPool, escape_text, filter_expression, milvus_index_choice  # noqa: E402
from index.catalog.operations import build_catalog  # noqa: E402
from index.search.service import CatalogItem, SearchService  # noqa: E402

COLOURS = ["red", "blue", 'dark "navy"']  # a value holding quotes, as a shop may write it
PRODUCTS, PHOTOS = 24, 4


def _photo(product: int, view: int) -> Image.Image:
    base = np.random.default_rng(product).integers(40, 255, (20, 20))
    noise = np.random.default_rng(1000 * product + view).integers(-25, 25, (20, 20))
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 4:24] = np.clip(base + noise, 0, 255)
    return Image.fromarray(pixels, mode="L")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """24 products x 4 photos, two categories, colour and brand columns; 4 more products' photos
    on disk, in a second manifest, for `add`."""
    root = tmp_path_factory.mktemp("milvus-shop")
    images = root / "shop" / "images"
    images.mkdir(parents=True)
    rows = []
    for p in range(PRODUCTS + 4):
        for v in range(PHOTOS):
            _photo(p, v).save(images / f"p{p}-v{v}.png")
            rows.append({"path": f"images/p{p}-v{v}.png", "category": ["tops", "shoes"][p % 2], "product_id": f"p{p}",
                         "color": COLOURS[p % 3], "brand": ["X", "Y"][(p // 3) % 2]})
    table = pd.DataFrame(rows)
    table.iloc[:PRODUCTS * PHOTOS].to_csv(root / "shop" / "manifest.csv", index=False)
    table.to_csv(root / "shop" / "manifest-more.csv", index=False)
    model = random_model(root / "model.pt", ["tops", "shoes"], grid=2)
    build_catalog(root / "shop" / "manifest.csv", model, root / "catalog", progress=False)
    return {"root": root, "folder": root / "catalog", "model": model, "more": root / "shop" / "manifest-more.csv"}


@pytest.fixture(scope="module")
def services(shop):
    """(FAISS service, Milvus Lite service) over the same catalog folder."""
    faiss_service = SearchService(shop["folder"], shop["model"])
    catalog = Catalog.load(shop["folder"], backend=f"milvus-lite:{shop['root'] / 'served.db'}")
    return faiss_service, SearchService.from_parts(catalog, faiss_service.embedder)


@pytest.fixture
def own_catalog(shop, tmp_path):
    """A copy of the catalog a test may change, with its own Milvus Lite file."""
    folder = tmp_path / "catalog"
    shutil.copytree(shop["folder"], folder)
    return folder, f"milvus-lite:{tmp_path / 'own.db'}"


def _ids(service, query, **options) -> list[int]:
    return service.search(query, k=10, **options).frame["id"].tolist()


@pytest.mark.parametrize("options", [
    {},
    {"category": "shoes"},
    {"metadata_filter": "color=red OR color=blue AND brand=X"},
    {"metadata_filter": 'color="dark \\"navy\\""'},
    {"group_by": "product_id"},
    {"group_by": "product_id", "metadata_filter": "brand=Y", "category": "tops"},
    {"hide_duplicates_above": 0.995},
], ids=["plain", "category", "filter", "quoted-value", "grouped", "grouped-filtered", "near-duplicates"])
def test_milvus_gives_the_results_and_scores_of_the_faiss_index(services, options):
    faiss_service, milvus_service = services
    for item in (0, 17, 50, 93):
        expected = faiss_service.search(CatalogItem(item), k=10, **options)
        found = milvus_service.search(CatalogItem(item), k=10, **options)
        assert found.frame["id"].tolist() == expected.frame["id"].tolist()
        assert np.allclose(found.frame["score"], expected.frame["score"], atol=1e-6)
        assert len(found.frame) == len(expected.frame) > 0
        assert found.hidden["id"].tolist() == expected.hidden["id"].tolist()


def test_a_photo_query_marks_its_own_copy_and_is_calibrated_the_same(shop, services):
    faiss_service, milvus_service = services
    photo = Image.open(shop["root"] / "shop" / "images" / "p5-v2.png").convert("RGB")
    expected, found = faiss_service.search(photo, k=5), milvus_service.search(photo, k=5)
    assert found.frame["id"].tolist() == expected.frame["id"].tolist()
    assert found.frame["query_copy"].tolist() == expected.frame["query_copy"].tolist()
    assert found.confidence == expected.confidence


def test_the_collection_is_laid_out_for_the_catalog(services):
    _, milvus_service = services
    catalog = milvus_service.catalog
    catalog.backend.ensure_synced(catalog)
    from index.scale.milvus import _connect  # noqa: PLC0415 (the test reads the collection itself)

    client = _connect(catalog.backend.spec)
    description = client.describe_collection(catalog.backend.collection)
    fields = {f["name"]: f for f in description["fields"]}
    assert {"id", "vector", "row_hash", "category", "product_id", "color", "brand", "path"} <= set(fields)
    assert fields["category"].get("is_partition_key")
    assert client.get_collection_stats(catalog.backend.collection)["row_count"] == len(catalog)


def test_a_filter_value_is_escaped_text_never_part_of_the_expression():
    injected = 'red") or (id >= 0'
    expression = filter_expression({"color": [injected]}, {"color": "color"})
    assert expression == '(color in ["red\\") or (id >= 0"])'
    assert escape_text('a\\"b') == '"a\\\\\\"b"'


def test_a_filter_value_holding_quotes_and_operators_admits_nothing_it_does_not_name(services):
    faiss_service, milvus_service = services
    for value in ['red" or color != "', "red' || brand == 'X", "blue) or (id >= 0"]:
        flt = f"color='{value}'" if "'" not in value else f'color="{value}"'
        found = milvus_service.search(CatalogItem(0), k=10, metadata_filter=flt)
        assert found.filter_matches == 0 and len(found.frame) == 0
        pool = milvus_service.filter_pool(found.filter).selector
        assert isinstance(pool, MilvusPool)
        hits = milvus_service.catalog.backend.candidates(milvus_service.catalog, np.asarray(
            milvus_service.catalog.vectors_of([0])), 10, pool, 1.0)
        assert (hits < 0).all()  # Milvus itself found nothing: the value was compared, not run


def test_build_add_remove_restore_keep_the_collection_in_step(shop, own_catalog, capsys):
    folder, backend = own_catalog
    served = Catalog.load(folder, backend=backend)
    assert served.backend.sync(served).recreated  # a new collection, filled from the folder
    assert cli(["-q", "add", "--catalog", str(folder), "--manifest", str(shop["more"]), "--backend", backend]) == 0
    assert "16 inserted" in capsys.readouterr().out
    catalog = Catalog.load(folder, backend=backend)
    new_item = int(catalog.ids.max())
    hits = catalog.search_vectors(catalog.vectors_of([new_item]), 3)
    assert hits.ids[0][0] == new_item

    assert cli(["-q", "remove", "--catalog", str(folder), "--ids", str(new_item), "--backend", backend]) == 0
    assert "1 deleted" in capsys.readouterr().out
    catalog = Catalog.load(folder, backend=backend)
    assert new_item not in catalog.search_vectors(catalog.vectors_of([new_item - 1]), 20).ids[0]

    assert cli(["restore", "--catalog", str(folder), "--backend", backend]) == 0
    assert "1 inserted" in capsys.readouterr().out
    catalog = Catalog.load(folder, backend=backend)
    assert catalog.search_vectors(Catalog.load(folder).vectors_of([new_item]), 1).ids[0][0] == new_item


def test_a_collection_behind_the_folder_is_synced_from_it_before_it_is_searched(own_catalog):
    folder, backend = own_catalog
    before = Catalog.load(folder, backend=backend)
    before.backend.sync(before)
    assert cli(["-q", "remove", "--catalog", str(folder), "--ids", "5", "6"]) == 0  # FAISS only: Milvus not told
    after = Catalog.load(folder, backend=backend)
    found = after.search_vectors(before.vectors_of([5]), 10)
    assert 5 not in found.ids[0] and 6 not in found.ids[0]
    assert after.backend.sync(after).in_step


def test_search_evaluate_and_hygiene_from_the_command_line(shop, services, capsys):
    backend = f"milvus-lite:{shop['root'] / 'served.db'}"
    assert cli(["search", "--catalog", str(shop["folder"]), "--model", str(shop["model"]), "--id", "3", "--k", "4",
                "--filter", "brand=X", "--group-by", "product_id", "--json", "--backend", backend]) == 0
    served = capsys.readouterr().out
    assert cli(["search", "--catalog", str(shop["folder"]), "--model", str(shop["model"]), "--id", "3", "--k", "4",
                "--filter", "brand=X", "--group-by", "product_id", "--json"]) == 0
    import json  # noqa: PLC0415

    assert [r["id"] for r in json.loads(served)["results"]] == [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert cli(["evaluate", "--catalog", str(shop["folder"]), "--out", str(shop["root"] / "recall"),
                "--backend", backend]) == 0
    assert "recall@10 of the served index against exact search 1.0000" in capsys.readouterr().out
    assert cli(["hygiene", "--catalog", str(shop["folder"]), "--out", str(shop["root"] / "hygiene"),
                "--backend", backend]) == 0


def test_the_http_api_serves_a_milvus_backed_catalog(shop, services, monkeypatch):
    fastapi = pytest.importorskip("fastapi")  # noqa: F841
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient  # noqa: PLC0415
    from app import api  # noqa: PLC0415

    monkeypatch.setenv(ENV_BACKEND, f"milvus-lite:{shop['root'] / 'served.db'}")
    with TestClient(api.create_app(shop["folder"], shop["model"])) as http:
        assert http.app.state.live.service.catalog.backend is not None
        answer = http.post("/search", data={"id": "10", "k": "5", "filter": "color=blue", "group_by": "product_id"})
    assert answer.status_code == 200, answer.text
    faiss_service, _ = services
    expected = _ids(faiss_service, CatalogItem(10), metadata_filter="color=blue", group_by="product_id")[:5]
    assert [r["id"] for r in answer.json()["results"]] == expected


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_an_unreachable_milvus_is_one_line_naming_its_uri(shop, capsys):
    uri = f"milvus://127.0.0.1:{_closed_port()}/catalog"
    code = cli(["search", "--catalog", str(shop["folder"]), "--model", str(shop["model"]), "--id", "1", "--backend", uri])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and uri in err


def test_the_milvus_index_follows_the_faiss_rule():
    assert milvus_index_choice(10_000, 128).index_type == "FLAT"
    hnsw = milvus_index_choice(100_000, 512)
    assert hnsw.index_type == "HNSW" and "HNSW32" in hnsw.reason and hnsw.search == {"ef": 64}
    assert milvus_index_choice(10_000_000, 512).index_type == "IVF_SQ8"  # Milvus Lite: no PQ
    assert milvus_index_choice(10_000_000, 512, lite=False).index_type == "IVF_PQ"


def test_an_approximate_milvus_index_is_tuned_against_exact_search(shop, own_catalog, monkeypatch):
    import index.scale.milvus as milvus  # noqa: PLC0415

    folder, backend = own_catalog
    hnsw = milvus.MilvusIndexChoice("HNSW", {"M": 8, "efConstruction": 40}, {"ef": 64}, "a graph, for this test")
    monkeypatch.setattr(milvus, "milvus_index_choice", lambda *args, **kwargs: hnsw)
    served = Catalog.load(folder, backend=backend)
    report = served.backend.sync(served)
    assert report.index["index_type"] == "HNSW" and report.index["recall_at_10"] >= 0.95
    assert set(report.index["search"]) == {"ef"}
    expected = Catalog.load(folder).search_vectors(served.vectors_of([7]), 10)
    assert served.search_vectors(served.vectors_of([7]), 10).ids[0].tolist() == expected.ids[0].tolist()


def test_a_collection_not_made_for_a_catalog_is_never_dropped(shop, tmp_path):
    from index.scale.backends import parse_backend  # noqa: PLC0415
    from index.scale.milvus import _connect  # noqa: PLC0415 (the test makes a stranger's collection itself)

    backend = f"milvus-lite:{tmp_path / 'shared.db'}"
    client = _connect(parse_backend(backend))
    client.create_collection("catalog_catalog", dimension=4)
    served = Catalog.load(shop["folder"], backend=backend)
    with pytest.raises(Exception, match="was not made for a catalog"):
        served.search_vectors(served.vectors_of([0]), 3)
    assert client.has_collection("catalog_catalog")


def test_a_version_loaded_before_a_change_does_not_take_the_collection_back(own_catalog):
    folder, backend = own_catalog
    older = Catalog.load(folder, backend=backend)
    assert cli(["-q", "remove", "--catalog", str(folder), "--ids", "9", "--backend", backend]) == 0
    found = older.search_vectors(older.vectors_of([10]), 5)  # the older version searches the newer collection
    assert 9 not in found.ids[0] and len(found.ids[0]) == 5
    current = Catalog.load(folder, backend=backend)
    assert current.backend.sync(current).in_step
