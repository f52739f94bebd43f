"""End to end: `streamlit run streamlit_app.py` (as ./run.sh serves the app) as a real server, driven
by a real Chromium (Playwright).

Needs Debian's chromium at /usr/bin/chromium (./run.sh test installs it); skipped without it.
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from index.catalog.loaded import Catalog
from tests.support.streamlit_server import ARTIFACTS, WAIT_MS, needs_chromium, serve_streamlit  # noqa: E402

MANAGER_TOKEN = "a-browser-test-token-for-catalog-managers"
CROP_FRAME = 'iframe[title="app.components.crop_box"]'
LOGS: dict[str, Path] = {}  # served app's URL -> its server log (each search is a line: app.search)

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def app_url(tiny_shop, tmp_path_factory):
    """The app served by `streamlit run` on a free port, pointed at the tiny shop; always stopped."""
    yield from _serve(tiny_shop.catalog, tiny_shop.model, tiny_shop.catalogs_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def fashion_url(fashion_shop, tmp_path_factory):
    """The app over the small Fashion-MNIST catalog and the kept model (with a category head)."""
    yield from _serve(fashion_shop.catalog, fashion_shop.model, fashion_shop.catalog.parent, tmp_path_factory)


def _serve(catalog: Path, model: Path, catalogs_dir: Path, tmp_path_factory, script: str = "streamlit_app.py"):
    env = {"COINSP_CATALOG": str(catalog), "COINSP_MODEL": str(model),
           "COINSP_CATALOGS_DIR": str(catalogs_dir), "COINSP_ADMIN_TOKEN": MANAGER_TOKEN}
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    for url in serve_streamlit(env, log, script):
        LOGS[url] = log
        yield url


@pytest.fixture
def page(browser, app_url):
    yield from _open(browser, app_url)


@pytest.fixture
def fashion_page(browser, fashion_url):
    yield from _open(browser, fashion_url)


def _open(browser, url: str):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url, timeout=WAIT_MS)
    page.get_by_role("heading", name="Find similar products").wait_for()
    yield page
    context.close()


def _upload(page, path: Path) -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(path))


def _top_result(page, expected_product: str) -> str:
    """Wait until the first result's caption names `expected_product`; return that caption."""
    first = page.locator('[data-testid="stCaptionContainer"]', has_text=re.compile(r"^#1 ·")).first
    first.filter(has_text=expected_product).wait_for()
    return first.inner_text()


