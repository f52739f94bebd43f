"""A store's flows in a real Chromium (Playwright) against `streamlit run app/main.py`: a metadata filter
on the Search page, browse-select-remove-undo and upload-to-add on the Catalog page, the embedding map
and the hygiene tables on the Quality page.

One server per module, over a private copy of the tiny shop; each test reads the catalog's state when
it starts, so none depends on another having run. Streamlit keeps the previous run's elements on
screen until a rerun replaces them, so every check waits for what only the new state shows.
Needs Debian's chromium at /usr/bin/chromium (./run.sh test installs it); skipped without it.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from index.catalog.loaded import Catalog
from index.quality.hygiene import hygiene_report
from index.catalog.operations import build_catalog
from tests.support.streamlit_server import ARTIFACTS, WAIT_MS, needs_chromium, serve_streamlit  # noqa: E402

MANAGER_TOKEN = "a-browser-test-token-for-store-flows"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def store(tiny_shop, tmp_path_factory):
    """A private copy of the tiny shop under the data root and its catalog, served with a manager token."""
    root = tmp_path_factory.mktemp("store-flows")
    data, catalogs = root / "data", root / "catalogs"
    shutil.copytree(tiny_shop.manifest.parent, data / "shop")
    catalog = catalogs / "shop"
    build_catalog(data / "shop" / "manifest.csv", tiny_shop.model, catalog, progress=False)
    env = {"COINSP_CATALOG": str(catalog), "COINSP_MODEL": str(tiny_shop.model),
           "COINSP_CATALOGS_DIR": str(catalogs), "COINSP_DATA_ROOT": str(data),
           "COINSP_ADMIN_TOKEN": MANAGER_TOKEN}
    for url in serve_streamlit(env, root / "streamlit.log", "app/main.py", ("--server.maxUploadSize", "20")):
        yield url, catalog


@pytest.fixture
def new_page(browser, store):
    """Opens a fresh session (its own browser context) on the served app; all are closed after the test."""
    ARTIFACTS.mkdir(exist_ok=True)
    contexts = []

    def open_page(path: str = ""):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{store[0]}/{path}", timeout=WAIT_MS)
        return page

    yield open_page
    for context in contexts:
        context.close()


def no_exception(page) -> None:
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def settled(page) -> None:
    """Wait until no script run is in progress (the status widget shows only while one is)."""
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")


def pick(page, widget, option: str) -> None:
    """Choose an option of a selectbox or multiselect; done when the widget shows it.

    Its list opens on a click into the focused input (the first click into a page may only focus it),
    and a run that ends while the list is open draws the widget again and closes it: so click until
    the list is open, then choose.
    """
    field, entry = widget.get_by_role("combobox"), page.get_by_role("option", name=option, exact=True)
    for _ in range(6):
        settled(page)
        field.click()
        try:
            expect(field).to_have_attribute("aria-expanded", "true", timeout=3_000)
            entry.click(timeout=10_000)
        except (AssertionError, PlaywrightTimeout):
            continue
        break
    page.keyboard.press("Escape")  # a multiselect keeps its list open
    if widget.get_attribute("data-testid") == "stSelectbox":  # the choice is the input's value
        expect(field).to_have_value(option)
    else:  # a multiselect: a tag per choice
        expect(widget).to_contain_text(option)


def sign_in_to_catalog(page) -> None:
    """On the Catalog page (opened as the session's first URL), sign in as the catalog manager."""
    page.get_by_label("Catalog manager token").fill(MANAGER_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("matches this catalog").wait_for()


def photo_png(colour: tuple[int, int, int], shape: int) -> bytes:
    """A product shot of its own: a coloured rectangle or ellipse on white."""
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape % 2 == 0 else draw.ellipse)((10 + shape, 12, 52 - shape, 50), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return path


# ---------------------------------------------------------------- Search: a metadata filter

def test_a_metadata_filter_narrows_the_results_and_says_when_nothing_matches(new_page, store):
    metadata = Catalog.load(store[1]).metadata
    wanted = metadata[metadata["product_id"] == "hats-1"]
    page = new_page()
    page.get_by_role("heading", name="Find similar products").wait_for()
    page.get_by_text("Pick a catalog item", exact=True).click()
    first_id = int(metadata["id"].iloc[0])  # the query: the first item, which is not a hat
    page.get_by_text(f"Catalog item {first_id}", exact=True).wait_for()
    cards = page.locator('[data-testid="stCaptionContainer"]', has_text=re.compile(r"^#\d+ ·"))
    expect(cards).to_have_count(10)

    page.locator('[data-testid="stExpander"] summary', has_text="Search options").click()
    pick(page, page.get_by_test_id("stMultiSelect").filter(has_text="Filter on"), "Product")
    pick(page, page.get_by_test_id("stMultiSelect").filter(has_text="Product: any of"), "hats-1")
    page.get_by_text("Filter: product_id=hats-1", exact=True).wait_for()
    page.get_by_role("heading", name=f"{len(wanted)} matches", exact=True).wait_for()
    expect(cards).to_have_count(len(wanted))  # the unfiltered cards are gone, not merely joined
    titles = {c.split("\n")[0].split(" · ", 1)[1] for c in cards.all_inner_texts()}
    assert titles == set(wanted["title"]), titles
    page.screenshot(path=str(ARTIFACTS / "search-filter-matches.png"), full_page=True)

    # The same filter within another category: nothing is both, and the page says so.
    pick(page, page.get_by_test_id("stSelectbox").filter(has_text="Category"), "bags")
    page.get_by_role("heading", name="0 matches in bags", exact=True).wait_for()
    expect(page.locator('[data-testid="stAlertContentWarning"]', has_text="No item matches the filter")) \
        .to_have_count(1)
    expect(cards).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "search-filter-no-match.png"), full_page=True)
    no_exception(page)


