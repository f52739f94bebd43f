"""Serve the compared model from the Quality page (app.serving): an atomic switch of the served
catalog and model, refused for a model that is not the catalog's, and undo."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.serving import SERVING_FILE, ServingError, read_serving, served, switch_serving, undo_serving
from app.settings import Settings
from tests.support.app_pages import signed_in

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TOKEN = "a-long-enough-secret-for-tests"


@pytest.fixture
def catalogs(tiny_shop, tmp_path) -> Path:
    """Private copies of the tiny shop's two catalogs (models a and b, the same photos)."""
    return tiny_shop.copied_catalogs(tmp_path / "catalogs")


def test_a_switch_serves_the_other_catalog_and_undo_serves_the_first_again(tiny_shop, catalogs):
    start = Settings(catalog=catalogs / "tiny-a", model=tiny_shop.model, catalogs_dir=catalogs)
    assert served(start) == start and read_serving(catalogs) is None
    switch_serving(start, catalogs / "tiny-b", tiny_shop.model_b)
    now = served(start)
    assert (now.catalog, now.model) == (catalogs / "tiny-b", tiny_shop.model_b)
    assert [p.name for p in catalogs.iterdir() if p.is_file()] == [SERVING_FILE]  # no temporary file left
    undo_serving(start)
    back = served(start)
    assert (back.catalog, back.model) == (start.catalog, start.model)
    undo_serving(start)  # undo of the undo serves b again
    assert served(start).catalog == catalogs / "tiny-b"


def test_a_model_that_is_not_the_catalogs_is_refused(tiny_shop, catalogs):
    start = Settings(catalog=catalogs / "tiny-a", model=tiny_shop.model, catalogs_dir=catalogs)
    with pytest.raises(ServingError, match="is not the model tiny-b was built with"):
        switch_serving(start, catalogs / "tiny-b", tiny_shop.model)
    with pytest.raises(ServingError, match="no catalog"):
        switch_serving(start, catalogs / "missing", tiny_shop.model)
    with pytest.raises(ServingError, match="nothing to undo"):
        undo_serving(start)
    assert read_serving(catalogs) is None and served(start) == start


def test_a_record_whose_catalog_is_gone_is_ignored(tiny_shop, catalogs):
    start = Settings(catalog=catalogs / "tiny-a", model=tiny_shop.model, catalogs_dir=catalogs)
    switch_serving(start, catalogs / "tiny-b", tiny_shop.model_b)
    shutil.rmtree(catalogs / "tiny-b")
    assert served(start) == start
    (catalogs / SERVING_FILE).write_text("{not json")
    assert read_serving(catalogs) is None and served(start) == start


def serving_line(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Serving now:"))


def test_a_catalog_manager_serves_the_compared_model_and_undoes_it(tiny_shop, catalogs, monkeypatch):
    monkeypatch.setenv("COINSP_CATALOG", str(catalogs / "tiny-a"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(catalogs))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/quality.py").run()
    assert "serve_other" not in [b.key for b in at.button]  # shoppers and merchandisers without the token
    signed_in(at, TOKEN)
    at.switch_page("pages/quality.py").run()
    assert not at.exception, at.exception
    assert serving_line(at).startswith("Serving now: **tiny-a** with `tiny-a.pt`")
    at.button(key="serve_other").click().run()
    assert not at.exception, at.exception
    assert serving_line(at).startswith("Serving now: **tiny-b** with `tiny-b.pt`")
    assert any("tiny-b is served now" in s.value for s in at.success)
    assert read_serving(catalogs)["catalog"] == str(catalogs / "tiny-b")
    at.switch_page("pages/search.py").run()  # the Search page serves the switched catalog
    assert not at.exception, at.exception
    at.switch_page("pages/quality.py").run()
    at.button(key="serve_undo").click().run()
    assert not at.exception, at.exception
    assert serving_line(at).startswith("Serving now: **tiny-a** with `tiny-a.pt`")
