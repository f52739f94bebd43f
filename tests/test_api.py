"""The HTTP search API: photo and id searches as JSON, clear 4xx errors for bad input, an upload cap,
live pick-up of new catalog versions, several processes on one catalog folder, a short load."""
from __future__ import annotations

import io
import re
import shutil
import socket
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="optional extra: pip install -r requirements-distributed.txt")
with warnings.catch_warnings():  # Starlette suggests httpx2 for its TestClient; httpx is what is installed
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402

from app import api  # noqa: E402
from benchmarks import loadtest  # noqa: E402
from benchmarks.loadtest import check_loopback, load_queries, run_load, serve, wait_until_up  # noqa: E402
from tests.support.shops import TINY_SHOP_CATEGORIES  # noqa: E402
from embedder.checkpoint import load_checkpoint  # noqa: E402
from embedder.domain import UnusablePhotoError, check_photo  # noqa: E402
from tests.support.hostile_corpus import hostile_images, make_hostile_corpus  # noqa: E402
from index.catalog.add import add_to_catalog  # noqa: E402
from index.catalog.loaded import Catalog  # noqa: E402
from index.search.service import to_rgb  # noqa: E402
from index.catalog.operations import build_catalog, rebuild_catalog  # noqa: E402
from index.catalog.store import ModelMismatchError, read_info  # noqa: E402

SMALL_CAP = 10_000  # bytes: a cap small enough to exceed cheaply
# How long a server may take to start, answer or show a change before a test calls it broken: failure
# detection only. A loaded machine slows every step alike (a start-up took over 180 s at load 25), so no
# test waits on a margin a slow machine can miss: each stops as soon as what it waits for happens.
FAILURE_WAIT_S = 900.0


@pytest.fixture(scope="module")
def shop(tiny_shop, tmp_path_factory):
    """A private copy of the tiny shop (images, manifest) with its own catalog: tests may change it."""
    root = tmp_path_factory.mktemp("api-shop")
    shutil.copytree(tiny_shop.manifest.parent, root / "shop")
    folder = root / "catalog"
    build_catalog(root / "shop" / "manifest.csv", tiny_shop.model, folder, progress=False)
    return {"root": root, "manifest": root / "shop" / "manifest.csv", "folder": folder, "model": tiny_shop.model,
            "model_b": tiny_shop.model_b, "items": tiny_shop.items}


@pytest.fixture(scope="module")
def client(shop):
    with TestClient(api.create_app(shop["folder"], shop["model"], max_upload_bytes=SMALL_CAP)) as http:
        yield http


def photo(shop, row: int) -> tuple[str, bytes]:
    path = shop["manifest"].parent / shop["items"].iloc[row]["path"]
    return path.name, path.read_bytes()


def id_of(shop, row: int) -> int:
    metadata = Catalog.load(shop["folder"]).metadata
    return int(metadata.loc[metadata["path"] == shop["items"].iloc[row]["path"], "id"].iloc[0])