# ---------------------------------------------------------------- Quality: the map and the hygiene tables

def test_the_embedding_map_and_the_hygiene_tables_render(new_page, store):
    catalog = Catalog.load(store[1])
    report = hygiene_report(catalog)
    page = new_page("quality")
    page.get_by_role("heading", name="Retrieval quality").wait_for()

    page.get_by_role("tab", name="Embedding map").click()
    panel = page.get_by_role("tabpanel", name="Embedding map")
    panel.get_by_text(f"PCA of all {len(catalog):,} vectors").wait_for()
    chart = panel.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').first
    chart.wait_for(state="visible")
    box = chart.bounding_box()
    assert box["width"] > 200 and box["height"] > 200, box
    page.screenshot(path=str(ARTIFACTS / "quality-embedding-map.png"), full_page=True)

    page.get_by_role("tab", name="Hygiene").click()
    panel = page.get_by_role("tabpanel", name="Hygiene")
    tables = [report.miscategorised, report.duplicates, report.products]
    for title, table in zip(("Likely mis-categorised items", "Near-duplicate listings",
                             "Products whose photos disagree"), tables):
        panel.get_by_role("heading", name=title).wait_for(state="visible")
        panel.get_by_text(f"{len(table):,} rows.").first.wait_for()
    shown = panel.locator('[data-testid="stDataFrame"]')
    expect(shown).to_have_count(sum(len(t) > 0 for t in tables))
    expect(panel.get_by_text("None found.", exact=True)).to_have_count(sum(len(t) == 0 for t in tables))
    for frame in shown.all():
        frame.wait_for(state="visible")
        assert frame.bounding_box()["height"] > 60  # a header and rows, drawn
    page.screenshot(path=str(ARTIFACTS / "quality-hygiene.png"), full_page=True)
    no_exception(page)


# ---------------------------------------------------------------- Catalog: browse, select, remove, undo

