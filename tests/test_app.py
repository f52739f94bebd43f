"""The Streamlit app, page by page, with Streamlit's AppTest (no browser) on the tiny shop."""
from __future__ import annotations

import io
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.support.heic_files import heic
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog
from index.quality.evaluation import recall_at_k

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 60
MANAGER_TOKEN = "a-test-token-for-catalog-managers"


@pytest.fixture(autouse=True)
def catalog_manager(monkeypatch, tmp_path_factory):
    """These tests use the app as a catalog manager (tests/test_app_roles.py: as a shopper), over
    files in pytest's temporary folders."""
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", MANAGER_TOKEN)
    monkeypatch.setenv("COINSP_DATA_ROOT", str(tmp_path_factory.getbasetemp()))


def start(page: str | None = None) -> AppTest:
    from app.roles import SIGNED_IN_KEY, token_digest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[SIGNED_IN_KEY] = token_digest(MANAGER_TOKEN)  # signed in (the form: test_app_roles.py)
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
    return at


def result_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("**#")]


def result_ids(at: AppTest) -> list[int]:
    """The results' catalog ids, in order (from each card's *Search from this* button)."""
    return [int(b.key.removeprefix("search_from_")) for b in at.button if str(b.key).startswith("search_from_")]


def catalog_id_of(shop, row: int) -> int:
    meta = Catalog.load(shop.catalog).metadata
    return int(meta.loc[meta["path"] == shop.items.iloc[row]["path"], "id"].iloc[0])


# ---------------------------------------------------------------- Search

def test_search_by_upload_finds_the_same_item_first(tiny_shop_env):
    shop = tiny_shop_env
    at = start()
    assert at.title[0].value == "Find similar products"
    for row in (0, 1, 2, 3):  # JPEG, RGBA PNG, WebP, palette PNG
        name = Path(shop.items.iloc[row]["path"]).name
        at.file_uploader(key="search_upload").set_value((name, shop.image_bytes(row), "image/png")).run()
        assert not at.exception and not at.error, (at.exception, at.error)
        captions = result_captions(at)
        assert len(captions) == 10
        assert result_ids(at)[0] == catalog_id_of(shop, row)
        assert "score **1.000**" in captions[0] and any(f"File: `{name}`" in m.value for m in at.markdown)
    assert any("Search took" in c.value for c in at.caption)
    # HEIC (iPhones) and AVIF, at full colour resolution: the random model tells views apart by fine detail
    photo, avif = Image.open(io.BytesIO(shop.image_bytes(4))).convert("RGB"), io.BytesIO()
    photo.save(avif, "AVIF", quality=100, subsampling="4:4:4")
    for name, data in (("IMG_0004.HEIC", heic(photo, quality=95, chroma=444)), ("item-4.avif", avif.getvalue())):
        at.file_uploader(key="search_upload").set_value((name, data, "image/heic")).run()
        assert not at.exception and not at.error, (name, at.exception, at.error)
        assert result_ids(at)[0] == catalog_id_of(shop, 4)
        score = float(re.search(r"score \*\*([0-9.]+)\*\*", result_captions(at)[0]).group(1))
        assert score > 0.95, (name, score)  # the same photo, not the same bytes


def test_search_by_catalog_item_category_filter_and_options(tiny_shop_env):
    shop = tiny_shop_env
    at = start()
    at.radio(key="search_mode").set_value("Pick a catalog item").run()
    item = catalog_id_of(shop, 4)
    at.selectbox(key="search_item").set_value(item).run()
    captions = result_captions(at)
    assert len(captions) == 10 and item not in result_ids(at)  # never the item itself

    at.selectbox(key="search_category").set_value("shoes").run()
    captions = result_captions(at)
    assert 1 <= len(captions) <= 6 and all(":gray-badge[shoes]" in c for c in captions)
    assert at.subheader[0].value.endswith("in shoes")

    at.slider(key="search_k").set_value(3).run()
    at.toggle(key="search_hide_duplicates").set_value(True).run()
    at.toggle(key="search_why").set_value(True).run()
    assert not at.exception
    captions = result_captions(at)
    assert 1 <= len(captions) <= 3
    assert len(at.image) == 1 + len(captions)  # the query and its matches, with overlays


def test_big_catalogs_pick_items_by_id(tiny_shop_env, monkeypatch):
    import app.components

    monkeypatch.setattr(app.components, "PICKER_MAX_ITEMS", 5)  # the tiny shop counts as big
    at = start()
    at.radio(key="search_mode").set_value("Pick a catalog item").run()
    at.number_input(key="search_item").set_value(7).run()
    assert not at.exception and len(result_captions(at)) == 10
    assert any(c.value == "Catalog item 7" for c in at.caption)
    at.switch_page("pages/catalog.py").run()
    assert not at.exception and len(at.multiselect) == 0 and at.text_area(key="remove_lines")


