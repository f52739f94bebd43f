"""A store's own photos, learned: import without writing into the store's folder, a catalog name per
store, a CoInsP head trained on cached trunk features, and a switch only when the head wins."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from app import store_catalog
from tests.support.models import random_model
from embedder.embed import Embedder
from embedder.images import decode_image
from embedder.preprocess import Preprocessing
from index.catalog.loaded import Catalog
from index.search.service import SearchService
from training import store as store_training
from training.cached_features import (CachedFeaturesError, ViewSettings, build_cache, cached_or_built, load_cache,
                                      trunk_views)
from training.head_training import HeadSettings

CATEGORIES = ("bags", "hats", "shoes")
PRODUCTS, PHOTOS = 6, 3  # per category, per product
FROZEN_CONFIG = {"epochs": 0, "pretrained": "imagenet", "test": "random init standing in for frozen features"}
QUICK = HeadSettings(epochs=3, batch_size=16, hidden=32, head_dim=16)
APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TOKEN = "a-test-token-for-catalog-managers"


def product_shot(category: int, product: int, photo: int) -> Image.Image:
    """A product (shape by category, colour and stripes by product) photographed a little differently each time."""
    rng = np.random.default_rng(1000 * category + 10 * product + photo)
    image = Image.new("RGB", (64, 64), tuple(int(c) for c in rng.integers(225, 256, 3)))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in np.random.default_rng(100 + 10 * category + product).integers(20, 200, 3))
    s, dx = int(rng.integers(-4, 5)), int(rng.integers(-5, 6))
    box = (14 + dx - s, 12 - s, 50 + dx + s, 52 + s)
    [draw.rectangle, draw.ellipse, lambda b, fill: draw.polygon([(b[0], b[3]), (b[2], b[3]), ((b[0] + b[2]) // 2, b[1])],
                                                                 fill=fill)][category](box, fill=colour)
    for stripe in range(product % 3 + 1):
        y = 24 + 8 * stripe
        draw.line((box[0] + 6, y, box[2] - 6, y), fill=(250, 250, 250), width=2)
    return image


def make_store(folder: Path) -> Path:
    for c, category in enumerate(CATEGORIES):
        for p in range(PRODUCTS):
            (folder / category / f"{category}-{p}").mkdir(parents=True)
            for v in range(PHOTOS):
                product_shot(c, p, v).save(folder / category / f"{category}-{p}" / f"{v}.png")
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    """Every path below `folder` (files, folders, links) and each file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """Stores' work folders and catalogs under tmp_path; a small random colour model stands in for the frozen
    ImageNet checkpoint (what the import copies as each store's own model)."""
    frozen = random_model(tmp_path / "frozen.pt", CATEGORIES, channels=3, width=8, grid=1,
                          preprocessing=Preprocessing(size=32, channels=3), config=FROZEN_CONFIG)
    monkeypatch.setattr(store_catalog, "IMAGENET_MODEL", frozen)
    monkeypatch.setattr(store_catalog, "STORES", tmp_path / "stores")
    monkeypatch.setattr(store_catalog, "CATALOGS", tmp_path / "catalogs")
    return tmp_path


def imported(folder: Path) -> tuple[Path, Path]:
    return store_catalog.prepare(folder, None)


# ---------------------------------------------------------------- cached trunk features

