"""The Milvus backend is optional: --backend is read and checked without pymilvus, the FAISS
default builds and searches without it, and asking for Milvus without it says what to install."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.support.models import random_model
from index.__main__ import main as cli
from index.scale.backends import BackendError, parse_backend
from index.catalog.loaded import Catalog


@pytest.mark.parametrize("text", [None, "", "faiss", "FAISS"])
def test_faiss_is_the_default_backend(text):
    assert parse_backend(text) is None


def test_the_milvus_uris_are_read(tmp_path):
    lite = parse_backend(f"milvus-lite:{tmp_path / 'catalog.db'}")
    assert lite.lite and lite.lite_path == str(tmp_path / "catalog.db")
    server = parse_backend("milvus://milvus.internal:19530/shop_catalog")
    assert not server.lite and server.uri == "http://milvus.internal:19530" and server.collection == "shop_catalog"


@pytest.mark.parametrize("text", ["milvus-lite:catalog", "milvus://host/collection", "milvus://host:19530/",
                                  "milvus://host:19530/bad-name", "milvus://host:99999/c", "qdrant://host:6333/c"])
def test_an_unreadable_backend_is_refused_with_the_forms_there_are(text):
    with pytest.raises(BackendError, match="milvus-lite:|Milvus Lite needs a file ending in .db"):
        parse_backend(text)


@pytest.fixture
def without_pymilvus(monkeypatch):
    """pymilvus and milvus-lite as if not installed (importing them raises ImportError)."""
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    monkeypatch.setitem(sys.modules, "milvus_lite", None)


def test_the_faiss_default_builds_and_searches_without_pymilvus(tmp_path, without_pymilvus, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(12):
        pixels = np.random.default_rng(i).integers(0, 255, (28, 28)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(images / f"{i}.png")
        rows.append({"path": f"images/{i}.png", "category": ["a", "b"][i % 2], "product_id": f"p{i // 2}"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    model = random_model(tmp_path / "model.pt", ["a", "b"])
    assert cli(["-q", "build", "--manifest", str(tmp_path / "manifest.csv"), "--model", str(model),
                "--out", str(tmp_path / "catalog")]) == 0
    assert cli(["search", "--catalog", str(tmp_path / "catalog"), "--model", str(model), "--id", "3", "--k", "3",
                "--category", "b", "--group-by", "product_id"]) == 0
    assert "3 results over 12 items" in capsys.readouterr().out
    assert Catalog.load(tmp_path / "catalog").backend is None

    code = cli(["search", "--catalog", str(tmp_path / "catalog"), "--model", str(model), "--id", "3",
                "--backend", f"milvus-lite:{tmp_path / 'served.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pymilvus" in err and "pip install -r requirements-distributed.txt" in err
