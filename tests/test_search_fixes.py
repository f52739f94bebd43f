"""A catalog manager fixes search results where they are shown (Search page, AppTest): re-categorise
or tag chosen results as one catalog version (vectors kept, Undo on the Catalog page); a shopper
gets no such controls."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from index.catalog.loaded import Catalog
from tests.support.app_pages import signed_in

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TOKEN = "a-long-enough-secret-for-tests"


@pytest.fixture
def shop(tiny_shop, tmp_path, monkeypatch) -> Path:
    catalog = tmp_path / "catalogs" / "shop"
    shutil.copytree(tiny_shop.catalog, catalog)
    monkeypatch.setenv("COINSP_CATALOG", str(catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(catalog.parent))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    return catalog


def searched_item(at: AppTest) -> AppTest:
    at.switch_page("pages/search.py").run()
    return at.radio(key="search_mode").set_value("Pick a catalog item").run()


def test_results_are_fixed_in_place_by_the_catalog_manager_only(shop):
    at = searched_item(AppTest.from_file(APP, default_timeout=120).run())
    assert not at.exception, at.exception
    assert "search_fix_ids" not in [m.key for m in at.multiselect]  # a shopper: nothing to change
    signed_in(at, TOKEN)
    at = searched_item(at)
    assert not at.exception, at.exception
    before = Catalog.load(shop)
    results = at.multiselect(key="search_fix_ids")
    chosen = list(results.options)[:2]
    ids = [int(o.split("id ")[1]) for o in chosen]
    results.set_value(ids).run()
    at.selectbox(key="search_fix_category").set_value("shoes").run()
    at.button(key="search_fix_recategorise").click().run()
    assert not at.exception, at.exception
    assert any("Re-categorised 2 chosen items as shoes" in s.value for s in at.success)
    after = Catalog.load(shop)
    assert after.info.version != before.info.version
    rows = after.rows_of(ids)
    assert (after.metadata["category"].iloc[rows] == "shoes").all()
    assert np.array_equal(np.asarray(after.embeddings), np.asarray(before.embeddings))  # categories are metadata
