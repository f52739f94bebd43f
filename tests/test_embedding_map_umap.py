"""The embedding map's UMAP view (app.embedding_map.umap_2d, app.map_view): drawn where umap-learn
is installed, and without it a message naming the package with t-SNE drawn instead (AppTest). A
stand-in `umap` module checks the wiring where the package is not installed."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import map_view
from app.embedding_map import map_rows, umap_2d

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


class StandInUMAP:
    """What umap.UMAP is called with; places each point at its first two coordinates."""
    calls: list[dict] = []

    def __init__(self, **settings):
        StandInUMAP.calls.append(settings)

    def fit_transform(self, x):
        return np.asarray(x)[:, :2]


@pytest.fixture
def stand_in_umap(monkeypatch):
    StandInUMAP.calls = []
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=StandInUMAP))
    monkeypatch.setattr(map_view, "umap_available", lambda: True)
    map_view._umap.clear()  # no map placed by another UMAP is reused
    yield
    map_view._umap.clear()  # nor is the stand-in's


def vectors(n: int = 60, d: int = 64) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_umap_places_only_the_points_drawn_seeded(stand_in_umap):
    x = vectors()
    rows = map_rows(len(x), limit=40, seed=0)
    xy = umap_2d(x, rows)
    drawn = np.zeros(len(x), bool)
    drawn[rows] = True
    assert np.isfinite(xy[drawn]).all() and np.isnan(xy[~drawn]).all()
    assert StandInUMAP.calls == [{"n_components": 2, "n_neighbors": 15, "random_state": 0}]


def test_real_umap_keeps_clusters():
    pytest.importorskip("umap", reason="optional: pip install umap-learn")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    x = rng.standard_normal((3, 64))[labels] * 4 + rng.standard_normal((len(labels), 64))
    rows = np.arange(len(labels))
    placed = umap_2d(x.astype(np.float32), rows)
    distances = np.linalg.norm(placed[:, None] - placed[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).mean() > 0.95


def open_umap_view() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/quality.py").run()
    at.radio(key="map_view").set_value("UMAP").run()
    assert not at.exception, at.exception
    return at


def test_without_umap_learn_the_page_says_so_and_draws_tsne(tiny_shop_env, monkeypatch):
    monkeypatch.setattr(map_view, "umap_available", lambda: False)
    at = open_umap_view()
    assert any("UMAP needs the optional package umap-learn" in i.value for i in at.info)
    assert any(c.value.startswith("t-SNE of the") for c in at.caption)


def test_with_umap_the_page_draws_the_umap_view(tiny_shop_env, stand_in_umap):
    at = open_umap_view()
    assert not any("umap-learn" in i.value for i in at.info)
    assert any(c.value.startswith("UMAP of the") for c in at.caption)
    assert StandInUMAP.calls  # drawn by UMAP
