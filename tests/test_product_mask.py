"""The learned product mask: composites with known masks, the shipped model against them, its
file format, and how the normalisation uses it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedder import domain
from embedder.domain_settings import DomainSettings
from embedder.mask import DEFAULT_MASK_MODEL, MaskNet, ProductMask, default_mask, save_mask
from training.composites import BACKDROPS, TEXTURED, analysis_pair, calibration_items, composite, report_items, training_items


def _item() -> np.ndarray:
    """A 28-px light-on-black shirt-like shape."""
    item = np.zeros((28, 28), np.uint8)
    item[5:24, 8:20] = 200
    item[5:11, 3:25] = 180
    return item


def test_a_composite_knows_its_product_exactly():
    photo = composite(_item(), np.random.default_rng(3), kinds=("plain",))
    w, h = photo.image.size
    assert photo.mask.shape == (h, w) and photo.mask.dtype == bool
    ys, xs = np.nonzero(photo.mask)
    assert photo.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    pixels = np.asarray(photo.image, np.float32)
    # On a plain backdrop the product's pixels differ from the backdrop's.
    assert np.abs(pixels[photo.mask].mean(axis=0) - pixels[~photo.mask].mean(axis=0)).max() > 10


def test_composites_are_reproducible_for_a_seed_and_cover_every_backdrop():
    for kind in BACKDROPS:
        a = composite(_item(), np.random.default_rng(7), kinds=(kind,), long_side=(120, 160))
        b = composite(_item(), np.random.default_rng(7), kinds=(kind,), long_side=(120, 160))
        assert a.backdrop == kind
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.mask, b.mask)
    assert TEXTURED < set(BACKDROPS)


def test_every_kind_of_print_puts_ink_on_part_of_the_product_only():
    from training.composites import PRINTS, print_pattern
    seen = set()
    for seed in range(40):
        kind = PRINTS[int(np.random.default_rng(seed).integers(len(PRINTS)))]  # the print's first draw is its kind
        pattern = print_pattern(np.random.default_rng(seed), 60)
        seen.add(kind)
        assert pattern.shape == (60, 60) and pattern.dtype == np.float32
        assert 0.0 <= pattern.min() and pattern.max() <= 1.0
        assert 0.05 < pattern.mean() < 0.95, (seed, kind)  # some ink, never all of it
    assert seen == set(PRINTS)


def test_training_calibration_and_report_items_never_overlap():
    train, calibrate, report = training_items(1000), calibration_items(1000), report_items(1000)
    assert not set(train) & set(calibrate) and not set(train) & set(report) and not set(calibrate) & set(report)
    assert len(train) + len(calibrate) + len(report) == 1000


def test_an_analysis_pair_is_the_photo_as_the_mask_reads_it():
    pixels, target = analysis_pair(_item(), np.random.default_rng(1), domain.MASK_SIDE)
    assert max(pixels.shape[:2]) == domain.MASK_SIDE and pixels.shape[:2] == target.shape
    assert 0 < target.mean() < 1 and pixels.min() >= 0 and pixels.max() <= 1


def test_some_analysis_pairs_are_the_box_and_context_a_search_with_a_shoppers_box_reads(monkeypatch):
    """With a box, the mask reads the box and a quarter of its size around it: the product then spans
    most of the frame both ways (a box at most 20% looser than the product, 25% context)."""
    import training.composites as composites
    monkeypatch.setattr(composites, "BOX_VIEW_SHARE", 1.0)
    rng = np.random.default_rng(5)
    for _ in range(8):
        pixels, target = analysis_pair(_item(), rng, domain.MASK_SIDE)
        ys, xs = np.nonzero(target >= 0.5)
        assert (xs.max() + 1 - xs.min()) >= 0.4 * target.shape[1] and (ys.max() + 1 - ys.min()) >= 0.4 * target.shape[0]
    monkeypatch.setattr(composites, "BOX_VIEW_SHARE", 0.0)
    spans = []
    for _ in range(40):
        _, target = analysis_pair(_item(), rng, domain.MASK_SIDE)
        ys, xs = np.nonzero(target >= 0.5)
        spans.append(min((xs.max() + 1 - xs.min()) / target.shape[1], (ys.max() + 1 - ys.min()) / target.shape[0]))
    assert min(spans) < 0.4  # whole photos: products of any size, also small in the frame


def test_a_saved_mask_loads_with_its_fingerprint_and_a_changed_one_is_refused(tmp_path):
    torch.manual_seed(0)
    net = MaskNet(width=4)
    fingerprint = save_mask(tmp_path / "mask.pt", net)
    loaded = ProductMask.load(tmp_path / "mask.pt")
    assert loaded.fingerprint == fingerprint
    pixels = np.random.default_rng(0).random((40, 56, 3)).astype(np.float32)
    probability = loaded.probability(pixels)
    assert probability.shape == (40, 56) and ((probability >= 0) & (probability <= 1)).all()
    payload = torch.load(tmp_path / "mask.pt", weights_only=True)
    name = next(iter(payload["state"]))
    payload["state"][name] = payload["state"][name] + 1
    torch.save(payload, tmp_path / "changed.pt")
    with pytest.raises(ValueError, match="changed after it was written"):
        ProductMask.load(tmp_path / "changed.pt")


@pytest.mark.skipif(not DEFAULT_MASK_MODEL.is_file(), reason="the shipped mask model is not in this checkout")
def test_the_shipped_mask_finds_products_on_plain_and_textured_backdrops():
    mask = ProductMask.load(DEFAULT_MASK_MODEL)
    rng = np.random.default_rng(12345)  # composites of items never trained on
    items = [_item(), np.rot90(_item()).copy()]
    for kinds in (("plain", "gradient"), tuple(sorted(TEXTURED))):
        overlaps = []
        for n in range(12):
            pixels, target = analysis_pair(items[n % 2], rng, domain.MASK_SIDE, kinds)
            found, truth = mask.probability(pixels) > 0.5, target >= 0.5
            overlaps.append((found & truth).sum() / max(1, (found | truth).sum()))
        assert np.median(overlaps) > 0.7, (kinds, overlaps)


def test_a_catalog_image_keeps_the_measured_path_whatever_the_mask():
    """Catalog images (28 px) are never read by the learned mask: their views are what the model was trained on."""
    item = Image.fromarray(_item()).convert("RGB")
    rules = domain.normalise(item, size=28, channels=1, polarity="light-on-dark",
                             settings=DomainSettings(product_finder="rules"))
    learned = domain.normalise(item, size=28, channels=1, polarity="light-on-dark",
                               settings=DomainSettings(product_finder="learned"), mask_model=ProductMask(MaskNet(4), "x"))
    assert np.array_equal(rules, learned)


def test_without_a_mask_model_file_the_hand_rules_find_the_product(monkeypatch, tmp_path):
    monkeypatch.setenv("COINSP_MASK_MODEL", str(tmp_path / "missing.pt"))
    with pytest.warns(UserWarning, match="hand rules only"):
        assert default_mask() is None
    photo = composite(_item(), np.random.default_rng(5), kinds=("plain",))
    view = domain.normalise(photo.image, size=28, channels=1, polarity="light-on-dark")
    rules = domain.normalise(photo.image, size=28, channels=1, polarity="light-on-dark",
                             settings=DomainSettings(product_finder="rules"))
    assert np.array_equal(view, rules)
