"""Shopper-photo families: each renders a catalog item as a phone photo with the product's exact
mask and box, the same photo for the same seed."""
import functools

import numpy as np
import pytest

from benchmarks.photo_families import (
    FAMILIES, HELD_OUT_FAMILIES, TUNING_FAMILIES, FamilyPhoto, out_of_catalog_photos, render_photo,
)


def _item() -> np.ndarray:
    """A made-up 28x28 item, light on black: a shirt-like block with a faint pocket and sleeves."""
    item = np.zeros((28, 28), np.uint8)
    item[4:25, 8:20] = 200
    item[4:12, 3:8] = 160
    item[4:12, 20:25] = 160
    item[14:18, 10:14] = 60  # faint: a lighter part of the product, still product
    return item


@functools.lru_cache(maxsize=None)
def _photo(family: str, seed: int) -> FamilyPhoto:
    """One rendered photo per (family, seed), shared by the tests that only look at it."""
    return render_photo(family, _item(), np.random.default_rng(seed))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_family_renders_the_same_photo_for_the_same_seed(family):
    first = _photo(family, 0)
    again = render_photo(family, _item(), np.random.default_rng(0))
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert np.array_equal(first.mask, again.mask)
    assert first.box == again.box


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_photo_is_a_phone_sized_rgb_image_whose_box_is_its_masks_extent(family):
    for seed in range(2):
        photo = _photo(family, seed)
        assert isinstance(photo, FamilyPhoto)
        assert photo.family == family and photo.textured == FAMILIES[family].textured
        width, height = photo.image.size
        assert photo.image.mode == "RGB"
        assert 300 <= max(width, height) <= 1400
        assert photo.mask.dtype == bool and photo.mask.shape == (height, width)
        ys, xs = np.nonzero(photo.mask)
        assert photo.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"tilted", "tilted_clutter"}))
def test_the_product_spans_roughly_a_third_to_nine_tenths_of_the_short_side(family):
    for seed in range(2):
        photo = _photo(family, seed)
        x0, y0, x1, y1 = photo.box
        span = max(x1 - x0, y1 - y0) / min(photo.image.size)
        # 35-90% before a rotation of up to 12 degrees widens the extent
        assert 0.33 <= span <= 0.9 * 1.25


def test_tuning_and_held_out_families_are_disjoint_and_each_has_plain_and_textured():
    assert not set(TUNING_FAMILIES) & set(HELD_OUT_FAMILIES)
    assert set(TUNING_FAMILIES) | set(HELD_OUT_FAMILIES) <= set(FAMILIES)
    for split in (TUNING_FAMILIES, HELD_OUT_FAMILIES):
        assert {FAMILIES[name].textured for name in split} == {True, False}


def test_there_are_plain_and_textured_families_in_about_equal_numbers():
    textured = sum(f.textured for f in FAMILIES.values())
    assert len(FAMILIES) >= 12
    assert abs(2 * textured - len(FAMILIES)) <= 2


def test_an_unknown_family_or_an_empty_item_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="unknown photo family"):
        render_photo("moonlight", _item(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="no product pixels"):
        render_photo("studio_soft_shadow", np.zeros((28, 28), np.uint8), np.random.default_rng(0))


def test_out_of_catalog_photos_come_in_the_asked_number_the_same_for_the_same_seed():
    photos = out_of_catalog_photos(6, np.random.default_rng(3))
    again = out_of_catalog_photos(6, np.random.default_rng(3))
    assert len(photos) == 6
    for photo, repeat in zip(photos, again):
        assert photo.mode == "RGB" and 300 <= max(photo.size) <= 1400
        assert np.array_equal(np.asarray(photo), np.asarray(repeat))
    assert out_of_catalog_photos(0, np.random.default_rng(3)) == []
