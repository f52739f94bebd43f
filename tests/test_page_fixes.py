"""Fixing items where the pages show them (AppTest): the Catalog page's uploader is empty again
after an add, its browser re-categorises a selection, and the Quality page shows no server path
to anyone without the catalog-management token, while a manager fixes items from its tables."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.roles import SIGNED_IN_KEY, token_digest
from tests.support.photos import product_photo
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TOKEN = "a-test-token-for-catalog-managers"


@pytest.fixture
def shop(tiny_shop, tmp_path, monkeypatch):
    """A private copy of the tiny shop under the data root, with its own catalog."""
    data = tmp_path / "data"
    shutil.copytree(tiny_shop.manifest.parent, data / "shop")
    catalog = tmp_path / "catalogs" / "shop"
    build_catalog(data / "shop" / "manifest.csv", tiny_shop.model, catalog, progress=False)
    monkeypatch.setenv("COINSP_CATALOG", str(catalog))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(catalog.parent))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_DATA_ROOT", str(data))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    return {"data": data, "catalog": catalog}


def open_page(page: str, signed_in: bool) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if signed_in:
        at.session_state[SIGNED_IN_KEY] = token_digest(TOKEN)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(node) -> str:
    """Everything a page sends to the browser, as text (element protos, tables included)."""
    parts = [str(getattr(node, "proto", ""))]
    value = getattr(node, "value", None)
    if hasattr(value, "to_csv"):
        parts.append(value.to_csv())
    for child in getattr(node, "children", {}).values():
        parts.append(texts(child))
    return "\n".join(parts)


def test_the_uploader_is_empty_after_a_successful_add(shop):
    at = open_page("pages/catalog.py", signed_in=True)
    at.file_uploader(key="upload_files").set_value([("side.png", product_photo((30, 200, 30)), "image/png")])
    at.text_input(key="upload_category").set_value("scarves")
    at.button(key="upload_submit").click().run()
    assert not at.exception and "1 added" in at.success[0].value
    keys = {u.key for u in at.get("file_uploader")}
    assert keys == {"upload_files_1"}  # a fresh uploader, holding no file
    assert not at.file_uploader(key="upload_files_1").value


def test_the_browser_re_categorises_the_selected_items(shop):
    at = open_page("pages/catalog.py", signed_in=True)
    first, second = (int(i) for i in Catalog.load(shop["catalog"]).ids[:2])
    at.checkbox(key=f"catalog_browse_pick_{first}").check().run()
    at.checkbox(key=f"catalog_browse_pick_{second}").check().run()
    at.selectbox(key="browse_fix_category").set_value("hats").run()
    at.button(key="browse_fix_recategorise").click().run()
    assert not at.exception and any("Re-categorised 2 chosen items as hats" in s.value for s in at.success)
    categories = Catalog.load(shop["catalog"]).metadata.set_index("id")["category"]
    assert categories[first] == categories[second] == "hats"


def test_the_quality_page_shows_no_server_path_without_the_token(shop):
    at = open_page("pages/quality.py", signed_in=False)
    sent = texts(at.main) + texts(at.sidebar)
    metadata = Catalog.load(shop["catalog"]).metadata
    assert str(shop["catalog"]) not in sent and str(shop["data"]) not in sent
    assert not any(path in sent for path in metadata["path"])  # not even paths inside the image folder
    hygiene = next(t for t in at.tabs if t.label == "Hygiene")
    assert all("path" not in d.value.columns for d in hygiene.dataframe)
    assert not [b for b in at.get("button") if "fix" in str(b.key)]  # and no way to change anything


def test_a_manager_sees_the_paths_and_fixes_an_item_from_a_hygiene_table(shop):
    at = open_page("pages/quality.py", signed_in=True)
    hygiene = next(t for t in at.tabs if t.label == "Hygiene")
    tables = {d.key: d for d in hygiene.dataframe}
    assert all("path" in d.value.columns for key, d in tables.items() if key != "hygiene_products")
    key = next(k for k in ("hygiene_miscategorised", "hygiene_duplicates") if k in tables)
    item = int(tables[key].value["id"].iloc[0])
    fix = f"{key}_fix"
    at.session_state[key] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.text_input(key=f"{fix}_tag").set_value("review").run()
    at.button(key=f"{fix}_add_tag").click().run()
    assert not at.exception
    assert Catalog.load(shop["catalog"]).metadata.set_index("id")["tags"][item] == "review"