def test_browse_by_category_select_items_remove_them_and_undo(new_page, store):
    catalog_folder = store[1]
    metadata = Catalog.load(catalog_folder).metadata
    total, hats = len(metadata), metadata[metadata["category"] == "hats"]
    page = new_page("catalog")
    sign_in_to_catalog(page)
    page.get_by_text(f"{total} of {total} items match").wait_for()
    pick(page, page.get_by_test_id("stSelectbox").filter(has_text="Category"), "hats")
    page.get_by_text(f"{len(hats)} of {total} items match").wait_for()
    checkboxes = page.get_by_test_id("stCheckbox").filter(has_text="Select")
    expect(checkboxes).to_have_count(len(hats))
    chosen = [int(i) for i in hats["id"].iloc[:2]]  # the first two cards
    checkboxes.nth(0).click()
    page.get_by_text("1 selected", exact=True).wait_for()
    checkboxes.nth(1).click()
    page.get_by_text("2 selected", exact=True).wait_for()
    page.get_by_role("button", name="Remove 2 selected").click()
    page.get_by_text("Remove 2 items from the catalog?").wait_for()
    page.get_by_text(f"Ids: {chosen[0]}, {chosen[1]}").wait_for()
    page.screenshot(path=str(ARTIFACTS / "store-remove-two-confirmation.png"), full_page=True)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text(f"Remove: {total - 2} items").wait_for()
    page.get_by_text(re.compile(rf"^{len(hats) - 2} of {total - 2} items match")).wait_for()  # still filtered
    expect(page.get_by_test_id("stSelectbox").filter(has_text="Category").get_by_role("combobox")).to_have_value("hats")
    remaining = set(Catalog.load(catalog_folder).metadata["id"])
    assert len(remaining) == total - 2 and not remaining & set(chosen)

    page.get_by_role("tab", name="Undo").click()
    page.get_by_role("button", name="Restore previous version").click()
    page.get_by_text("Restore the previous version").wait_for()
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text(f"is current again ({total} items)").wait_for()
    assert page.get_by_role("tab", name="Undo").get_attribute("aria-selected") == "true"  # the tab stayed
    assert set(Catalog.load(catalog_folder).metadata["id"]) == set(metadata["id"])
    page.screenshot(path=str(ARTIFACTS / "store-after-undo.png"), full_page=True)
    no_exception(page)


# ---------------------------------------------------------------- Catalog: upload to add

def upload(page, files: list[Path], category: str) -> None:
    """Choose the files (in place of any chosen before), give the category, and upload them."""
    page.get_by_role("tab", name="Add images").click()
    earlier = page.get_by_test_id("stFileChipDeleteBtn")
    for _ in range(earlier.count()):  # the uploader keeps the last upload's files
        earlier.first.click()
    expect(earlier).to_have_count(0)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(f) for f in files])
    for file in files:
        page.get_by_test_id("stFileChipName").filter(has_text=file.name).wait_for()
    page.get_by_test_id("stTextInput").filter(has_text="Category").locator("input").fill(category)
    page.get_by_role("button", name="Upload and add").click()


def test_upload_photos_and_zips_to_add_them_with_a_category(new_page, store, tmp_path):
    catalog_folder = store[1]
    before = len(Catalog.load(catalog_folder))
    photos = []
    for i, colour in enumerate([(200, 40, 40), (40, 160, 60)]):
        photos.append(tmp_path / f"scarf-{i}.png")
        photos[-1].write_bytes(photo_png(colour, i))
    flat = write_zip(tmp_path / "more-scarves.zip", {"a.png": photo_png((30, 30, 180), 2),
                                                     "b.png": photo_png((180, 160, 20), 3),
                                                     "broken.jpg": b"\xff\xd8\xff not really a JPEG"})
    page = new_page("catalog")
    sign_in_to_catalog(page)
    upload(page, [*photos, flat], "scarves")
    page.get_by_text(f"Add: {before + 4} items").wait_for()
    page.get_by_text("1 files were left out").wait_for()
    added = Catalog.load(catalog_folder).metadata.iloc[before:]
    assert len(added) == 4 and set(added["category"]) == {"scarves"}
    page.screenshot(path=str(ARTIFACTS / "store-upload-added.png"), full_page=True)
    no_exception(page)

    # A zip of product folders: the folders are the product ids, as the form says.
    folders = write_zip(tmp_path / "belts.zip", {"belt-7/front.png": photo_png((90, 60, 30), 4),
                                                 "belt-7/side.png": photo_png((95, 65, 30), 5),
                                                 "belt-8/front.png": photo_png((20, 20, 20), 6)})
    page.get_by_text("the folder a photo lies in is its product id").wait_for()
    upload(page, [folders], "belts")
    page.get_by_text(f"Add: {before + 7} items").wait_for()
    added = Catalog.load(catalog_folder).metadata.iloc[before + 4:]
    assert sorted(added["product_id"]) == ["belt-7", "belt-7", "belt-8"] and set(added["category"]) == {"belts"}
    assert np.all(added["path"].str.startswith("@catalog/photos/"))  # kept inside the catalog folder
    page.screenshot(path=str(ARTIFACTS / "store-upload-product-folders.png"), full_page=True)
    no_exception(page)
