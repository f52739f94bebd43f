"""Embedding a manifest with Ray Data into Parquet shards (index.scale.ray_embed), on a local 2-CPU Ray."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from embedder.backbones import build_backbone
from embedder.checkpoint import save_checkpoint
from embedder.embed import Embedder
from embedder.preprocess import Preprocessing
from index.scale.ray_embed import INSTALL_HINT, RayMissingError, embed_manifest
from index.scale.shards import SKIPPED_FILE, ShardVectors, read_info, read_metadata

IMAGES = 49
CORRUPT_ROW = 17


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """49 random photos and one corrupt file in a manifest, and a small random-init model."""
    root = tmp_path_factory.mktemp("ray-shop")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        rows.append((f"images/{i}.png", "abc"[i % 3], str(i // 2)))
    (root / "images" / "corrupt.png").write_bytes(b"these bytes are not an image")
    rows.insert(CORRUPT_ROW, ("images/corrupt.png", "a", "99"))
    pd.DataFrame(rows, columns=["path", "category", "product_id"]).to_csv(root / "manifest.csv", index=False)
    torch.manual_seed(0)
    spec = {"name": "smallcnn", "kwargs": {"in_channels": 1, "grid": 1}}
    save_checkpoint(root / "model.pt", backbone_spec=spec, backbone=build_backbone(spec["name"], **spec["kwargs"]),
                    preprocessing=Preprocessing(size=28, channels=1, mean=(0.5,), std=(0.5,)),
                    categories=["a", "b", "c"], config={})
    return root


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    # Ray waits a fixed 30 s for its node to start; on a busy machine that can pass: start it again, a few times,
    # before the tests that need it fail for a reason that is not theirs.
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:  # Ray raises a plain Exception for a node that did not start in time
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(shop, local_ray):
    out = shop / "shards"
    report = embed_manifest(shop / "manifest.csv", shop / "model.pt", out, precision="fp32", batch_size=16,
                            progress=False)
    return out, report


def test_shards_equal_the_single_process_embedder_ordered_by_id(shop, shards):
    out, report = shards
    info = read_info(out)
    metadata, locations = read_metadata(out, info)
    vectors = ShardVectors(out, info["files"], info["feature_dim"], locations)[:]

    manifest = pd.read_csv(shop / "manifest.csv")
    expected = Embedder.from_checkpoint(shop / "model.pt", precision="fp32").embed_files(
        [str(shop / p) for p in manifest["path"]])
    # Ids are the manifest's row numbers; the corrupt row has none.
    assert metadata["id"].tolist() == expected.embedded.tolist()
    assert metadata["path"].tolist() == manifest["path"].drop(CORRUPT_ROW).tolist()
    assert metadata["category"].tolist() == manifest["category"].drop(CORRUPT_ROW).astype(str).tolist()
    # Same decoding, preprocessing and fp32 model; batches differ, so allow float rounding only.
    np.testing.assert_allclose(vectors, expected.embeddings, rtol=0, atol=1e-5)
    assert report.rows == IMAGES + 1 and report.embedded == IMAGES
    assert info["model_fingerprint"] == Embedder.from_checkpoint(shop / "model.pt").fingerprint


def test_corrupt_file_is_listed_with_its_reason_and_the_folder_is_complete(shop, shards):
    out, report = shards
    skipped = pd.read_csv(out / SKIPPED_FILE)
    assert skipped["path"].tolist() == ["images/corrupt.png"]
    assert "not a readable image" in skipped["reason"].iloc[0]
    assert report.skipped == [("images/corrupt.png", skipped["reason"].iloc[0])]
    assert not [p for p in shop.iterdir() if p.name.startswith(".tmp-")]  # staging renamed into place
    assert sum(f["rows"] for f in read_info(out)["files"]) == IMAGES + 1


def test_a_non_empty_output_folder_is_refused(shop, shards):
    out, _ = shards
    with pytest.raises(ValueError, match="not empty"):
        embed_manifest(shop / "manifest.csv", shop / "model.pt", out, progress=False)


def test_without_ray_the_error_names_the_optional_install(shop, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(RayMissingError, match=INSTALL_HINT.replace(".", r"\.")):
        embed_manifest(shop / "manifest.csv", shop / "model.pt", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
