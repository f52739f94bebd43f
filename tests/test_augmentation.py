"""Training augmentation on whole batches: the shopper-photo view changes what a shopper's camera changes."""
import math

import pytest
import torch

from training.augment import AUGMENTATIONS, augment, segmentation_residue, shopper_photo


def _square(size=28, side=8, channels=1) -> torch.Tensor:
    """A light square centred on a dark canvas, the catalog's convention."""
    x = torch.zeros(1, channels, size, size)
    lo = (size - side) // 2
    x[..., lo:lo + side, lo:lo + side] = 0.8
    return x


def _still(**changes) -> dict:
    """Every range shut (the identity), except the ones named."""
    return {"scale": (1.0, 1.0), "max_shift": 0.0, "max_degrees": 0.0, "brightness": (1.0, 1.0),
            "contrast": (1.0, 1.0), "tint": (1.0, 1.0), **changes}


def test_with_every_range_shut_the_shopper_view_is_the_image_or_its_mirror():
    x = _square(side=10)  # symmetric about the vertical axis, so the mirror is the image too
    y = shopper_photo(x, torch.Generator().manual_seed(0), **_still())
    assert torch.allclose(y, x, atol=1e-5)


def test_the_product_appears_smaller_when_the_scale_is_below_one():
    x = _square(side=12)
    y = shopper_photo(x, torch.Generator().manual_seed(0), **_still(scale=(0.5, 0.5)))
    # area of the light square shrinks by scale^2 (bilinear edges aside)
    assert (y > 0.4).sum().item() == (x > 0.4).sum().item() // 4


def test_rotation_stays_within_ten_degrees():
    x = torch.zeros(1, 1, 64, 64)
    x[..., 31:33, 8:56] = 1.0  # a horizontal bar
    for seed in range(10):
        y = shopper_photo(x, torch.Generator().manual_seed(seed), **_still(max_degrees=10.0))
        ys, xs = torch.nonzero(y[0, 0] > 0.5, as_tuple=True)
        slope = torch.linalg.lstsq(torch.stack([xs.float(), torch.ones_like(xs, dtype=torch.float)], 1),
                                   ys.float()[:, None]).solution[0, 0]
        assert abs(math.degrees(math.atan(slope))) <= 10.5


def test_brightness_and_contrast_change_the_values_not_the_shape():
    x = _square()
    dark = shopper_photo(x, torch.Generator().manual_seed(0), **_still(brightness=(0.5, 0.5)))
    assert torch.allclose(dark, x * 0.5, atol=1e-6)
    flat = shopper_photo(x, torch.Generator().manual_seed(0), **_still(contrast=(0.5, 0.5)))
    mean = x.mean()
    assert torch.allclose(flat, (x - mean) * 0.5 + mean, atol=1e-6)
    assert flat.mean().item() == pytest.approx(mean.item(), abs=1e-6)


def test_tint_changes_the_channels_of_colour_images_apart_and_leaves_grey_images_grey():
    colour = _square(channels=3)
    y = shopper_photo(colour, torch.Generator().manual_seed(1), **_still(tint=(0.8, 1.2)))
    gains = [y[0, c].max().item() / 0.8 for c in range(3)]
    assert all(0.8 <= g <= 1.2 for g in gains) and max(gains) - min(gains) > 1e-3
    grey = _square()
    assert torch.allclose(shopper_photo(grey, torch.Generator().manual_seed(1), **_still(tint=(0.8, 1.2))), grey)


def test_the_shopper_view_is_batched_seeded_and_in_range():
    x = torch.rand(16, 3, 28, 28)
    a = augment(x, "shopper", torch.Generator().manual_seed(3))
    b = augment(x, "shopper", torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a[0], x[0])
    assert "shopper" in AUGMENTATIONS


def test_a_rank_warps_its_rows_as_one_process_would():
    x = torch.rand(8, 1, 28, 28)
    whole = augment(x, "shopper", torch.Generator().manual_seed(5))
    odd = augment(x[1::2], "shopper", torch.Generator().manual_seed(5), part=(1, 2))
    assert torch.allclose(odd, whole[1::2], atol=1e-6)


def test_what_the_warp_uncovers_is_the_background_not_a_smear_of_the_edge():
    x = torch.full((1, 1, 28, 28), 0.9)  # a light catalog background...
    x[..., 6:28, 10:18] = 0.2  # ...with a dark product touching the bottom edge
    y = shopper_photo(x, torch.Generator().manual_seed(0), **_still(scale=(0.5, 0.5)))
    # shrunk to half about the centre, the product ends at row 20; below it is background again
    assert torch.allclose(y[..., 22:, :], torch.full_like(y[..., 22:, :], 0.9), atol=1e-5)


# ---------------------------------------------------------------- what an imperfect product crop leaves

def _residue(x, seed=0, **changes):
    settings = {"p": 1.0, "texture": (0.0, 0.0), "specks": (0, 0), "holes": (0, 0), **changes}
    return segmentation_residue(x, torch.Generator().manual_seed(seed), **settings)


def test_with_nothing_to_leave_behind_the_image_is_unchanged():
    x = torch.rand(4, 3, 28, 28)
    assert torch.equal(_residue(x), x)
    assert torch.equal(segmentation_residue(x, torch.Generator().manual_seed(0), p=0.0), x)


def test_stray_specks_stand_out_from_the_background_the_way_the_product_does():
    light_on_dark = _square(side=10)
    y = _residue(light_on_dark, specks=(6, 6))
    outside = light_on_dark == 0
    changed = (y != light_on_dark) & outside
    assert changed.any() and (y[changed] > 0).all()  # bright specks on black
    dark_on_light = 1 - light_on_dark
    z = _residue(dark_on_light, specks=(6, 6))
    assert torch.allclose(1 - z, y, atol=1e-6)  # the same specks, dark on white


def test_holes_turn_parts_of_the_product_into_background_and_nothing_else():
    x = _square(side=16)
    y = _residue(x, holes=(4, 4))
    changed = y != x
    assert changed.any()
    assert (y[changed] == 0).all()  # background, and only ever where the product was
    assert (x[changed] > 0).all()


def test_a_pattern_shows_through_the_product_but_not_on_the_background_away_from_it():
    x = _square(side=14)
    y = _residue(x, texture=(0.3, 0.3))
    inside = x > 0
    assert (y[inside] - x[inside]).abs().max() > 0.05
    far = torch.ones_like(x, dtype=torch.bool)
    far[..., 5:23, 5:23] = False  # more than one pixel away from the product
    assert torch.equal(y[far], x[far])


def test_the_residue_view_is_seeded_and_a_rank_gets_its_rows_of_the_whole_batch():
    x = torch.rand(8, 1, 28, 28) * (torch.rand(8, 1, 28, 28) > 0.5)
    whole = augment(x, "shopper_residue", torch.Generator().manual_seed(5))
    assert torch.equal(whole, augment(x, "shopper_residue", torch.Generator().manual_seed(5)))
    odd = augment(x[1::2], "shopper_residue", torch.Generator().manual_seed(5), part=(1, 2))
    assert torch.allclose(odd, whole[1::2], atol=1e-6)