@pytest.mark.parametrize("name, data, words", [
    ("broken.jpg", None, "corrupt"),
    ("notes.png", b"just some text, not a picture", "not a readable image"),
    ("empty.webp", b"", "empty"),
])
def test_bad_upload_shows_a_message_and_the_app_keeps_working(tiny_shop_env, name, data, words):
    shop = tiny_shop_env
    at = start()
    at.slider(key="search_k").set_value(5).run()
    data = shop.corrupt_image.read_bytes() if data is None else data
    at.file_uploader(key="search_upload").set_value((name, data, "image/jpeg")).run()
    assert not at.exception
    assert len(at.error) == 1 and name in at.error[0].value and words in at.error[0].value
    assert result_captions(at) == []
    # The app is still up and keeps its state: the next photo is searched with k = 5.
    at.file_uploader(key="search_upload").set_value(("ok.png", shop.image_bytes(5), "image/png")).run()
    assert not at.error and len(result_captions(at)) == 5
    assert result_ids(at)[0] == catalog_id_of(shop, 5)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims a huge image (a decompression bomb), without its pixels."""
    import struct
    import zlib
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str) -> bytes:
    import io
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_search_accepts_any_size_and_colour_mode(tiny_shop_env):
    shop = tiny_shop_env
    photo = Image.open(shop.manifest.parent / shop.items.iloc[9]["path"]).convert("RGB")
    uploads = {
        "big.jpg": _encoded(photo.resize((2400, 1600)).convert("CMYK"), "JPEG"),
        "grey16.png": _encoded(Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257)), "PNG"),
        "alpha.webp": _encoded(photo.convert("RGBA"), "WEBP"),
        "small.png": _encoded(photo.resize((20, 20)), "PNG"),
    }
    at = start()
    at.toggle(key="search_why").set_value(True).run()
    for name, data in uploads.items():
        at.file_uploader(key="search_upload").set_value((name, data, "image/png")).run()
        assert not at.exception and not at.error, (name, at.error)
        assert len(result_captions(at)) == 10
    at.file_uploader(key="search_upload").set_value(("bomb.png", _png_claiming(9_000, 6_000), "image/png")).run()
    assert "image too large" in at.error[0].value


@pytest.mark.parametrize("name, image, words", [
    ("blank.png", Image.new("RGB", (1, 1), "white"), "too small"),
    ("white.jpg", Image.new("RGB", (800, 600), (250, 250, 250)), "blank or uniform"),
    ("grey-noise.png", Image.fromarray(np.random.default_rng(0).integers(120, 124, (300, 400, 3), dtype=np.uint8)),
     "blank or uniform"),
    ("tiny.png", Image.new("RGB", (8, 8), "black"), "too small"),
])
def test_a_photo_with_nothing_to_search_for_gets_a_message_instead_of_results(tiny_shop_env, name, image, words):
    at = start()
    at.file_uploader(key="search_upload").set_value((name, _encoded(image, "PNG"), "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1 and name in at.error[0].value and words in at.error[0].value
    assert result_captions(at) == [] and not any("Search took" in c.value for c in at.caption)


def fashion_app(fashion_shop, monkeypatch) -> AppTest:
    monkeypatch.setenv("COINSP_CATALOG", str(fashion_shop.catalog))
    monkeypatch.setenv("COINSP_MODEL", str(fashion_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(fashion_shop.catalog.parent))
    return start()


def first_training_item(shop, fine_class: str) -> np.ndarray:
    from index.importers import FASHION_MNIST_CLASSES

    return shop.train_images[int(np.flatnonzero(shop.train_labels == FASHION_MNIST_CLASSES.index(fine_class))[0])]


@pytest.mark.parametrize("fine_class, category", [("Sneaker", "footwear"), ("Trouser", "apparel"), ("Bag", "bags")])
def test_a_shopper_photo_finds_its_product_type_and_shows_the_predicted_category(fashion_shop, monkeypatch,
                                                                                 fine_class, category):
    from tests.support.photos import shopper_photo

    at = fashion_app(fashion_shop, monkeypatch)
    photo = shopper_photo(first_training_item(fashion_shop, fine_class))  # not in the catalog: a training photo
    at.file_uploader(key="search_upload").set_value(("phone.jpg", photo, "image/jpeg")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    captions = result_captions(at)
    assert len(captions) == 10 and sum(f"· {fine_class}" in c for c in captions[:5]) >= 3
    assert any(f"Predicted category: **{category}**" in m.value for m in at.markdown)
    assert not at.warning  # a real match: no weak-match notice
    assert any("What the model sees" in image.proto.imgs[0].caption for image in at.image)


def out_of_catalog_item() -> np.ndarray:
    """A five-pointed star: nothing a clothing catalog holds."""
    from PIL import ImageDraw

    star = Image.new("L", (28, 28), 0)
    angles = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, 11, 5)
    ImageDraw.Draw(star).polygon([(14 + r * np.cos(a), 14 + r * np.sin(a)) for r, a in zip(radii, angles)], fill=255)
    return np.asarray(star)


def test_a_photo_of_something_the_catalog_does_not_hold_gets_the_weak_match_notice(fashion_shop, monkeypatch):
    from tests.support.photos import shopper_photo

    at = fashion_app(fashion_shop, monkeypatch)
    at.file_uploader(key="search_upload").set_value(("star.jpg", shopper_photo(out_of_catalog_item()),
                                                     "image/jpeg")).run()
    assert not at.exception and not at.error
    # The kept model's confidence, fitted on shopper photos, sees a photo unlike anything the catalog sells:
    # the notice says so and no category is named for it.
    assert len(at.warning) == 1 and at.warning[0].value.startswith("No good match")
    assert "does not look like anything this catalog sells" in at.warning[0].value
    assert any("not like anything this catalog sells" in m.value for m in at.markdown)
    assert len(result_captions(at)) == 10  # the closest items are still shown


def test_the_score_threshold_leaves_out_weaker_results_and_says_how_many(fashion_shop, monkeypatch):
    from tests.support.photos import shopper_photo

    at = fashion_app(fashion_shop, monkeypatch)
    at.file_uploader(key="search_upload").set_value(("phone.jpg", shopper_photo(first_training_item(
        fashion_shop, "Sneaker")), "image/jpeg")).run()
    scores = [float(re.search(r"score \*\*([0-9.]+)\*\*", c).group(1)) for c in result_captions(at)]
    # The slider moves in hundredths: the first cut after the 2nd result that one fits in.
    above, threshold = next((n, t) for n in range(2, len(scores))
                            for t in [math.floor(scores[n - 1] * 100) / 100] if scores[n - 1] > t > scores[n])
    at.slider(key="search_min_score").set_value(threshold).run()
    kept = result_captions(at)
    assert len(kept) == above and at.subheader[0].value == f"{above} matches"
    assert any(c.value.startswith(f"{len(scores) - above} result(s) scoring below {threshold:.2f} left out") for c in at.caption)


def test_search_explains_a_missing_catalog(tmp_path, monkeypatch, tiny_shop):
    monkeypatch.setenv("COINSP_CATALOG", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    at = start()
    assert "Search is not available" in at.error[0].value and "Catalog" in at.info[0].value


def test_search_refuses_a_model_that_does_not_fit(tiny_shop, monkeypatch):
    monkeypatch.setenv("COINSP_CATALOG", str(tiny_shop.catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model_b))  # catalog A was built with model A
    at = start()
    assert "not the model this catalog was built with" in at.error[0].value


# ---------------------------------------------------------------- Catalog

def test_catalog_status(tiny_shop_env):
    at = start("catalog")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Items": "24", "Categories": "4", "Index": "Flat", "Skipped files": "1"}
    assert "matches this catalog" in at.success[0].value
    assert any("images/broken.jpg" in str(df.value) for df in at.dataframe)


@pytest.fixture
def tiny_shop_own_catalog(tiny_shop, tmp_path, monkeypatch):
    """A private copy of the shop's images with its own catalog, which a test may change."""
    shop_dir = tmp_path / "shop"
    shutil.copytree(tiny_shop.manifest.parent, shop_dir)
    catalog = tmp_path / "catalogs" / "mine"
    build_catalog(shop_dir / "manifest.csv", tiny_shop.model, catalog, progress=False)
    monkeypatch.setenv("COINSP_CATALOG", str(catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    return shop_dir, catalog


def submit(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    return at


def items_metric(at: AppTest) -> str:
    return {m.label: m.value for m in at.metric}["Items"]


def test_catalog_remove_add_and_rebuild(tiny_shop_own_catalog):
    shop_dir, catalog = tiny_shop_own_catalog
    at = start("catalog")
    at.text_area(key="remove_lines").set_value("0\nimages/bags-0-1.png\n")  # item 0 by id, item 1 by path
    submit(at, "remove_submit")
    submit(at, "confirm_change")  # removing waits for a confirmation (tests/test_catalog_page.py)
    assert "2 removed" in at.success[0].value
    assert items_metric(at) == "22" and len(Catalog.load(catalog)) == 22

    new = shop_dir / "new" / "scarves" / "scarf-1"  # an image folder: category/product/images
    new.mkdir(parents=True)
    for i in range(2):
        pixels = np.full((40, 40, 3), 60 + 90 * i, np.uint8)
        pixels[10:30, 5:35] = (200, 30 * i, 90)
        Image.fromarray(pixels).save(new / f"view-{i}.png")
    (new / "broken.png").write_bytes(b"not a png")
    at.text_input(key="add_source").set_value(str(shop_dir / "new"))
    submit(at, "add_submit")
    assert "2 added" in at.success[0].value and "1 skipped" in at.success[0].value
    assert any("broken.png" in str(df.value) for df in at.dataframe)  # the skipped file, with its reason
    assert items_metric(at) == "24"

    submit(at, "rebuild_submit")
    assert at.success[0].value.startswith("Rebuild: 24 items")


def test_catalog_rebuild_with_another_model_re_embeds_and_search_works_again(tiny_shop_own_catalog, tiny_shop,
                                                                            monkeypatch):
    shop_dir, catalog = tiny_shop_own_catalog
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model_b))  # not the model the catalog was built with
    at = start()
    assert "not the model this catalog was built with" in at.error[0].value
    at.switch_page("pages/catalog.py").run()
    assert "searches are refused" in at.warning[0].value
    assert at.checkbox(key="rebuild_reembed").value is True  # re-embedding is what fixes it
    submit(at, "rebuild_submit")
    assert "matches this catalog" in at.success[1].value
    at.switch_page("pages/search.py").run()
    assert not at.error
    at.file_uploader(key="search_upload").set_value(("a.png", tiny_shop.image_bytes(7), "image/png")).run()
    assert result_ids(at)[0] == catalog_id_of(tiny_shop, 7)


def test_catalog_built_from_a_manifest_when_there_is_none(tiny_shop, tmp_path, monkeypatch):
    monkeypatch.setenv("COINSP_CATALOG", str(tmp_path / "catalogs" / "new"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    at = start("catalog")
    assert "no catalog at" in at.info[0].value
    at.text_input(key="build_manifest").set_value(str(tmp_path / "missing.csv"))
    at.button(key="build_submit").click().run()
    assert not at.exception and "Building failed: manifest not found" in at.error[0].value
    at.text_input(key="build_manifest").set_value(str(tiny_shop.manifest))
    submit(at, "build_submit")
    assert at.success[0].value.startswith("Build: 24 items") and "1 skipped" in at.success[0].value
    assert items_metric(at) == "24"


def test_catalog_bars_move_the_app_progress(tiny_shop, tmp_path):
    """Catalog operations report through one progress callback; the app's moves an st.progress bar."""
    from app import components as ui

    class Bar:  # what st.progress returns: progress(value, text)
        def __init__(self):
            self.calls = []

        def progress(self, value, text=""):
            self.calls.append((value, text))

    seen, bar = [], Bar()
    to_bar = ui.progress_to(bar, "Build")

    def report(stage, done, total):
        seen.append((stage, done, total))
        to_bar(stage, done, total)

    build_catalog(tiny_shop.manifest, tiny_shop.model, tmp_path / "c", progress=report)
    assert ("embedding", 0, 25) in seen and ("embedding", 25, 25) in seen
    assert (0.0, "Build: embedding 0 / 25") in bar.calls and (1.0, "Build: embedding 25 / 25") in bar.calls


# ---------------------------------------------------------------- Quality

def test_quality_report_equals_the_shared_recall_at_k(tiny_shop_env):
    shop = tiny_shop_env
    at = start("quality")
    catalog = Catalog.load(shop.catalog)
    meta = catalog.metadata
    expected = recall_at_k(catalog.embeddings, meta["product_id"].to_numpy(), ks=(1, 2, 4, 8, 10, 100),
                           query_categories=meta["category"].to_numpy())
    table = at.dataframe[0].value.set_index("category")
    for k, value in expected.overall.items():
        assert table.loc["all", f"R@{k}"] == pytest.approx(value)
    for category, row in expected.per_category.iterrows():
        assert table.loc[category, "R@1"] == pytest.approx(row["R@1"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Recall@1"] == f"{expected.overall[1]:.1%}"
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[:2] == ["Download CSV", "Download Markdown"]  # the report; the comparison follows


def shop_recall(folder: Path):
    catalog = Catalog.load(folder)
    return recall_at_k(catalog.embeddings, catalog.metadata["product_id"].to_numpy(), ks=(1, 2, 4, 8, 10, 100))


def test_quality_failure_gallery(mixed_up_shop, tiny_shop, monkeypatch):
    monkeypatch.setenv("COINSP_CATALOG", str(mixed_up_shop / "mixed-a"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(mixed_up_shop))
    at = start("quality")
    summary = next(c.value for c in at.caption if "have another product as their best match" in c.value)
    failed = int(summary.split(" of ")[0])
    expected = round((1 - shop_recall(mixed_up_shop / "mixed-a").overall[1]) * 24)
    assert failed == expected > 0  # every product has two images, so failures = R@1 misses
    gallery = at.tabs[1]
    assert gallery.label == "Failure gallery"
    queries = [c.value for c in gallery.caption if c.value.startswith("**Query**")]
    assert len(queries) == min(failed, 12)
    at.selectbox(key="failures_category").set_value("hats").run()
    assert not at.exception
    queries = [c.value for c in at.tabs[1].caption if c.value.startswith("**Query**")]
    assert queries and all("hats" in q for q in queries)


def test_quality_compares_two_models_side_by_side(tiny_shop_env):
    shop = tiny_shop_env
    at = start("quality")
    assert at.selectbox(key="quality_catalog").value.name == "tiny-a"
    assert at.selectbox(key="compare_other").value.name == "tiny-b"
    table = next(df.value for df in at.dataframe if "tiny-b" in df.value.columns).set_index("k")
    rep_a, rep_b = shop_recall(shop.catalog), shop_recall(shop.catalog_b)
    for k in (1, 2, 4, 8, 10, 100):
        assert table.loc[f"R@{k}", "tiny-a"] == pytest.approx(rep_a.overall[k])
        assert table.loc[f"R@{k}", "tiny-b"] == pytest.approx(rep_b.overall[k])
    at.selectbox(key="compare_queries").set_value("All queries").run()
    assert not at.exception
    headings = [c.value for c in at.caption if c.value in ("**tiny-a**", "**tiny-b**")]
    assert headings[:4] == ["**tiny-a**", "**tiny-b**"] * 2  # each query: model A's results next to model B's


def test_quality_without_product_ids(tiny_shop, tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.csv"
    table = tiny_shop.items.drop(columns="product_id")
    shutil.copytree(tiny_shop.manifest.parent / "images", tmp_path / "images")
    table.to_csv(manifest, index=False)
    build_catalog(manifest, tiny_shop.model, tmp_path / "catalogs" / "no-products", progress=False)
    monkeypatch.setenv("COINSP_CATALOG", str(tmp_path / "catalogs" / "no-products"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    at = start("quality")
    assert "no `product_id` column" in at.info[0].value


# ---------------------------------------------------------------- settings and overlays

def test_settings_come_from_arguments_then_environment_then_defaults(tmp_path):
    from app.settings import load_settings

    defaults = load_settings([], {})
    assert defaults.catalog == Path("catalogs/fashion-mnist-test").absolute()
    assert defaults.model == Path("models/coinsp-fmnist.pt").absolute()
    assert defaults.catalogs_dir == Path("catalogs").absolute() and defaults.device == "cpu"
    env = {"COINSP_CATALOG": str(tmp_path / "shop" / "a"), "COINSP_MODEL": "m.pt"}
    from_env = load_settings(["-k", "whatever"], env)  # other programs' arguments are ignored
    assert from_env.catalog == tmp_path / "shop" / "a" and from_env.catalogs_dir == tmp_path / "shop"
    from_cli = load_settings(["--catalog", "x/b", "--catalogs-dir", "y", "--model", "n.pt"], env)
    assert (from_cli.catalog, from_cli.catalogs_dir, from_cli.model) == (
        Path("x/b").absolute(), Path("y").absolute(), Path("n.pt").absolute())


def test_attention_overlay_tints_hot_areas():
    from app.components import overlay, thumbnail

    image = Image.new("RGB", (60, 40), (128, 128, 128))
    heat = np.zeros((8, 8))
    heat[:, 4:] = 1.0  # the right half is where the model looks
    out = np.asarray(overlay(image, heat), np.int16)
    assert out.shape == (40, 60, 3)
    left, right = out[:, :20], out[:, 40:]
    assert (right[..., 0] - right[..., 2]).mean() > 60  # hot: red
    assert abs(left - 128).mean() < abs(right - 128).mean()  # cold areas keep more of the photo
    assert thumbnail(Image.new("RGB", (28, 28))).size == (224, 224)
    assert thumbnail(Image.new("RGB", (4000, 1000))).size == (224, 56)