def _wait_for_images(page, count: int) -> None:
    """Streamlit draws images after the text: wait until `count` of them have loaded."""
    page.wait_for_function(
        """n => { const imgs = [...document.querySelectorAll('[data-testid="stMain"] img')];
                  return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=count, timeout=WAIT_MS)


def test_upload_finds_the_same_catalog_item_first_then_survives_a_corrupt_file(page, tiny_shop):
    metadata = Catalog.load(tiny_shop.catalog).metadata
    ids = dict(zip(metadata["path"], metadata["id"]))
    photos = [tiny_shop.manifest.parent / p for p in tiny_shop.items["path"]]

    # A catalog photo: the same item is the top result, with a perfect score.
    photo = photos[12]  # shoes-0-0.jpg
    _upload(page, photo)
    caption = _top_result(page, tiny_shop.items.iloc[12]["title"])
    assert "score 1.000" in caption and "your photo" in caption  # the catalog's copy of the photo, marked
    page.get_by_role("button", name="Details").first.click()  # the rest of its metadata, on demand
    details = page.locator('[data-testid="stPopoverBody"]')
    details.filter(has_text=f"Catalog id: {ids[f'images/{photo.name}']}").wait_for()
    assert f"File: {photo.name}" in details.inner_text()
    page.keyboard.press("Escape")
    page.get_by_text("Search took").wait_for()
    _wait_for_images(page, 11)  # the photo and its 10 matches
    page.screenshot(path=str(ARTIFACTS / "search-results.png"), full_page=True)

    # A corrupt file: a clear message, no results, and the app is still up.
    _upload(page, tiny_shop.corrupt_image)
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for()
    assert "broken.jpg can't be used as a search photo" in error.inner_text()
    assert "corrupt" in error.inner_text()
    # The previous results go once the page has finished its run for the bad upload (the error can show first).
    page.get_by_text("Search took").wait_for(state="detached", timeout=WAIT_MS)
    assert page.get_by_text("Search took").count() == 0
    page.screenshot(path=str(ARTIFACTS / "search-bad-upload.png"), full_page=True)

    # The next valid upload works.
    photo = photos[19]  # tops-0-1.png
    _upload(page, photo)
    caption = _top_result(page, tiny_shop.items.iloc[19]["title"])
    assert "score 1.000" in caption
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def test_every_page_renders_and_search_options_survive_a_visit(page, app_url):
    _open_options(page)  # the options sit in an expander above the results
    k = page.locator('[data-testid="stSlider"] input[type="range"]').first
    k.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('[data-testid=\"stSlider\"] input').value === '12'")
    # The slider sends its value to the server after a 200 ms debounce; leaving the page sooner
    # (a loaded machine) would lose it, so wait for that and for the rerun it starts to end.
    page.wait_for_timeout(600)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")

    page.get_by_role("link", name="Catalog").click()
    page.get_by_role("heading", name="Catalog", exact=True).wait_for()
    page.get_by_label("Catalog manager token").fill(MANAGER_TOKEN)  # the Catalog page is for catalog managers
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("matches this catalog").wait_for()
    page.get_by_role("link", name="Quality").click()
    page.get_by_role("heading", name="Retrieval quality").wait_for()
    page.get_by_text("Recall@10").first.wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    time.sleep(1)  # let the charts draw
    page.screenshot(path=str(ARTIFACTS / "quality-report.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0

    page.get_by_role("link", name="Search").click()
    page.get_by_role("heading", name="Find similar products").wait_for()
    _open_options(page)
    assert page.locator('[data-testid="stSlider"] input[type="range"]').first.get_attribute("value") == "12"


def test_a_shopper_photo_shows_its_crop_box_the_predicted_category_and_its_product_type(fashion_page, fashion_shop,
                                                                                       tmp_path):
    from tests.support.photos import shopper_photo
    from index.importers import FASHION_MNIST_CLASSES

    sneaker = fashion_shop.train_images[int(np.flatnonzero(
        fashion_shop.train_labels == FASHION_MNIST_CLASSES.index("Sneaker"))[0])]
    photo = tmp_path / "my-sneaker.jpg"  # a training photo (never in the catalog), as a phone shows it
    photo.write_bytes(shopper_photo(sneaker))
    page = fashion_page
    _upload(page, photo)
    page.get_by_text("Predicted category:").wait_for()
    assert "Predicted category: footwear" in page.get_by_text("Predicted category:").inner_text()
    first = page.locator('[data-testid="stCaptionContainer"]', has_text=re.compile(r"^#1 ·")).first
    first.wait_for()
    captions = [page.locator('[data-testid="stCaptionContainer"]', has_text=re.compile(rf"^#{rank} ·")).first
                .inner_text() for rank in range(1, 6)]
    assert sum("Sneaker" in c for c in captions) >= 3, captions
    # The crop box (in the component's frame) over the photo, and what the model sees.
    page.frame_locator(CROP_FRAME).locator("#box").wait_for()
    page.get_by_text("What the model sees").wait_for()
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0  # no weak-match notice
    _wait_for_images(page, 6)
    time.sleep(1)  # let the component draw the photo and its box
    page.screenshot(path=str(ARTIFACTS / "search-shopper-photo.png"), full_page=True)

    # The box moved into the photo's corner, onto the bare table: that region holds nothing to search for.
    box = page.frame_locator(CROP_FRAME).locator("#box").bounding_box()
    start = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    _drag(page, start, (start[0] - 2000, start[1] - 2000))  # kept inside the photo: stops at its corner
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for()
    assert "can't be searched: in the chosen region" in error.inner_text() and "blank or uniform" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "search-shopper-photo-empty-region.png"), full_page=True)


def test_the_catalog_page_opens_as_the_first_url_of_a_fresh_server(browser, tiny_shop, tmp_path_factory):
    """Streamlit sees app/pages/ as old-style pages until app/main.py's navigation has run once: the
    served script has no `pages` folder beside it, so even the first session gets the app's pages."""
    server = _serve(tiny_shop.catalog, tiny_shop.model, tiny_shop.catalogs_dir, tmp_path_factory)
    url = next(server)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{url}/catalog", timeout=WAIT_MS)
        page.get_by_role("heading", name="Catalog", exact=True).wait_for()
        nav = page.locator('[data-testid="stSidebarNav"]')
        nav.get_by_role("link", name="Search").wait_for()
        links = nav.get_by_role("link").all_inner_texts()
        assert [link.split()[-1] for link in links] == ["Search", "Catalog", "Quality"], links  # after each icon
        assert "No module named" not in page.locator('[data-testid="stMain"]').inner_text()
        page.screenshot(path=str(ARTIFACTS / "catalog-first-url.png"), full_page=True)
        context.close()
    finally:
        server.close()


def _open_options(page) -> None:
    page.locator('[data-testid="stExpander"] summary', has_text="Search options").click()
    page.get_by_text("One result per product").wait_for()


def test_search_from_a_result_then_one_result_per_product(page, tiny_shop):
    page.set_viewport_size({"width": 1400, "height": 1000})
    photos = [tiny_shop.manifest.parent / p for p in tiny_shop.items["path"]]
    _upload(page, photos[6])  # hats-0-0
    _top_result(page, tiny_shop.items.iloc[6]["title"])
    _wait_for_images(page, 11)
    widths = page.eval_on_selector_all('[data-testid="stMain"] [data-testid="stImage"] img',
                                       "imgs => imgs.map(i => i.getBoundingClientRect().width)")
    assert min(widths[1:]) >= 160, widths  # the result pictures (the query's photo is in its own column)

    # Search from the second result: that catalog item becomes the query, and Back returns to the photo.
    page.get_by_role("button", name="Search from this").nth(1).click()
    page.get_by_text(re.compile(r"^Catalog item \d+$")).wait_for()
    page.get_by_text("Search took").wait_for()
    assert page.get_by_role("button", name=re.compile("^Back to photo")).is_visible()
    page.screenshot(path=str(ARTIFACTS / "search-from-a-result.png"), full_page=True)

    # One result per product: every card a different product, each saying how many of its photos matched.
    _open_options(page)
    page.get_by_text("One result per product").click()
    page.get_by_role("heading", name=re.compile(r"^10 products")).wait_for()
    cards = page.locator('[data-testid="stCaptionContainer"]', has_text=re.compile(r"^#\d+ ·"))
    # Streamlit keeps the previous run's cards on screen until the new run replaces them: wait until
    # no ungrouped card is left (the status widget may not have appeared yet, so it cannot tell).
    expect(cards.filter(has_not_text="photos")).to_have_count(0, timeout=WAIT_MS)
    expect(cards).to_have_count(10, timeout=WAIT_MS)
    captions = cards.all_inner_texts()
    products = [c.split("\n")[0].split(" · ", 1)[1] for c in captions]
    assert len(products) == 10 and len(set(products)) == 10, captions
    assert all("photos" in c for c in captions)
    _wait_for_images(page, 11)
    page.screenshot(path=str(ARTIFACTS / "search-grouped-by-product.png"), full_page=True)



def test_on_a_phone_the_options_are_above_the_results(browser, app_url, tiny_shop):
    context = browser.new_context(viewport={"width": 420, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app_url, timeout=WAIT_MS)
    page.get_by_role("heading", name="Find similar products").wait_for()
    _upload(page, tiny_shop.manifest.parent / tiny_shop.items.iloc[6]["path"])
    _top_result(page, tiny_shop.items.iloc[6]["title"])
    options = page.locator('[data-testid="stExpander"]', has_text="Search options").first
    results = page.get_by_role("heading", name=re.compile(r"^10 matches"))
    assert options.is_visible() and options.bounding_box()["y"] < results.bounding_box()["y"]
    assert options.bounding_box()["x"] >= 0 and options.bounding_box()["width"] <= 420  # in the page, not a sidebar
    _open_options(page)
    page.screenshot(path=str(ARTIFACTS / "search-phone-width.png"), full_page=True)
    context.close()


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at `start`, move to `end` in ten steps (as a hand moves), release."""
    page.mouse.move(*start)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(start[0] + step * (end[0] - start[0]) / 10, start[1] + step * (end[1] - start[1]) / 10)
    page.mouse.up()


def _searches(url: str) -> int:
    """Searches the served app has run so far (its log says `search:` for each)."""
    return LOGS[url].read_text().count("app.search: search:")


def _idle(page) -> None:
    page.wait_for_timeout(300)  # a rerun starts a moment after the event that causes it
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")


def test_a_corner_of_a_whole_photo_box_drags_and_the_drag_searches_once(page, app_url, tmp_path):
    from PIL import Image

    y, x = np.mgrid[0:300, 0:400]  # a pattern to the edges: the automatic region is the whole photo
    stripes = np.stack([(x // 20 % 2) * 200 + 30, (y // 25 % 2) * 180 + 40, ((x + y) // 30 % 2) * 150 + 60], -1)
    photo = tmp_path / "pattern.png"
    Image.fromarray(stripes.astype(np.uint8)).save(photo)
    _upload(page, photo)
    page.get_by_text("Search took").wait_for()
    frame = page.frame_locator(CROP_FRAME)
    page.wait_for_function(f"""() => {{ const f = document.querySelector('{CROP_FRAME}');
        const i = f && f.contentDocument && f.contentDocument.getElementById('image');
        return i && i.complete && i.naturalWidth > 0 && f.getBoundingClientRect().height > 200; }}""")
    _idle(page)
    column = page.locator(CROP_FRAME).bounding_box()
    shown = frame.locator("#image").bounding_box()
    assert shown["width"] >= 400 and shown["width"] >= column["width"] - 2 * 12 - 1, (shown, column)  # as wide as the column
    box = frame.locator("#box").bounding_box()
    assert abs(box["width"] - shown["width"]) <= 1 and abs(box["height"] - shown["height"]) <= 1  # the whole photo
    corner = frame.locator(".handle.br").bounding_box()
    assert column["x"] <= corner["x"] and corner["x"] + corner["width"] <= column["x"] + column["width"]
    assert column["y"] <= corner["y"] and corner["y"] + corner["height"] <= column["y"] + column["height"]
    page.screenshot(path=str(ARTIFACTS / "search-crop-box-whole-photo.png"), full_page=True)

    before = _searches(app_url)
    grab = (corner["x"] + corner["width"] / 2, corner["y"] + corner["height"] / 2)
    _drag(page, grab, (grab[0] - shown["width"] / 4, grab[1] - shown["height"] / 4))  # to 3/4 of each side
    region = page.get_by_text(re.compile(r"searching \d+,\d+ – \d+,\d+ of 400 × 300 px"))
    region.wait_for()
    x0, y0, x1, y1 = map(int, re.search(r"searching (\d+),(\d+) – (\d+),(\d+)", region.inner_text()).groups())
    assert (x0, y0) == (0, 0) and abs(x1 - 300) <= 4 and abs(y1 - 225) <= 4, (x0, y0, x1, y1)
    _idle(page)
    assert _searches(app_url) == before + 1  # one search for the drag, not one per move
    page.screenshot(path=str(ARTIFACTS / "search-crop-box-dragged.png"), full_page=True)


def test_at_phone_width_the_first_screen_shows_the_best_results(browser, app_url, tiny_shop):
    context = browser.new_context(viewport={"width": 420, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app_url, timeout=WAIT_MS)
    page.get_by_role("heading", name="Find similar products").wait_for()
    _upload(page, tiny_shop.manifest.parent / tiny_shop.items.iloc[6]["path"])
    _top_result(page, tiny_shop.items.iloc[6]["title"])
    _wait_for_images(page, 2)
    _idle(page)
    page.evaluate("window.scrollTo(0, 0)")
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text=re.compile(r"^#1 ·")).first.bounding_box()
    # The best match's picture (the last one above its caption) wholly on the first screen, its caption starting on it.
    picture = page.evaluate("""top => { const above = [...document.querySelectorAll('[data-testid="stMain"] img')]
        .map(i => i.getBoundingClientRect()).filter(r => r.bottom <= top + 1);
        return above.reduce((a, b) => (b.bottom > a.bottom ? b : a), {top: -1, bottom: -1}); }""", caption["y"])
    assert 0 <= picture["top"] and picture["bottom"] <= 800 and caption["y"] < 800, (picture, caption)
    uploader = page.locator('[data-testid="stFileUploader"]').bounding_box()
    assert uploader["y"] > caption["y"]  # the photo and its box come after the results
    page.screenshot(path=str(ARTIFACTS / "search-phone-first-screen.png"))
    context.close()