def test_cached_features_are_the_trunks_output_and_another_trunks_cache_is_refused(stores):
    shop = make_store(stores / "shop")
    paths = sorted(str(p) for p in shop.rglob("*.png"))[:12]
    trunk = Embedder.from_checkpoint(store_catalog.IMAGENET_MODEL, precision="fp32")
    settings = ViewSettings(views=3, seed=5)
    cache = build_cache(paths, trunk, stores / "cache", settings)
    batch = torch.stack([torch.from_numpy(trunk.preprocessing.to_uint8(decode_image(p))) for p in paths])
    plain = F.normalize(trunk.features_uint8(batch), dim=1).numpy()
    assert np.abs(cache.features[:, 0].astype(np.float32) - plain).max() < 2e-3  # float16 of unit vectors
    views = trunk_views(trunk, batch, settings, torch.Generator().manual_seed(settings.seed)).numpy()
    assert np.abs(cache.features.astype(np.float32) - views).max() < 2e-3
    assert cache.features.dtype == np.float16 and cache.usable.all()

    again = load_cache(stores / "cache", trunk.fingerprint, paths, settings)
    assert np.array_equal(np.asarray(again.features), cache.features)
    with pytest.raises(CachedFeaturesError, match="refused"):
        load_cache(stores / "cache", "0123456789abcdef", paths, settings)
    with pytest.raises(CachedFeaturesError, match="other photos"):
        load_cache(stores / "cache", trunk.fingerprint, paths[:-1], settings)

    other = random_model(stores / "other.pt", CATEGORIES, seed=7, channels=3, width=8,
                         preprocessing=Preprocessing(size=32, channels=3))
    other_trunk = Embedder.from_checkpoint(other, precision="fp32")
    remade = cached_or_built(paths, other_trunk, stores / "cache", settings)
    assert json.loads((stores / "cache" / "meta.json").read_text())["trunk_fingerprint"] == other_trunk.fingerprint
    assert not np.allclose(np.asarray(remade.features, np.float32), cache.features.astype(np.float32))


# ---------------------------------------------------------------- import: names and the store's folder

def test_two_stores_whose_folders_share_a_name_get_two_catalogs(stores):
    first, second = make_store(stores / "a" / "shop"), stores / "b" / "shop"
    (second / "hats" / "only").mkdir(parents=True)
    product_shot(1, 0, 0).save(second / "hats" / "only" / "0.png")
    product_shot(1, 0, 1).save(second / "hats" / "only" / "1.png")
    catalog_a, _ = imported(first)
    catalog_b, _ = imported(second)
    assert catalog_a != catalog_b and catalog_a.name.startswith("store-shop-") and catalog_b.name.startswith("store-shop-")
    assert len(Catalog.load(catalog_a).metadata) == len(CATEGORIES) * PRODUCTS * PHOTOS
    assert len(Catalog.load(catalog_b).metadata) == 2
    assert imported(first)[0] == catalog_a  # importing a store again finds its catalog


