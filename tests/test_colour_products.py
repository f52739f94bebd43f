"""The colour product benchmark (benchmarks/colour_products.py): families of subtly different products,
photographed several ways, test families never seen in training, head settings chosen on validation
families of the training products; and the store's cached views and head settings it measures."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import colour_products as bench
from benchmarks.colour_products_render import Subtlety, draw_product, family_products
from tests.support.models import random_model
from embedder.embed import Embedder
from embedder.preprocess import Preprocessing
from training.cached_features import (EARLIER_AUGMENTATIONS, CachedFeaturesError, ViewSettings, another_photo,
                                      build_cache, load_cache, trunk_views)
from training.head_training import HeadSettings, instance_whitening, whitened_head


def silhouettes(count: int, side: int = 28) -> np.ndarray:
    """Fashion-MNIST-like uint8 shapes: a light block of its own width on black."""
    shapes = np.zeros((count, side, side), np.uint8)
    for i in range(count):
        shapes[i, 4:24, 6 + i % 4:22 - i % 4] = 200
    return shapes


# ---------------------------------------------------------------- the products

def test_products_of_a_family_differ_subtly_and_the_same_seeds_draw_the_same_products():
    products = family_products(7, 3, 4)
    assert products == family_products(7, 3, 4)
    assert len(set(products)) == 4 and {p.item for p in products} == {3}
    subtle = Subtlety()
    hues = np.asarray([p.colour[0] for p in products])
    assert np.ptp(hues) <= 2 * subtle.hue + 1e-9  # close shades of one design
    assert max(p.period for p in products) / min(p.period for p in products) <= (1 + subtle.period) / (1 - subtle.period)
    assert len({p.pattern for p in products}) == 1  # the family's pattern; its scale differs
    others = family_products(8, 3, 4)
    assert {p.colour for p in others}.isdisjoint({p.colour for p in products})
    shape = silhouettes(1)[0]
    first, again = draw_product(products[0], shape), draw_product(products[0], shape)
    assert first.mode == "RGBA" and np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(draw_product(products[1], shape)))


def test_training_and_test_families_never_share_a_silhouette():
    train, test = bench.family_items(100, 50)
    assert len(set(train)) == 100 and len(set(test)) == 50 and not set(train) & set(test)
    again = bench.family_items(100, 50)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


def test_validation_holds_out_whole_training_families():
    families = np.repeat(np.arange(40), 6)
    held = bench.validation_split(families)
    assert np.array_equal(held, bench.validation_split(families))
    for family in range(40):  # a family is held out whole or not at all
        assert len(set(held[families == family])) == 1
    assert held.sum() == round(bench.VALIDATION_SHARE * 40) * 6


def test_each_product_is_photographed_several_ways_and_a_second_run_reuses_the_photos(tmp_path):
    shapes, labels = silhouettes(3), np.asarray([0, 8, 5])  # a top, a bag, a sandal
    paths, products, categories, families = bench.make_photos(tmp_path, np.arange(3), shapes, labels, variants=2,
                                                              photos=3, side=64, seed=1, shopper=False)
    assert len(paths) == 3 * 2 * 3
    assert products[:6] == [0, 0, 0, 1, 1, 1] and products[6] == 100 and families[6] == 1
    assert categories[0] == "tops" and categories[6] == "bags" and categories[-1] == "footwear"
    pictures = [np.asarray(Image.open(p)) for p in paths[:3]]
    assert pictures[0].shape == (64, 64, 3)
    assert not np.array_equal(pictures[0], pictures[1]) and not np.array_equal(pictures[1], pictures[2])
    written = {p: Path(p).stat().st_mtime_ns for p in paths}
    assert bench.make_photos(tmp_path, np.arange(3), shapes, labels, 2, 3, 64, 1, False)[0] == paths
    assert {p: Path(p).stat().st_mtime_ns for p in paths} == written


def test_the_gain_is_measured_per_photo_and_resampled_by_whole_families():
    vectors = np.asarray([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert bench.first_hits(vectors, np.asarray([0, 0, 1, 1])).tolist() == [True] * 4
    assert bench.first_hits(vectors, np.asarray([0, 1, 1, 0])).tolist() == [False] * 4
    families = np.repeat(np.arange(10), 4)
    better, worse = np.ones(40, bool), np.zeros(40, bool)
    worse[::2] = True  # every family: half its photos found before, all after
    assert bench.family_bootstrap(better, worse, families) == (0.5, 0.0)
    mean, sd = bench.family_bootstrap(better, families < 5, families)  # half the families gain everything
    assert abs(mean - 0.5) < 0.05 and sd > 0.05


# ---------------------------------------------------------------- the store's cached views

def test_another_photo_changes_the_backdrop_and_keeps_the_products_colours():
    x = torch.full((16, 3, 32, 32), 0.92)
    x[:, :, 8:24, 8:24] = torch.tensor([0.8, 0.2, 0.2])[:, None, None]  # a red product on a light backdrop
    first = another_photo(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, another_photo(x, torch.Generator().manual_seed(3)))
    assert first.shape == x.shape and 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    centre, corner = first[:, :, 16, 16], first[:, :, 1, 1]
    assert bool((centre[:, 0] > 2 * centre[:, 1]).all()) and bool((centre[:, 0] > 2 * centre[:, 2]).all())
    assert float(corner.std(0).mean()) > 0.05  # backdrops of other tones


def test_view_settings_name_their_augmentations_and_a_cache_of_other_views_is_refused(tmp_path):
    model = random_model(tmp_path / "trunk.pt", ("a", "b"), channels=3, width=8, grid=1,
                         preprocessing=Preprocessing(size=32, channels=3))
    trunk = Embedder.from_checkpoint(model, precision="fp32")
    photos = []
    for i in range(3):
        image = np.full((40, 40, 3), 230, np.uint8)
        image[10:30, 12:28] = (40 * i, 90, 200 - 30 * i)
        photos.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(photos[-1])
    settings = ViewSettings(views=3, augmentations=("photo", "strong"))
    cache = build_cache(photos, trunk, tmp_path / "cache", settings)
    assert cache.features.shape[:2] == (3, 3)
    assert load_cache(tmp_path / "cache", trunk.fingerprint, photos, settings).settings == settings
    with pytest.raises(CachedFeaturesError, match="views"):
        load_cache(tmp_path / "cache", trunk.fingerprint, photos, replace(settings, augmentations=("shopper", "strong")))
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    del meta["settings"]["augmentations"]  # written before the views named their augmentations
    (tmp_path / "cache" / "meta.json").write_text(json.dumps(meta))
    assert load_cache(tmp_path / "cache", trunk.fingerprint, photos).settings.augmentations == EARLIER_AUGMENTATIONS
    with pytest.raises(ValueError, match="augmentations"):
        ViewSettings(augmentations=("sepia",))


def test_head_settings_set_the_coarse_weight_beside_the_instance_loss_only():
    coinsp = HeadSettings(preset="coinsp", coarse_weight=0.2, memory_momentum=0.5).objective(1000)
    assert coinsp.coarse_weight == 0.2 and coinsp.memory_momentum == 0.5 and coinsp.num_proxies == 200
    assert HeadSettings(preset="cos", coarse_weight=0.2).objective(1000).coarse_weight == 1.0
    assert HeadSettings(preset="opt", coarse_weight=0.2).objective(1000).coarse_weight == 0.0


# ---------------------------------------------------------------- the head's instance whitening

def views_of_photos(photos: int = 60, views: int = 3, d: int = 6, seed: int = 0) -> np.ndarray:
    """Unit features: each photo a random point, its views spread mostly along the first two directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(photos, 1, d))
    spread = rng.normal(size=(photos, views, d)) * np.asarray([0.5, 0.3] + [0.02] * (d - 2))
    features = centres + spread
    return (features / np.linalg.norm(features, axis=2, keepdims=True)).astype(np.float16)


