"""The Catalog page in a real Chromium: sign in, browse, remove with a confirmation, undo it.

Needs Debian's chromium at /usr/bin/chromium (./run.sh test installs it); skipped without it.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from index.catalog import Catalog
from index.operations import build_catalog
from streamlit_server import WAIT_S, serve_streamlit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "a-browser-test-token-for-managers"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture
def served_shop(tiny_shop, tmp_path):
    """A private copy of the tiny shop and its catalog, served by `streamlit run` with a manager token."""
    data = tmp_path / "data"
    shutil.copytree(tiny_shop.manifest.parent, data / "shop")
    catalog = tmp_path / "catalogs" / "shop"
    build_catalog(data / "shop" / "manifest.csv", tiny_shop.model, catalog, progress=False)
    env = {"COINSP_CATALOG": str(catalog), "COINSP_MODEL": str(tiny_shop.model),
           "COINSP_DATA_ROOT": str(data), "COINSP_ADMIN_TOKEN": TOKEN}
    for url in serve_streamlit(env, tmp_path / "streamlit.log", "app/main.py", ("--server.maxUploadSize", "20")):
        yield url, catalog


def test_browse_remove_confirm_and_undo_in_a_browser(served_shop):
    from playwright.sync_api import sync_playwright

    url, catalog = served_shop
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), timeout=WAIT_S * 1000,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_S * 1000)
        page.goto(url)
        page.get_by_role("link", name="Catalog").click()
        page.get_by_label("Catalog manager token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("24 of 24 items match").wait_for()
        page.get_by_text("Select", exact=True).first.click()
        page.get_by_role("button", name="Remove 1 selected").click()
        page.get_by_text("Remove 1 item from the catalog?").wait_for()
        page.screenshot(path=str(ARTIFACTS / "catalog-remove-confirmation.png"))
        page.get_by_role("button", name="Confirm").click()
        page.get_by_text("Remove: 23 items").wait_for()
        assert len(Catalog.load(catalog)) == 23

        page.get_by_role("tab", name="Undo").click()
        page.get_by_role("button", name="Restore previous version").click()
        page.get_by_text("Restore the previous version").wait_for()
        page.get_by_role("button", name="Confirm").click()
        page.get_by_text("is current again (24 items)").wait_for()
        assert page.get_by_role("tab", name="Undo").get_attribute("aria-selected") == "true"  # the tab stayed
        page.screenshot(path=str(ARTIFACTS / "catalog-after-undo.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()
    assert len(Catalog.load(catalog)) == 24
