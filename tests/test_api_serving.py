"""The HTTP API follows the Quality page's "Serve this one" (app.served_catalog): after a switch
written to serving.json by the page's own function the API answers from the new catalog with its
model, undo brings the first back, and a record naming a model that is not its catalog's is
refused while the pair before keeps serving."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="optional extra: pip install -r requirements-distributed.txt")
with warnings.catch_warnings():  # Starlette suggests httpx2 for its TestClient; httpx is what is installed
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402

from app import api  # noqa: E402
from app.serving import SERVING_FILE, switch_serving, undo_serving  # noqa: E402
from app.settings import Settings  # noqa: E402
from index.catalog.store import read_info  # noqa: E402

WAIT_S = 120  # only turns a switch that never loads into a failure


@pytest.fixture
def catalogs(tiny_shop, tmp_path) -> Path:
    """Private copies of the tiny shop's two catalogs (models a and b, the same photos)."""
    return tiny_shop.copied_catalogs(tmp_path / "catalogs")


def answered_from(http) -> tuple[str, str]:
    """(catalog version of a search's answer, model fingerprint /health names)."""
    found = http.post("/search", data={"id": "0", "k": "3"})
    assert found.status_code == 200, found.text
    return found.json()["catalog_version"], http.get("/health").json()["model_fingerprint"]


def followed(http) -> None:
    """Let the API notice serving.json (any request does) and wait for the pair it names to load."""
    http.get("/health")
    assert http.app.state.live.settle(WAIT_S)


def test_the_api_follows_a_switch_and_its_undo_without_a_restart(tiny_shop, catalogs):
    a, b = catalogs / "tiny-a", catalogs / "tiny-b"
    pair_a, pair_b = (read_info(a).version, read_info(a).model_fingerprint), (read_info(b).version,
                                                                              read_info(b).model_fingerprint)
    page = Settings(catalog=a, model=tiny_shop.model, catalogs_dir=catalogs)
    with TestClient(api.create_app(a, tiny_shop.model, reload_interval=0)) as http:
        assert answered_from(http) == pair_a
        switch_serving(page, b, tiny_shop.model_b)  # what the Quality page's "Serve tiny-b" writes
        followed(http)
        assert answered_from(http) == pair_b
        assert http.get("/health").json()["reload_error"] is None
        undo_serving(page)
        followed(http)
        assert answered_from(http) == pair_a


def test_a_record_whose_model_is_not_its_catalogs_is_refused_and_the_pair_before_serves(tiny_shop, catalogs):
    a, b = catalogs / "tiny-a", catalogs / "tiny-b"
    with TestClient(api.create_app(a, tiny_shop.model, reload_interval=0)) as http:
        before = answered_from(http)
        (catalogs / SERVING_FILE).write_text(json.dumps({"catalog": str(b), "model": str(tiny_shop.model)}))
        followed(http)
        assert answered_from(http) == before
        health = http.get("/health").json()
        assert health["status"] == "stale" and "ModelMismatchError" in health["reload_error"]
        assert health["reload_error"].startswith(f"{SERVING_FILE} names tiny-b with tiny-a.pt: not served")


def test_an_api_started_after_a_switch_serves_the_switched_pair(tiny_shop, catalogs):
    a, b = catalogs / "tiny-a", catalogs / "tiny-b"
    switch_serving(Settings(catalog=a, model=tiny_shop.model, catalogs_dir=catalogs), b, tiny_shop.model_b)
    with TestClient(api.create_app(a, tiny_shop.model, reload_interval=0)) as http:
        assert answered_from(http) == (read_info(b).version, read_info(b).model_fingerprint)