def test_instance_whitening_spreads_the_views_of_a_photo_alike_in_every_direction():
    features = views_of_photos()
    centre, whitening = instance_whitening(features, 0.0)
    x = features.astype(np.float64)
    within = (x - x.mean(1, keepdims=True)).reshape(-1, x.shape[2])
    covariance = within.T @ within / len(within)
    w = whitening.double().numpy()
    assert np.allclose(w.T @ covariance @ w, np.eye(x.shape[2]), atol=1e-3)
    assert np.allclose(centre.numpy(), x[:, 0].mean(0), atol=1e-5)
    # A photo is its own group unless groups say otherwise; groups of whole products pool their photos' views.
    same = instance_whitening(features, 0.1, groups=np.arange(len(features)))[1]
    assert torch.allclose(same, instance_whitening(features, 0.1)[1], atol=1e-4)
    products = np.arange(len(features)) // 3
    _, by_product = instance_whitening(features, 0.0, groups=products)
    means = np.stack([x[products == p].reshape(-1, x.shape[2]).mean(0) for p in products])
    pooled = (x - means[:, None]).reshape(-1, x.shape[2])
    assert np.allclose(by_product.double().numpy().T @ (pooled.T @ pooled / len(pooled)) @ by_product.double().numpy(),
                       np.eye(x.shape[2]), atol=1e-3)
    with pytest.raises(ValueError, match="two views"):
        instance_whitening(features[:, :1], 0.1)


