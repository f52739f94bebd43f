"""The embedding map's views and box selection (app.embedding_map): t-SNE of the points drawn, the
items inside a dragged box, and the Quality page drawing the t-SNE view (AppTest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from app.embedding_map import in_box, map_points, map_rows, tsne_2d

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def clustered(n_per: int = 40, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, d)) * 4
    labels = np.repeat(np.arange(3), n_per)
    x = centres[labels] + rng.standard_normal((len(labels), d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_tsne_keeps_clusters_and_places_only_the_points_drawn():
    vectors, labels = clustered()
    rows = map_rows(len(vectors), limit=90, seed=0)
    xy = tsne_2d(vectors, rows)
    drawn = np.zeros(len(vectors), bool)
    drawn[rows] = True
    assert np.isfinite(xy[drawn]).all() and np.isnan(xy[~drawn]).all()
    placed, kinds = xy[rows], labels[rows]
    distances = np.linalg.norm(placed[:, None] - placed[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (kinds[distances.argmin(axis=1)] == kinds).mean() > 0.95  # each point's nearest is of its cluster
    assert np.array_equal(xy, tsne_2d(vectors, rows), equal_nan=True)  # seeded


def test_the_rows_drawn_are_the_map_points_rows():
    items = pd.DataFrame({"id": np.arange(50) * 10, "category": ["a"] * 50})
    points = map_points(items, np.arange(100, dtype=np.float32).reshape(50, 2), limit=20)
    assert list(points["id"]) == list(items["id"].iloc[map_rows(50, 20)])


def test_a_box_selects_the_points_inside_it():
    points = pd.DataFrame({"id": [1, 2, 3, 4], "x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.5, 3.0]})
    assert in_box(points, {"x": [0.5, 2.5], "y": [0.0, 1.0]}) == [2, 3]
    assert in_box(points, {"x": [2.5, 0.5], "y": [1.0, 0.0]}) == [2, 3]  # dragged the other way
    assert in_box(points, {}) == [] and in_box(points, {"x": [0, 1]}) == []


def test_quality_page_draws_the_tsne_view(tiny_shop_env):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/quality.py").run()
    at.radio(key="map_view").set_value("t-SNE").run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert any(c.startswith("t-SNE of the") for c in captions)
    assert any("Drag a box over points" in c for c in captions)
