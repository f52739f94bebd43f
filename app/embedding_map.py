"""The catalog in two dimensions for the Quality page: a PCA projection of the stored vectors, or a
t-SNE map of the points drawn, and an Altair scatter (hover: thumbnail; click: the item and its
neighbours; drag a box: the items inside it, which a catalog manager can fix or select in the
Catalog page's browser).

PCA (numpy: eigenvectors of the d x d covariance, accumulated in row blocks) is deterministic;
measured on one thread at 2048-d: 5.4 s at 10^4 items, 30.5 s at 10^5
(reports/hygiene/embedding-map.md), computed once per catalog version (cached). t-SNE
(scikit-learn, Barnes-Hut, seeded, started from PCA) runs on the points drawn only (at most
MAP_POINTS, first reduced to TSNE_DIMS principal axes): neighbourhoods kept, distances between
clusters not. UMAP (umap-learn, an optional package: `pip install umap-learn`, not in requirements.txt
for its numba/llvmlite weight) places the same points the same way when it is installed
(`umap_available`). Vega-Lite draws no free-hand lasso: the selection is a box.
"""
from __future__ import annotations

import base64
import importlib.util
import io

import altair as alt
import numpy as np
import pandas as pd

from embedder.images import ImageError, decode_image

ROW_BLOCK = 16_384
MAP_POINTS = 3_000  # points drawn (each carries its thumbnail); the rest of a bigger catalog is sampled out
THUMB_PIXELS = 48


def pca_2d(vectors) -> np.ndarray:
    """(n, 2) float32: the vectors projected on their two principal axes (centred)."""
    n, d = vectors.shape
    total = np.zeros(d, np.float64)
    scatter = np.zeros((d, d), np.float64)
    for start in range(0, n, ROW_BLOCK):
        block = np.asarray(vectors[start:start + ROW_BLOCK], np.float64)
        total += block.sum(axis=0)
        scatter += block.T @ block
    mean = total / max(n, 1)
    covariance = scatter / max(n, 1) - np.outer(mean, mean)
    _, axes = np.linalg.eigh(covariance)
    top = axes[:, ::-1][:, :2]
    top *= np.where(top[np.abs(top).argmax(axis=0), [0, 1]] < 0, -1, 1)  # a fixed sign: the map doesn't flip
    out = np.empty((n, 2), np.float32)
    for start in range(0, n, ROW_BLOCK):
        out[start:start + ROW_BLOCK] = (np.asarray(vectors[start:start + ROW_BLOCK], np.float64) - mean) @ top
    return out


def map_rows(n: int, limit: int = MAP_POINTS, seed: int = 0) -> np.ndarray:
    """The rows drawn: all of them up to `limit`, else a seeded sample (ascending)."""
    rows = np.arange(n)
    if n > limit:
        rows = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return rows


TSNE_DIMS = 50  # principal axes the vectors are reduced to before t-SNE
TSNE_PERPLEXITY = 30.0


def tsne_2d(vectors, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) float32: t-SNE coordinates of `rows` (the points drawn), NaN for the other rows."""
    from sklearn.manifold import TSNE

    n = len(vectors)
    x = _principal_axes(vectors, rows)
    out = np.full((n, 2), np.nan, np.float32)
    if len(rows) < 3:
        out[rows] = 0.0
        return out
    perplexity = min(TSNE_PERPLEXITY, (len(rows) - 1) / 3)
    out[rows] = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                     learning_rate="auto").fit_transform(x).astype(np.float32)
    return out


UMAP_NEIGHBOURS = 15
UMAP_PACKAGE = "umap-learn"


def umap_available() -> bool:
    """Whether umap-learn is installed (its module is `umap`)."""
    return importlib.util.find_spec("umap") is not None


def _principal_axes(vectors, rows: np.ndarray) -> np.ndarray:
    """The rows drawn, centred and reduced to TSNE_DIMS principal axes (float64)."""
    x = np.asarray(vectors[rows], np.float64)
    x -= x.mean(axis=0)
    if x.shape[1] > TSNE_DIMS and len(rows) > TSNE_DIMS:
        _, _, axes = np.linalg.svd(x, full_matrices=False)
        x = x @ axes[:TSNE_DIMS].T
    return x


def umap_2d(vectors, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) float32: UMAP coordinates of `rows` (the points drawn, on the same principal axes as
    t-SNE's, seeded), NaN for the other rows; needs umap-learn."""
    import umap

    out = np.full((len(vectors), 2), np.nan, np.float32)
    if len(rows) < 4:
        out[rows] = 0.0
        return out
    x = _principal_axes(vectors, rows)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(UMAP_NEIGHBOURS, len(rows) - 1), random_state=seed)
    out[rows] = np.asarray(reducer.fit_transform(x), np.float32)
    return out


def in_box(points: pd.DataFrame, box: dict) -> list[int]:
    """Ids of the drawn points inside a box selection ({"x": [lo, hi], "y": [lo, hi]})."""
    if not box or "x" not in box or "y" not in box:
        return []
    (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
    inside = points["x"].between(x0, x1) & points["y"].between(y0, y1)
    return [int(i) for i in points.loc[inside, "id"]]


def thumbnail_url(image_path: str, side: int = THUMB_PIXELS) -> str:
    """A small PNG as a data: URL (hover tooltips and image columns), or "" for an unreadable file."""
    try:
        image = decode_image(image_path)
    except ImageError:
        return ""
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def map_points(items: pd.DataFrame, xy: np.ndarray, limit: int = MAP_POINTS, seed: int = 0) -> pd.DataFrame:
    """The rows to draw: every item up to `limit`, else a seeded sample; with x, y and thumbnails."""
    rows = map_rows(len(items), limit, seed)
    shown = items.iloc[rows][[c for c in ("id", "category", "product_id", "image_path") if c in items]].copy()
    shown["x"], shown["y"] = xy[rows, 0], xy[rows, 1]
    shown["image"] = [thumbnail_url(p) for p in shown["image_path"]] if "image_path" in shown else ""
    return shown.drop(columns=[c for c in ("image_path",) if c in shown]).reset_index(drop=True)


def map_chart(points: pd.DataFrame, colour: str, axes: str = "principal axis") -> alt.Chart:
    """A scatter coloured by `colour` (category or product_id); one point can be clicked, and a box
    dragged over several (selection "area", {"x": [lo, hi], "y": [lo, hi]})."""
    pick = alt.selection_point(name="item", fields=["id"], on="click")
    area = alt.selection_interval(name="area", encodings=["x", "y"])
    tooltip = ["image", "id", *(c for c in ("category", "product_id") if c in points)]
    return (alt.Chart(points).mark_circle(size=28, opacity=0.75)
            .encode(x=alt.X("x", axis=alt.Axis(title=f"{axes} 1", labels=False)),
                    y=alt.Y("y", axis=alt.Axis(title=f"{axes} 2", labels=False)),
                    color=alt.Color(f"{colour}:N", sort="ascending", legend=alt.Legend(title=colour)),
                    tooltip=tooltip)
            .add_params(pick, area).properties(height=520))
