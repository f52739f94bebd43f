"""Catalogs of projected vectors (--project-dims): the projection stored with the catalog, fingerprinted,
carried through every write, and every query (photos, new items) projected by the same matrix."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedder.embed import Embedder
from index.__main__ import main as index_main
from index.catalog.add import add_to_catalog
from index.catalog.edit import edit_catalog
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog, rebuild_catalog, remove_from_catalog, restore_catalog
from index.catalog.projection import PROJECTION_FILE, Projection, fit_pca, projecting_embedder
from index.catalog.store import VERSIONS_DIR, CatalogError, read_info
from index.search.service import SearchService
from tests.support.models import random_model

CATEGORIES = ["tops", "shoes", "bags"]
DIMS = 6


def product_photo(c: int, p: int, view: int) -> Image.Image:
    rng = np.random.default_rng([c, p, view])
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 3 + 3 * c:25] = np.random.default_rng([c, p]).integers(60, 255, (20, 22 - 3 * c))
    pixels[4:24, 3 + 3 * c:25] = np.clip(pixels[4:24, 3 + 3 * c:25] + rng.integers(-15, 16, (20, 22 - 3 * c)), 0, 255)
    return Image.fromarray(pixels, mode="L")


def write_shop(root, products: int, first: int = 0, name: str = "manifest.csv"):
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, category in enumerate(CATEGORIES):
        for p in range(first, first + products):
            for view in range(2):
                path = images / f"{category}-{p}-{view}.png"
                product_photo(c, p, view).save(path)
                rows.append({"path": f"images/{path.name}", "category": category, "product_id": f"{category}-{p}"})
    manifest = root / name
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return (random_model(folder / "a.pt", CATEGORIES, seed=0, grid=2),
            random_model(folder / "b.pt", CATEGORIES, seed=1, grid=2))


@pytest.fixture
def shop(tmp_path, models):
    manifest = write_shop(tmp_path / "shop", products=4)
    folder = tmp_path / "catalog"
    build_catalog(manifest, models[0], folder, progress=False, project_dims=DIMS)
    return manifest, folder


def raw_vectors(model, paths) -> np.ndarray:
    return Embedder.from_checkpoint(model).embed_images([Image.open(p).convert("RGB") for p in paths])


def version_folder(folder):
    return folder / VERSIONS_DIR / read_info(folder).version


def test_build_stores_projected_vectors_and_the_projection_that_made_them(shop, models):
    _, folder = shop
    info = read_info(folder)
    catalog = Catalog.load(folder)
    raw = raw_vectors(models[0], catalog.metadata["image_path"])
    assert info.feature_dim == DIMS and catalog.embeddings.shape == (24, DIMS)
    assert info.projection == {"method": "pca", "whitening": False, "input_dim": raw.shape[1], "dims": DIMS,
                               "file": PROJECTION_FILE, "fingerprint": catalog.projection.fingerprint()}
    assert (version_folder(folder) / PROJECTION_FILE).is_file()
    # the stored projection is the PCA of the catalog's own vectors, and the stored vectors went through it
    expected = Projection.fit(raw, DIMS)
    assert np.allclose(catalog.projection.basis, expected.basis, atol=1e-5)
    assert np.allclose(catalog.embeddings, catalog.projection.apply(raw), atol=1e-5)
    assert np.allclose(np.linalg.norm(catalog.embeddings, axis=1), 1, atol=1e-5)


def test_a_catalog_without_the_option_is_written_as_before(tmp_path, models):
    manifest = write_shop(tmp_path / "shop", products=2)
    build_catalog(manifest, models[0], tmp_path / "plain", progress=False)
    stored = json.loads((tmp_path / "plain" / "catalog.json").read_text())
    assert "projection" not in stored and not (version_folder(tmp_path / "plain") / PROJECTION_FILE).exists()
    assert Catalog.load(tmp_path / "plain").projection is None


def test_photo_queries_go_through_the_catalogs_projection(shop, models):
    _, folder = shop
    service = SearchService(folder, models[0])
    catalog = service.catalog
    path = catalog.metadata["image_path"].iloc[5]
    found = service.search(path, k=3)
    assert int(found.frame["id"].iloc[0]) == int(catalog.ids[5]) and found.frame["score"].iloc[0] > 0.999
    raw = raw_vectors(models[0], [path])
    assert np.allclose(service.embed(path), catalog.projection.apply(raw)[0], atol=1e-5)
    # the model's query-confidence fit read full-size cosines: a projected catalog uses its own calibration
    assert service.query_confidence is None
    # a service made from parts projects too, once
    again = SearchService.from_parts(catalog, service.embedder, service.categories)
    assert again.embedder is service.embedder


def test_added_items_are_projected_by_the_stored_matrix_not_a_new_fit(shop, models, tmp_path):
    manifest, folder = shop
    before = Catalog.load(folder)
    more = write_shop(manifest.parent, products=2, first=4, name="more.csv")
    report = add_to_catalog(folder, more, progress=False)
    assert report.added == 12
    after = Catalog.load(folder)
    assert after.info.projection == before.info.projection
    assert np.array_equal(after.projection.basis, before.projection.basis)
    new = after.metadata["id"].to_numpy() >= 24
    raw = raw_vectors(models[0], after.metadata["image_path"][new])
    assert np.allclose(np.asarray(after.embeddings)[new], before.projection.apply(raw), atol=1e-5)


def test_remove_edit_restore_and_rebuild_keep_the_projection(shop, models):
    _, folder = shop
    fingerprint = read_info(folder).projection["fingerprint"]
    remove_from_catalog(folder, ids=[0], progress=False)
    edit_catalog(folder, ids=[1], values={"category": "bags"})
    rebuild_catalog(folder, index="HNSW16", progress=False)
    for step in ("removed, edited, re-indexed", "restored"):
        catalog = Catalog.load(folder)
        assert catalog.info.projection["fingerprint"] == fingerprint == catalog.projection.fingerprint()
        assert (version_folder(folder) / PROJECTION_FILE).is_file(), step
        restore_catalog(folder)


def test_reembedding_with_another_model_fits_the_projection_again(shop, models):
    _, folder = shop
    old = read_info(folder).projection
    rebuild_catalog(folder, model=models[1], progress=False)
    catalog = Catalog.load(folder)
    assert catalog.info.projection["dims"] == DIMS and catalog.info.projection["fingerprint"] != old["fingerprint"]
    raw = raw_vectors(models[1], catalog.metadata["image_path"])
    assert np.allclose(catalog.embeddings, Projection.fit(raw, DIMS).apply(raw), atol=1e-5)
    assert SearchService(folder, models[1]).search(catalog.metadata["image_path"].iloc[0], k=1).frame["id"].iloc[0] == \
        catalog.ids[0]


def test_a_changed_or_missing_projection_file_is_refused(shop):
    _, folder = shop
    stored = version_folder(folder) / PROJECTION_FILE
    projection = Catalog.load(folder).projection
    Projection(projection.mean, projection.basis * np.float32(1.01)).save(stored.parent)
    with pytest.raises(CatalogError, match="not the one catalog.json records"):
        Catalog.load(folder)
    version = read_info(folder).version
    with pytest.raises(CatalogError, match="not the one catalog.json records"):  # nor is it carried into a new version
        remove_from_catalog(folder, ids=[0], progress=False)
    assert read_info(folder).version == version
    stored.unlink()
    with pytest.raises(CatalogError, match="missing"):
        Catalog.load(folder)


def test_sizes_the_vectors_cannot_give_are_refused(tmp_path, models):
    manifest = write_shop(tmp_path / "shop", products=1)
    dim = Embedder.from_checkpoint(models[0]).feature_dim
    with pytest.raises(CatalogError, match="--project-dims must be between 1 and"):
        build_catalog(manifest, models[0], tmp_path / "c", progress=False, project_dims=dim)
    assert not (tmp_path / "c" / "catalog.json").exists()


def test_the_cli_builds_a_projected_catalog_and_says_so(tmp_path, models, capsys):
    manifest = write_shop(tmp_path / "shop", products=2)
    out = tmp_path / "cli"
    assert index_main(["-q", "build", "--manifest", str(manifest), "--model", str(models[0]), "--out", str(out),
                       "--project-dims", "4"]) == 0
    assert read_info(out).feature_dim == 4
    capsys.readouterr()
    assert index_main(["info", "--catalog", str(out)]) == 0
    assert "projected to 4 dims" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        index_main(["build", "--manifest", str(manifest), "--model", str(models[0]), "--out", str(tmp_path / "x"),
                    "--project-dims", "0"])


def test_pca_is_the_same_on_every_run_and_a_projecting_embedder_keeps_the_raw_features(models):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 12)) * np.linspace(3, 0.2, 12)).astype(np.float32)
    first, second = fit_pca(x), fit_pca(x.copy())
    assert np.array_equal(first[1], second[1])
    assert Projection.fit(x, 3).fingerprint() == Projection.fit(x.copy(), 3).fingerprint()
    embedder = Embedder.from_checkpoint(models[0])
    projection = Projection.fit(rng.normal(size=(50, embedder.feature_dim)).astype(np.float32), 3)
    projected = projecting_embedder(embedder, projection)
    assert projected.feature_dim == 3 and projected.unprojected is embedder and embedder.feature_dim != 3
    assert projecting_embedder(projected, projection) is projected
    batch = np.full((2, 1, 28, 28), 128, np.uint8)
    import torch

    features = embedder.features_uint8(torch.from_numpy(batch))
    assert np.array_equal(projected.features_uint8(torch.from_numpy(batch)).numpy(), features.numpy())
    assert np.allclose(projected.embed_uint8(torch.from_numpy(batch)), projection.apply(embedder.vectors(features)))


def test_shopper_recall_runs_on_a_projected_catalog_through_its_projection(shop, models):
    from training.shopper_recall import shopper_recall

    _, folder = shop
    catalog = Catalog.load(folder)
    embedder = projecting_embedder(Embedder.from_checkpoint(models[0]), catalog.projection)
    result = shopper_recall(catalog, embedder, items=6, seed=0)
    assert int(result.table.loc["catalog photos", "queries"]) == 6 and len(result.per_photo) == 12


def test_ensure_keeps_the_size_it_was_asked_for_and_refuses_another(tmp_path, models, capsys):
    manifest = write_shop(tmp_path / "shop", products=2)
    out = tmp_path / "ensured"
    args = ["-q", "ensure", "--manifest", str(manifest), "--model", str(models[0]), "--out", str(out)]
    assert index_main(args + ["--project-dims", "4"]) == 0 and read_info(out).feature_dim == 4
    assert index_main(args + ["--project-dims", "4"]) == 0  # up to date
    assert index_main(args + ["--model", str(models[1]), "--project-dims", "4"]) == 0  # re-embedded, fitted again
    assert read_info(out).feature_dim == 4
    assert read_info(out).model_fingerprint == Embedder.from_checkpoint(models[1]).fingerprint
    capsys.readouterr()
    assert index_main(args) == 2
    assert "holds vectors projected to 4 dims, not the model's own vectors" in capsys.readouterr().err


def test_a_projected_catalog_served_by_milvus_lite_gives_the_faiss_results(shop, models, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    _, folder = shop
    on_faiss = SearchService(folder, models[0])
    on_milvus = SearchService.from_parts(Catalog.load(folder, backend=f"milvus-lite:{tmp_path / 'served.db'}"),
                                         on_faiss.embedder)
    for row in (0, 9, 20):
        photo = on_faiss.catalog.metadata["image_path"].iloc[row]
        expected, found = on_faiss.search(photo, k=5), on_milvus.search(photo, k=5, group_by="product_id")
        assert found.frame["id"].tolist() == on_faiss.search(photo, k=5, group_by="product_id").frame["id"].tolist()
        found = on_milvus.search(photo, k=5)
        assert found.frame["id"].tolist() == expected.frame["id"].tolist()
        assert np.allclose(found.frame["score"], expected.frame["score"], atol=1e-6)
