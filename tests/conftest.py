"""Shared test fixtures: shops built once per run and a real browser.

What they are made of (models, shops, photos) is in the tests.support package, which test modules
import by name. App fixtures (prefix `tiny_shop`): a tiny product catalog made of generated photos,
embedded with random-init models, so the app can be tested end to end in seconds without any data set.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests compare numbers: they run in fp32 on every machine, never in the precision measured fastest
# here (embedder/precision.py); tests of that choice set their own environment.
os.environ.setdefault("COINSP_PRECISION", "fp32")

from tests.support.threads import one_torch_thread  # noqa: E402
from tests.support.shops import FashionShop, TinyShop, fashion_mnist_installed, fashion_shop_make, tiny_shop_make  # noqa: E402


@pytest.fixture(scope="session")
def tiny_shop(tmp_path_factory) -> TinyShop:
    """A tiny shop built once per test session (read-only: copy it to change it)."""
    return tiny_shop_make(tmp_path_factory.mktemp("tiny-shop"))


@pytest.fixture
def tiny_shop_env(tiny_shop, monkeypatch) -> TinyShop:
    """Point the app's settings (app/settings.py) at the tiny shop."""
    monkeypatch.setenv("COINSP_CATALOG", str(tiny_shop.catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(tiny_shop.catalogs_dir))
    return tiny_shop


# ---------------------------------------------------------------- a shop with wrong best matches

@pytest.fixture(scope="session")
def mixed_up_shop(tiny_shop, tmp_path_factory) -> Path:
    """The tiny shop with the second photo of each product filed under the next product of its
    category, so best matches show another product id: failures and confused pairs exist.
    Returns its catalogs folder (mixed-a and mixed-b, both built with model A)."""
    import shutil

    from index.catalog.operations import build_catalog

    root = tmp_path_factory.mktemp("mixed-up")
    shutil.copytree(tiny_shop.manifest.parent, root / "shop")
    items = tiny_shop.items.copy()
    second = items["view"] == 1
    number = items["product_id"].str.rsplit("-", n=1).str[1].astype(int)
    items.loc[second, "product_id"] = items.loc[second, "category"] + "-" + ((number[second] + 1) % 3).astype(str)
    items.to_csv(root / "shop" / "manifest.csv", index=False)
    catalogs = root / "catalogs"
    with one_torch_thread():
        build_catalog(root / "shop" / "manifest.csv", tiny_shop.model, catalogs / "mixed-a", progress=False)
        build_catalog(root / "shop" / "manifest.csv", tiny_shop.model, catalogs / "mixed-b", progress=False)
    return catalogs


# ---------------------------------------------------------------- Fashion-MNIST shop

@pytest.fixture(scope="session")
def fashion_shop(tmp_path_factory) -> FashionShop:
    """A small Fashion-MNIST catalog searched with the kept model (skipped without the data)."""
    if not fashion_mnist_installed():
        pytest.skip("Fashion-MNIST or the kept model is not installed")
    return fashion_shop_make(tmp_path_factory.mktemp("fashion-shop"))


# ---------------------------------------------------------------- a real browser

@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, one per test module (see tests/support/streamlit_server.py)."""
    from tests.support.streamlit_server import chromium_browser

    with chromium_browser() as chromium:
        yield chromium
