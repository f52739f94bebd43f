"""A colour product laid on one neutral grey (embedder/backdrop.py): the same product photographed on
different backdrops gives nearly the same view; the grey path is opt-in and leaves every other path and
every stored record as it was."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedder.backdrop import NEUTRAL_GREY, on_backdrop
from embedder.domain import analyse, normalise
from embedder.preprocess import Preprocessing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def product_photo(backdrop, width=320, height=240, box=(110, 40, 200, 210)):
    """A red product with a yellow print on a plain backdrop."""
    array = np.empty((height, width, 3), np.uint8)
    array[:] = backdrop
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = (200, 30, 40)
    array[y0 + 40:y0 + 70, x0 + 20:x1 - 20] = (240, 220, 30)
    return Image.fromarray(array)


def test_the_same_product_on_different_backdrops_gives_nearly_the_same_view():
    green, blue = product_photo((60, 170, 80)), product_photo((40, 60, 190))
    own = [normalise(p, size=64, channels=3, polarity="keep") for p in (green, blue)]
    grey = [on_backdrop(p, size=64) for p in (green, blue)]
    own_gap = np.abs(own[0].astype(int) - own[1].astype(int)).mean()
    grey_gap = np.abs(grey[0].astype(int) - grey[1].astype(int)).mean()
    assert own_gap > 20 and grey_gap < 0.2 * own_gap
    level = round(255 * NEUTRAL_GREY)
    for view in grey:
        assert view.shape == (3, 64, 64) and view.dtype == np.uint8
        assert np.all(np.abs(view[:, 0, 0].astype(int) - level) <= 1)  # the corner: the grey, not the backdrop
        assert np.all(np.abs(view[:, 32, 32].astype(int) - (200, 30, 40)) <= 12)  # the product keeps its colours
        assert (np.abs(view[:, 32, :].astype(int) - level).max(axis=0) > 30).sum() in range(30, 40)  # trimmed: 90/170 of 64 px


def test_a_query_region_selects_the_product_inside_it():
    photo = product_photo((60, 170, 80))
    whole = on_backdrop(photo, size=64)
    boxed = on_backdrop(photo, size=64, region=(90, 20, 230, 230))
    assert np.abs(whole.astype(int) - boxed.astype(int)).mean() < 6


def test_a_square_photo_without_a_clear_product_gets_normalise_s_view():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8))
    assert np.array_equal(on_backdrop(noise, size=48), normalise(noise, size=48, channels=3, polarity="keep"))


def test_a_photo_without_a_clear_product_is_fitted_on_the_grey_and_analysed_once(monkeypatch):
    import embedder.backdrop as backdrop

    calls = []
    monkeypatch.setattr(backdrop, "analyse", lambda *a, **k: calls.append(1) or analyse(*a, **k))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    view = on_backdrop(noise, size=48)
    assert len(calls) == 1
    level = round(255 * NEUTRAL_GREY)
    assert np.all(view[:, :6] == level) and np.all(view[:, -6:] == level)  # 160 x 120 fitted: 36 rows of photo
    own = normalise(noise, size=48, channels=3, polarity="keep")
    assert np.array_equal(view[:, 6:42], own[:, 6:42])  # the photo itself, as normalise fits it


def test_the_backdrop_is_opt_in_and_stored_only_when_set():
    plain = Preprocessing(64, 3, MEAN, STD, polarity="keep")
    assert "backdrop" not in plain.to_dict()  # earlier checkpoints' and catalogs' records stay the same
    grey = Preprocessing(64, 3, MEAN, STD, polarity="keep", backdrop=0.8)
    assert grey.to_dict()["backdrop"] == 0.8 and Preprocessing.from_dict(grey.to_dict()) == grey
    photo = product_photo((60, 170, 80))
    assert np.array_equal(grey.to_uint8(photo), on_backdrop(photo, size=64, grey=0.8))
    assert np.array_equal(plain.to_uint8(photo), normalise(photo, size=64, channels=3, polarity="keep"))


@pytest.mark.parametrize("fields", [dict(channels=1, mean=(0.5,), std=(0.5,), polarity="light-on-dark"),
                                    dict(channels=3, polarity="dark-on-light"), dict(channels=3, polarity="keep", domain=False)])
def test_a_backdrop_is_refused_outside_the_colour_path(fields):
    with pytest.raises(ValueError, match="backdrop"):
        Preprocessing(64, backdrop=0.8, **fields)
    with pytest.raises(ValueError, match="grey level"):
        Preprocessing(64, 3, polarity="keep", backdrop=1.5)