def test_an_untrained_whitened_head_gives_the_whitened_feature_and_the_views_of_a_photo_come_closer():
    features = views_of_photos(seed=1)
    head = whitened_head(features, HeadSettings(whiten=0.01, hidden=8))
    t = torch.from_numpy(features[:, 0].astype(np.float32))
    expected = torch.nn.functional.normalize((torch.nn.functional.normalize(t, dim=1) - head.head.centre)
                                             @ head.head.whitening, dim=1)
    assert np.allclose(head.vectors(t), expected.numpy(), atol=1e-5)

    def nearest_is_own_photo(vectors: np.ndarray, queries: np.ndarray) -> float:
        return float(((queries @ vectors.T).argmax(1) == np.arange(len(queries))).mean())
    other = torch.from_numpy(features[:, 1].astype(np.float32))
    plain = torch.nn.functional.normalize
    before = nearest_is_own_photo(plain(t, dim=1).numpy(), plain(other, dim=1).numpy())
    after = nearest_is_own_photo(head.vectors(t), head.vectors(other))
    assert after > before


def test_the_own_backdrop_keeps_the_earlier_cache_names_and_a_grey_backdrop_gets_its_own():
    assert bench.backdrop_tag(None) == ""
    assert bench.train_cache_folder(Path("w"), 10, ViewSettings()).name == "cache-train-10-4-photo"
    grey = bench.train_cache_folder(Path("w"), 10, ViewSettings(), 0.5).name
    assert grey.startswith("cache-train-10-4-photo-backdrop0.5-edge") and grey != bench.train_cache_folder(
        Path("w"), 10, ViewSettings(), 0.8).name
    assert bench.parse_backdrop("none") is None and bench.parse_backdrop("0.5") == 0.5
    # Another input size gets caches of its own (128 px keeps the first caches' names).
    assert bench.train_cache_folder(Path("w"), 10, ViewSettings(), size=128).name == "cache-train-10-4-photo"
    assert bench.train_cache_folder(Path("w"), 10, ViewSettings(), size=160).name == "cache-train-10-4-photo-160px"
    assert bench.cache_tag(0.5, 224).endswith("-224px") and bench.cache_tag(0.5, 224).startswith(bench.backdrop_tag(0.5))


# ---------------------------------------------------------------- shopper photos searched as the product searches

def test_a_shopper_photo_is_searched_by_its_better_view_as_a_search_by_photo_is():
    gallery = np.asarray([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    labels = np.asarray([10, 20, 30])
    photo = np.asarray([[0.6, 0.8, 0], [0, 0, 1]], np.float32)  # the first is nearer product 20 ...
    mirrored = np.asarray([[1, 0, 0], [0, 0.6, 0.8]], np.float32)  # ... its mirror image finds product 10
    found = bench.best_view_recall([photo, mirrored], np.asarray([10, 30]), gallery, labels, ks=(1, 2))
    assert found == {1: 1.0, 2: 1.0}
    assert bench.best_view_recall([photo], np.asarray([10, 30]), gallery, labels, ks=(1, 2)) == {1: 0.5, 2: 1.0}
    tied = np.asarray([[0.6, 0.6, 0]], np.float32)  # a tie keeps the gallery's order
    assert bench.best_view_recall([tied], np.asarray([20]), gallery, labels, ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_the_mirror_view_is_the_trunks_feature_of_the_mirrored_photo(tmp_path):
    model = random_model(tmp_path / "trunk.pt", ("a", "b"), channels=3, width=8, grid=1,
                         preprocessing=Preprocessing(size=32, channels=3))
    trunk = Embedder.from_checkpoint(model, precision="fp32")
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    views = trunk_views(trunk, batch, bench.SEARCH_VIEWS, torch.Generator().manual_seed(0))
    expected = torch.nn.functional.normalize(trunk.features_uint8(batch.flip(-1)), dim=1)
    assert views.shape[1] == 2 and torch.allclose(views[:, 1], expected, atol=1e-5)


def test_the_renderers_record_is_the_photos_product_and_changes_no_photo():
    from benchmarks.colour_products_render import photograph

    drawn = draw_product(family_products(3, 3, 1)[0], silhouettes(1)[0])
    record: dict = {}
    seen = [photograph(drawn, np.random.default_rng(5), shopper=True, side=96, scene_images=[], record=record),
            photograph(drawn, np.random.default_rng(5), shopper=True, side=96, scene_images=[])]
    assert np.array_equal(np.asarray(seen[0]), np.asarray(seen[1]))
    alpha = record["alpha"]
    assert alpha.shape == (96, 96) and 0.03 < float((alpha > 0.5).mean()) < 0.8
    assert isinstance(record["mirrored"], bool) and len(record["light"][3]) == 3


def test_a_photo_stored_as_its_views_mean_is_the_normalised_mean_of_its_views_vectors():
    cached = np.asarray([[[1, 0], [0, 1]], [[3, 4], [3, 4]]], np.float16)  # photos x views x d
    double = lambda t: (2 * t).numpy()  # noqa: E731 - any map of the trunk features
    mean = bench.views_mean(double, cached)
    assert np.allclose(mean, [[2 ** -0.5, 2 ** -0.5], [0.6, 0.8]], atol=1e-6)
