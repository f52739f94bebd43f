"""Exporting a catalog: Parquet keeps ids, vectors and metadata exactly; Qdrant answers like our exact index."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from embedder.backbones import build_backbone
from embedder.checkpoint import save_checkpoint
from embedder.preprocess import Preprocessing
from index.__main__ import main as index_cli
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog, remove_from_catalog
from index.catalog.store import CatalogError, read_info
from index.scale.export import VECTOR_COLUMN, export_parquet, export_qdrant, qdrant_client, read_parquet_export

pytest.importorskip("qdrant_client", reason="optional extra: pip install -r requirements-distributed.txt")
from qdrant_client import models  # noqa: E402

CATEGORIES = ["tops", "shoes", "bags"]
PER_CATEGORY = 8


@pytest.fixture(scope="module")
def catalog_folder(tmp_path_factory):
    """24 distinct random photos in 3 categories, an exact (Flat) catalog, a note column with gaps."""
    root = tmp_path_factory.mktemp("export")
    images = root / "shop" / "images"
    images.mkdir(parents=True)
    rows = []
    for c, category in enumerate(CATEGORIES):
        for p in range(PER_CATEGORY):
            pixels = np.random.default_rng(10 * c + p).integers(0, 255, (28, 28)).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(images / f"{category}-{p}.png")
            rows.append({"path": f"images/{category}-{p}.png", "category": category, "product_id": f"{category}-{p}",
                         "note": "sale" if p % 3 == 0 else None})
    manifest = root / "shop" / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    torch.manual_seed(0)
    spec = {"name": "smallcnn", "kwargs": {"in_channels": 1, "width": 8, "grid": 2}}
    model = root / "model.pt"
    save_checkpoint(model, backbone_spec=spec, backbone=build_backbone(spec["name"], **spec["kwargs"]),
                            preprocessing=Preprocessing(size=28, channels=1, mean=(0.286,), std=(0.353,)),
                            categories=CATEGORIES, config={})
    folder = root / "catalog"
    build_catalog(manifest, model, folder, progress=False)
    return folder


def test_parquet_round_trips_ids_vectors_and_metadata_in_row_groups(catalog_folder, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "items.parquet"
    report = export_parquet(catalog_folder, out, rows_per_group=5, progress=False)
    catalog = Catalog.load(catalog_folder)
    assert report.items == len(catalog) == 24
    assert pq.ParquetFile(out).metadata.num_row_groups == math.ceil(len(catalog) / 5)
    metadata, vectors, provenance = read_parquet_export(out)
    assert vectors.dtype == np.float32 and np.array_equal(vectors, np.asarray(catalog.embeddings))
    assert metadata["id"].tolist() == catalog.ids.tolist()
    expected = catalog.metadata[["path", "category", "product_id", "note"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(metadata[["path", "category", "product_id", "note"]], expected, check_dtype=False)
    assert "content_hash" not in metadata and "image_path" not in metadata and VECTOR_COLUMN not in metadata
    assert provenance == {"catalog_version": read_info(catalog_folder)["version"],
                          "model_fingerprint": catalog.fingerprint, "feature_dim": catalog.dim, "items": 24}
    assert not list(tmp_path.glob(".*.tmp"))  # written beside the target, then renamed


@pytest.fixture
def client():
    client = qdrant_client(path=":memory:")
    yield client
    client.close()


def test_qdrant_returns_the_same_top_k_as_the_exact_index(catalog_folder, client):
    catalog = Catalog.load(catalog_folder)
    report = export_qdrant(catalog_folder, client, "shop", batch_size=7, progress=False)
    assert report.items == 24 and client.count("shop").count == 24
    k = 5
    queries = np.asarray(catalog.embeddings)
    ours = catalog.search_vectors(queries, k)
    for query, our_ids, our_scores in zip(queries, ours.ids, ours.scores):
        points = client.query_points("shop", query=query.tolist(), limit=k).points
        assert [p.id for p in points] == our_ids.tolist()
        assert [p.score for p in points] == pytest.approx(our_scores.tolist(), abs=1e-4)
    point = client.retrieve("shop", [int(catalog.ids[0])])[0]
    row = catalog.metadata.iloc[0]
    assert point.payload == {"path": row["path"], "category": row["category"], "product_id": row["product_id"],
                             "note": "sale"}  # a missing note is left out, not stored as NaN
    assert "note" not in client.retrieve("shop", [int(catalog.ids[1])])[0].payload


def test_exporting_again_brings_the_collection_up_to_date(catalog_folder, tmp_path, request):
    import shutil

    folder = tmp_path / "catalog"
    shutil.copytree(catalog_folder, folder)
    client = qdrant_client(path=tmp_path / "qdrant")  # embedded, kept on disk
    request.addfinalizer(client.close)
    export_qdrant(folder, client, "shop", progress=False)
    removed = int(Catalog.load(folder).ids[3])
    remove_from_catalog(folder, ids=[removed], progress=False)
    report = export_qdrant(folder, client, "shop", progress=False)
    assert report.deleted == 1 and client.count("shop").count == 23
    assert client.retrieve("shop", [removed]) == []
    client.create_collection("other", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE))
    with pytest.raises(CatalogError, match="holds other vectors"):
        export_qdrant(folder, client, "other", progress=False)
    assert export_qdrant(folder, client, "other", recreate=True, progress=False).items == 23


def test_the_export_command_writes_both_and_refuses_without_a_target(catalog_folder, tmp_path, capsys):
    out, qdrant = tmp_path / "items.parquet", tmp_path / "qdrant"
    assert index_cli(["-q", "export", "--catalog", str(catalog_folder), "--parquet", str(out),
                      "--qdrant-path", str(qdrant), "--collection", "shop"]) == 0
    printed = capsys.readouterr().out
    assert "exported 24 items" in printed and "Qdrant collection 'shop'" in printed
    assert len(read_parquet_export(out)[0]) == 24
    client = qdrant_client(path=qdrant)
    assert client.count("shop").count == 24
    client.close()
    assert index_cli(["export", "--catalog", str(catalog_folder)]) == 2
    assert "--parquet" in capsys.readouterr().err