def test_a_failed_import_ends_in_one_line_that_says_what_to_do(stores, capsys):
    shop = make_store(stores / "shop")
    blocked = stores / "not-a-catalog"
    blocked.mkdir()
    (blocked / "notes.txt").write_text("someone else's folder")
    assert store_catalog.main([str(shop), "--out", str(blocked)]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].startswith("error: the catalog") and "run ./run.sh --images again" in said[-1]
    empty = stores / "empty"
    empty.mkdir()
    assert store_catalog.main([str(empty)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "<category>" in last and "Traceback" not in last


# ---------------------------------------------------------------- the store's head

def test_a_head_trains_on_a_tiny_store_and_is_measured_against_the_frozen_model(stores):
    catalog, model = imported(make_store(stores / "shop"))
    report = store_training.train_store(catalog, model=model, settings=QUICK, views=ViewSettings(views=2), switch=False)
    assert report.held_out == "products" and report.held_out_count >= 2 * PHOTOS
    for scores in (report.frozen, report.head):
        assert 0.0 <= scores["R@1"] <= scores["R@5"] <= 1.0 and 0.0 <= scores["category_agreement"] <= 1.0
    status = store_training.read_status(catalog)
    assert status["state"] == "done" and status["result"]["held_out"] == "products" and not report.switched


def scripted_recall(head_r1: float):
    """held_out_recall as if the frozen model scored 0.5 and the head `head_r1` (frozen is asked first)."""
    calls = []

    def fake(plain, shopper, items, held, kind, vectors):
        calls.append(kind)
        return {"R@1": 0.5 if len(calls) % 2 else head_r1, "R@5": 0.9, "category_agreement": 0.8}
    return fake


def test_the_catalog_switches_to_the_head_only_when_it_wins(stores, monkeypatch):
    catalog, model = imported(make_store(stores / "shop"))
    model_bytes, version = model.read_bytes(), Catalog.load(catalog).info.version

    monkeypatch.setattr(store_training, "held_out_recall", scripted_recall(0.4))
    report = store_training.train_store(catalog, model=model, settings=QUICK, views=ViewSettings(views=2))
    assert not report.wins and not report.switched
    assert model.read_bytes() == model_bytes and Catalog.load(catalog).info.version == version

    monkeypatch.setattr(store_training, "held_out_recall", scripted_recall(0.6))
    report = store_training.train_store(catalog, model=model, settings=QUICK, views=ViewSettings(views=2))
    assert report.wins and report.switched
    served = Catalog.load(catalog)
    head = Embedder.from_checkpoint(model, precision="fp32")
    assert served.info.version != version and served.info.model_fingerprint == head.fingerprint
    assert torch.load(model, weights_only=True)["backbone"]["name"] == "trunk_head"
    # Re-embedded from the cache, the catalog holds what the served model gives for each photo.
    paths = [str(served.root / p) for p in served.metadata["path"]]
    direct = head.embed_files(paths).embeddings
    assert np.abs(np.asarray(served.embeddings, np.float32) - direct).max() < 5e-3
    service = SearchService(catalog, model)
    results = service.search(Image.open(paths[0]).convert("RGB"), k=1, mirror=False)
    assert results.frame.iloc[0]["path"] == served.metadata["path"].iloc[0]
    assert results.category is not None  # the head's category head names the photo's category


def test_the_store_folder_is_byte_identical_after_import_training_and_switch(stores, monkeypatch):
    shop = make_store(stores / "shop")
    before = tree_digest(shop)
    catalog, model = imported(shop)
    monkeypatch.setattr(store_training, "held_out_recall", scripted_recall(0.6))
    assert store_training.train_store(catalog, model=model, settings=QUICK, views=ViewSettings(views=2)).switched
    imported(shop)  # served again: the trained head is kept
    assert tree_digest(shop) == before


def test_a_frozen_store_catalog_predicts_categories_from_its_category_means(stores):
    catalog, model = imported(make_store(stores / "shop"))
    served = Catalog.load(catalog)
    payload = torch.load(model, weights_only=True)
    assert payload["categories"] == sorted(CATEGORIES) and payload["coarse_head"]["cosine"]
    hats = np.asarray(served.embeddings, np.float32)[(served.metadata["category"] == "hats").to_numpy()]
    assert np.allclose(payload["coarse_head"]["weight"][sorted(CATEGORIES).index("hats")].numpy(), hats.mean(0), atol=1e-5)
    assert Embedder.from_checkpoint(model).fingerprint == served.info.model_fingerprint  # the weights did not change
    photo = next((stores / "shop" / "hats").rglob("*.png"))
    guess = SearchService(catalog, model).search(Image.open(photo).convert("RGB"), k=1).category
    assert guess is not None and guess.name in CATEGORIES


# ---------------------------------------------------------------- the Catalog page's button

def test_the_catalog_pages_button_trains_the_store_model_in_the_background(stores, monkeypatch):
    from app.roles import SIGNED_IN_KEY, token_digest

    catalog, model = imported(make_store(stores / "shop"))
    monkeypatch.setenv("COINSP_CATALOG", str(catalog))
    monkeypatch.setenv("COINSP_MODEL", str(model))
    monkeypatch.setenv("COINSP_DATA_ROOT", str(stores))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job's process: one thread is plenty for this store
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/catalog.py").run()
    assert "store_train" not in {b.key for b in at.button}  # behind the management token
    at.session_state[SIGNED_IN_KEY] = token_digest(TOKEN)
    at.run()
    assert any("python -m training.store --catalog" in c.value for c in at.code)
    at.button(key="store_train").click().run()
    assert not at.exception, at.exception
    job = store_training.BACKGROUND[str(store_training.work_folder(catalog))]
    assert job.wait(timeout=300) == 0, (store_training.work_folder(catalog) / "log.txt").read_text()
    at.run()
    said = " ".join(m.value for m in [*at.success, *at.info])
    assert "held-out products" in said and ("now serves it" in said or "frozen model stays" in said)