def test_an_uploaded_catalog_photo_finds_its_own_item_first(client, shop):
    response = client.post("/search", files={"image": photo(shop, 4)}, data={"k": "5"})
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert len(results) == 5 and [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["id"] == id_of(shop, 4) and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert results[0]["path"] == shop["items"].iloc[4]["path"]
    assert results[0]["category"] == shop["items"].iloc[4]["category"]
    assert results[0]["metadata"]["product_id"] == shop["items"].iloc[4]["product_id"]
    assert "image_path" not in results[0]["metadata"] and "content_hash" not in results[0]["metadata"]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert body["catalog_version"] == read_info(shop["folder"])["version"]
    assert set(body["timing_ms"]) >= {"decode_ms", "embed_ms", "search_ms", "total_ms"}
    assert body["timing_ms"]["total_ms"] >= body["timing_ms"]["search_ms"] > 0


def test_search_by_id_leaves_the_item_out_and_the_category_filter_holds(client, shop):
    item = id_of(shop, 0)
    plain = client.post("/search", data={"id": str(item), "k": "6"}).json()["results"]
    assert len(plain) == 6 and item not in [r["id"] for r in plain]
    category = "hats"
    filtered = client.post("/search", data={"id": str(item), "k": "3", "category": category}).json()["results"]
    assert len(filtered) == 3 and {r["category"] for r in filtered} == {category}
    # The same item by photo with the duplicate filter: never two results closer than the threshold.
    hidden = client.post("/search", files={"image": photo(shop, 0)},
                         data={"k": "4", "hide_duplicates_above": "0.5"})
    assert hidden.status_code == 200 and len(hidden.json()["results"]) >= 1


def test_health_and_catalog_describe_the_served_version(client, shop):
    info = read_info(shop["folder"])
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["reload_error"] is None
    assert health["catalog_version"] == info["version"]
    assert health["items"] == len(shop["items"])  # the corrupt manifest row was skipped at build
    assert health["model_fingerprint"] == load_checkpoint(shop["model"])["fingerprint"]
    described = client.get("/catalog").json()
    assert described["categories"] == sorted(TINY_SHOP_CATEGORIES)
    assert described["counts"]["items"] == len(shop["items"]) and described["counts"]["skipped"] == 1
    assert described["index"]["factory"] == info["index"]["factory"] and described["index"]["reason"]


def test_an_upload_over_the_cap_gets_413_whether_its_length_is_declared_or_not(client):
    big = b"\xff\xd8" + bytes(3 * SMALL_CAP)
    declared = client.post("/search", files={"image": ("big.jpg", big)})
    assert declared.status_code == 413 and "too large" in declared.json()["detail"]

    def chunks():  # no Content-Length: the server counts what arrives
        boundary = b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n\r\n"
        yield boundary
        for _ in range(20):
            yield bytes(SMALL_CAP)

    streamed = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413 and "too large" in streamed.json()["detail"]


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is a shopping list, not a photo\n", "not a readable image"),
    (None, "corrupt or truncated"),  # half a JPEG
])
def test_unusable_uploads_get_422_with_the_decoders_reason(client, shop, data, message):
    if data is None:
        jpeg = next(shop["manifest"].parent.glob("images/*.jpg"))
        data = jpeg.read_bytes()[: jpeg.stat().st_size // 2]
    response = client.post("/search", files={"image": ("query.jpg", data)})
    assert response.status_code == 422 and message in response.json()["detail"]


@pytest.mark.parametrize("form, status, message", [
    ({"id": "999999"}, 404, "no item with id 999999"),
    ({"id": "-3"}, 422, "greater than or equal to 0"),
    ({"id": "1", "k": "0"}, 422, "greater than or equal to 1"),
    ({"id": "1", "k": "many"}, 422, "valid integer"),
    ({"id": "1", "category": "socks"}, 422, "no items in category 'socks'"),
    ({"id": "1", "hide_duplicates_above": "2"}, 422, "less than or equal to 1"),
    ({}, 422, "exactly one of"),
])
def test_bad_search_requests_get_a_clear_4xx(client, form, status, message):
    response = client.post("/search", data=form)
    assert response.status_code == status and message in str(response.json()["detail"])


def test_every_hostile_photo_gets_a_result_or_a_clear_4xx(client, tmp_path):
    for hostile in hostile_images(make_hostile_corpus(tmp_path)):
        response = client.post("/search", files={"image": (hostile.name, hostile.path.read_bytes())},
                               data={"k": "3"})
        if hostile.refused:
            assert response.status_code in (413, 415, 422), hostile.name
            assert hostile.error in response.json()["detail"], hostile.name
        elif nothing_to_search_for(hostile.path):  # decodes, but blank, uniform or tiny
            assert response.status_code == 422, hostile.name
            assert re.search("too small|blank or uniform", response.json()["detail"]), hostile.name
        else:
            assert response.status_code == 200, (hostile.name, response.text)
            assert len(response.json()["results"]) == 3, hostile.name


def test_the_wrong_model_is_refused_at_start_up_with_the_reason(shop, capsys):
    with pytest.raises(ModelMismatchError, match="Rebuild the catalog with this model"):
        api.create_app(shop["folder"], shop["model_b"])
    assert api.main(["--catalog", str(shop["folder"]), "--model", str(shop["model_b"])]) == 2
    assert "Rebuild the catalog with this model" in capsys.readouterr().err


def test_a_new_catalog_version_is_picked_up_without_a_failed_request(shop, tmp_path):
    folder = tmp_path / "catalog"
    shutil.copytree(shop["folder"], folder)
    images = shop["manifest"].parent / "images"
    with TestClient(api.create_app(folder, shop["model"], reload_interval=0.05)) as http:
        first = http.get("/health").json()
        statuses, stop = [], threading.Event()

        def keep_searching():
            query = photo(shop, 1)
            while not stop.is_set():
                statuses.append(http.post("/search", data={"id": "0", "k": "3"}).status_code)
                statuses.append(http.post("/search", files={"image": query}, data={"k": "3"}).status_code)

        searcher = threading.Thread(target=keep_searching)
        searcher.start()
        try:
            # New photos (copies under new names: new items, reusing the stored embeddings) ...
            new_rows = []
            for name in sorted(p.name for p in images.glob("hats-*"))[:2]:
                shutil.copy(images / name, images / f"new-{name}")
                new_rows.append({"path": f"images/new-{name}", "category": "hats", "product_id": "hats-new"})
            added = shop["root"] / "shop" / "added.csv"
            pd.DataFrame(new_rows).to_csv(added, index=False)
            add_to_catalog(folder, added, progress=False)
            new_version = read_info(folder)["version"]
            _wait_for(lambda: http.get("/health").json()["catalog_version"] == new_version)
            # ... then a rebuild (same model): another new version.
            rebuild_catalog(folder, progress=False)
            rebuilt = read_info(folder)["version"]
            _wait_for(lambda: http.get("/health").json()["catalog_version"] == rebuilt)
        finally:
            stop.set()
            searcher.join()
        assert len(statuses) > 4 and set(statuses) == {200}
        health = http.get("/health").json()
        assert health["items"] == first["items"] + 2 and first["catalog_version"] != rebuilt
        metadata = Catalog.load(folder).metadata
        new_id = int(metadata.loc[metadata["path"] == new_rows[0]["path"], "id"].iloc[0])
        found = http.post("/search", data={"id": str(new_id), "k": "1"})
        assert found.status_code == 200
        assert http.get("/catalog").json()["counts"]["categories"]["hats"] == first["items"] // 4 + 2

        # A version built with another model cannot be served by this process: it keeps the last
        # good version, and says why.
        rebuild_catalog(folder, model=shop["model_b"], progress=False)
        _wait_for(lambda: http.get("/health").json()["status"] == "stale")
        health = http.get("/health").json()
        assert "Rebuild the catalog with this model" in health["reload_error"]
        assert health["catalog_version"] == rebuilt
        assert http.post("/search", data={"id": str(new_id), "k": "1"}).status_code == 200


def _wait_for(condition, timeout: float = FAILURE_WAIT_S) -> None:
    """Poll until the server shows the change. The bound only turns a reload that never comes into a failure
    instead of a hang: as long as the server's start-up wait, since a loaded machine slows both alike."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _raw_request(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=FAILURE_WAIT_S) as sock:
        sock.sendall(head)
        return sock.recv(4096)


def test_server_processes_on_two_ports_and_uvicorn_workers_serve_one_catalog_folder(shop, monkeypatch):
    """Each step waits for what it checks, never for a time: the loads stop after a number of requests (their
    time bound, the requests' timeout and a queued request's turn are failure detection only), so a loaded
    machine makes the test slower, not failed."""
    monkeypatch.setenv("COINSP_CLIENT_WAIT_S", str(FAILURE_WAIT_S))  # the clients share loopback's turns
    monkeypatch.setattr(loadtest, "REQUEST_TIMEOUT_S", FAILURE_WAIT_S)
    with serve(shop["folder"], shop["model"], workers=2) as (url_a, process_a), \
            serve(shop["folder"], shop["model"]) as (url_b, process_b):
        health_a = wait_until_up(url_a, process_a, timeout=FAILURE_WAIT_S, workers=2)
        health_b = wait_until_up(url_b, process_b, timeout=FAILURE_WAIT_S)
        assert len(set(health_a["worker_pids"]) | {health_b["pid"]}) == 3
        assert health_a["catalog_version"] == health_b["catalog_version"] == read_info(shop["folder"])["version"]
        queries = load_queries(shop["folder"], photos=8)
        for url in (url_a, url_b):
            result = run_load(url, queries, clients=2, seconds=FAILURE_WAIT_S, max_requests=6)
            assert result.requests == 6 and result.error_count == 0
        # A declared body over the cap is refused before any of it is sent.
        answer = _raw_request(url_a, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n"
                                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413")
        # A short load: 8 concurrent clients, a mix of uploads and id searches (each client's first request
        # is drawn from its own seed: four of them upload a photo), no errors.
        result = run_load(url_b, queries, clients=8, seconds=FAILURE_WAIT_S, max_requests=40)
        summary = result.summary()
        assert result.requests == 40 and summary["errors"] == 0, summary["errors_by_kind"]
        assert result.photo_answers > 0
        assert summary["photo_searches_finding_the_item_first"] == 1.0


def nothing_to_search_for(path) -> bool:
    try:
        check_photo(to_rgb(path))
    except UnusablePhotoError:
        return True
    return False


@pytest.mark.parametrize("image, words", [
    (Image.new("RGB", (1, 1), "white"), "too small"),
    (Image.new("RGB", (640, 480), (240, 240, 240)), "blank or uniform"),
])
def test_a_photo_with_nothing_to_search_for_gets_422_with_the_reason(client, image, words):
    response = client.post("/search", files={"image": ("empty.png", encoded(image))})
    assert response.status_code == 422 and words in response.json()["detail"]
    assert response.json()["detail"].startswith("empty.png: ")


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_query_region_spelled_as_in_the_cli_or_as_four_numbers_searches_that_part(client, shop):
    name, data = photo(shop, 4)  # a 64-px catalog photo: the product fills most of it
    whole = client.post("/search", files={"image": (name, data)}, data={"k": "3"}).json()
    assert whole["region"] is None and whole["query"]["box"] is None
    for spelling in ("0,0,64,64", "0 0 64 64", "[0, 0, 64, 64]"):
        boxed = client.post("/search", files={"image": (name, data)}, data={"k": "3", "box": spelling})
        assert boxed.status_code == 200, boxed.text
        assert boxed.json()["region"] == [0, 0, 64, 64] == boxed.json()["query"]["box"]
    corner = client.post("/search", files={"image": (name, data)}, data={"k": "3", "box": "30,30,64,64"}).json()
    assert corner["region"] == [30, 30, 64, 64]
    assert [r["id"] for r in corner["results"]] != [r["id"] for r in whole["results"]]  # another query


@pytest.mark.parametrize("box, message", [
    ("1,2,3", "a box is four numbers x0,y0,x1,y1"),
    ("a,b,c,d", "a box is four numbers x0,y0,x1,y1"),
    ("30,10,20,40", "empty or reversed"),
    ("0,0,500,40", "reaches outside the 64x64 photo"),
    ("0,0,nan,40", "not a finite number"),
])
def test_a_bad_box_gets_422_saying_what_is_wrong(client, shop, box, message):
    response = client.post("/search", files={"image": photo(shop, 4)}, data={"box": box})
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def test_a_box_with_a_catalog_item_is_refused(client):
    response = client.post("/search", data={"id": "1", "box": "0,0,10,10"})
    assert response.status_code == 422 and "not to a catalog item" in response.json()["detail"]


def test_min_score_leaves_out_weaker_results_and_says_how_many(client, shop):
    everything = client.post("/search", data={"id": str(id_of(shop, 0)), "k": "6"}).json()
    scores = [r["score"] for r in everything["results"]]
    # The threshold goes in the widest gap between neighbouring scores, never at a tie: exact copies score
    # the same on one machine and a rounding apart on another.
    gaps = [scores[i] - scores[i + 1] for i in range(len(scores) - 1)]
    keep = gaps.index(max(gaps)) + 1
    assert gaps[keep - 1] > 1e-4  # a hundred times any BLAS's rounding of these cosines
    threshold = (scores[keep - 1] + scores[keep]) / 2
    kept = client.post("/search", data={"id": str(id_of(shop, 0)), "k": "6", "min_score": str(threshold)}).json()
    assert [r["score"] for r in kept["results"]] == pytest.approx(scores[:keep], abs=1e-6)
    assert kept["dropped_below_min_score"] == 6 - keep
    assert kept["query"]["min_score"] == pytest.approx(threshold)
    assert client.post("/search", data={"id": "1", "min_score": "1.5"}).status_code == 422


def test_the_answer_carries_the_calibrated_confidence_and_no_category_without_a_head(client, shop):
    body = client.post("/search", files={"image": photo(shop, 4)}, data={"k": "3"}).json()
    assert body["predicted_category"] is None  # the tiny shop's model has no category head
    confidence = body["confidence"]
    calibration = read_info(shop["folder"]).calibration
    assert confidence["best_score"] == pytest.approx(body["results"][0]["score"])
    assert confidence["weak_below"] == pytest.approx(calibration.weak_below) and confidence["same"] == "product_id"
    assert confidence["weak"] is False  # the photo is in the catalog: score 1


def test_a_shopper_photo_gets_its_predicted_category_and_product_type(fashion_shop):
    from tests.support.photos import shopper_photo
    from index.importers import FASHION_MNIST_CLASSES

    sneaker = fashion_shop.train_images[int(np.flatnonzero(fashion_shop.train_labels == 7)[0])]
    assert FASHION_MNIST_CLASSES[7] == "Sneaker"
    with TestClient(api.create_app(fashion_shop.catalog, fashion_shop.model)) as http:
        body = http.post("/search", files={"image": ("phone.jpg", shopper_photo(sneaker))}, data={"k": "5"}).json()
    assert body["predicted_category"]["name"] == "footwear" and 0.34 < body["predicted_category"]["probability"] <= 1
    assert sum(r["metadata"]["product_id"] == "Sneaker" for r in body["results"]) >= 3
    assert body["confidence"]["weak"] is False


@pytest.mark.parametrize("url", ["http://10.0.0.8:8000", "http://example.com", "ftp://127.0.0.1:21"])
def test_the_load_test_refuses_targets_off_this_machine(url):
    with pytest.raises(ValueError, match="only targets an API on this machine"):
        check_loopback(url)


def test_loopback_targets_are_accepted():
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8000"):
        check_loopback(url)  # does not raise
    assert api.is_loopback("127.0.0.1") and not api.is_loopback("0.0.0.0")
