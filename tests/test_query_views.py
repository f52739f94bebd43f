"""Query views: an item's photo through the real query path stands in for its catalog image in training."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from embedder.preprocess import Preprocessing
from training.query_views import QueryViews, render_views


def _views_file(tmp_path, rows, value=200):
    views = np.full((len(rows), 1, 4, 4), value, np.uint8)
    np.savez(tmp_path / "views.npz", views=views, rows=np.asarray(rows), mask_model=np.array("abc"))
    return tmp_path / "views.npz"


def test_only_rows_with_a_view_are_swapped_and_about_the_asked_share_of_them(tmp_path):
    views = QueryViews(_views_file(tmp_path, rows=list(range(0, 1000, 2))), rows_in_set=1000)
    assert views.mask_model == "abc"
    images = torch.zeros(1000, 1, 4, 4, dtype=torch.uint8)
    idx = torch.arange(1000)
    swapped = views.swap(images[idx], idx, share=0.5, generator=torch.Generator().manual_seed(0))
    changed = (swapped.flatten(1) == 200).all(dim=1)
    assert not changed[1::2].any()  # odd rows have no view
    assert 0.4 < changed[::2].float().mean() < 0.6
    assert (images == 0).all()  # the training set itself is never changed
    same = views.swap(images[idx], idx, share=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, swapped)  # reproducible from the epoch's generator


def test_views_naming_rows_beyond_the_training_set_are_refused(tmp_path):
    try:
        QueryViews(_views_file(tmp_path, rows=[5, 20]), rows_in_set=10)
    except ValueError as exc:
        assert "beyond" in str(exc)
    else:
        raise AssertionError("views of rows the set does not have were accepted")


def test_a_rendered_view_is_what_a_search_would_give_the_model():
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 8:20] = 220
    pre = Preprocessing(28, 1, (0.286,), (0.353,))
    view = render_views(item[None], np.array([7]), pre, seed=3)
    assert view.shape == (1, 1, 28, 28) and view.dtype == np.uint8
    assert np.array_equal(view, render_views(item[None], np.array([7]), pre, seed=3))  # one photo per (seed, row)
    # A light product on black, trimmed to fill the square as catalog images are.
    assert view[0, 0, 14, 14] > 100 and view[0, 0, 0, 0] < 60
    assert pre.to_uint8(Image.fromarray(item).convert("RGB")).shape == view.shape[1:]


def test_an_item_with_several_views_shows_each_of_them_and_only_its_own(tmp_path):
    rows = [3, 3, 3, 7]  # item 3 photographed three ways, item 7 once
    views = np.stack([np.full((1, 4, 4), v, np.uint8) for v in (10, 20, 30, 70)])
    np.savez(tmp_path / "views.npz", views=views, rows=np.asarray(rows), mask_model=np.array("abc"))
    loaded = QueryViews(tmp_path / "views.npz", rows_in_set=10)
    idx = torch.tensor([3] * 300 + [7] * 10 + [5] * 10)
    swapped = loaded.swap(torch.zeros(len(idx), 1, 4, 4, dtype=torch.uint8), idx, share=1.0,
                          generator=torch.Generator().manual_seed(1))
    shown = swapped[:, 0, 0, 0]
    assert set(shown[:300].tolist()) == {10, 20, 30}  # every view of item 3, nothing of another item
    assert set(shown[300:310].tolist()) == {70} and set(shown[310:].tolist()) == {0}  # row 5 has none


def test_a_second_take_of_an_item_is_another_photo_of_it():
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 8:20] = 220
    pre = Preprocessing(28, 1, (0.286,), (0.353,))
    first = render_views(item[None], np.array([7]), pre, seed=3)
    assert np.array_equal(first, render_views(item[None], np.array([7]), pre, seed=3, takes=np.array([0])))
    second = render_views(item[None], np.array([7]), pre, seed=3, takes=np.array([1]))
    assert not np.array_equal(first, second)
