"""The Catalog page as a catalog manager uses it: browse and remove with a confirmation, undo,
upload photos or a zip to add (every bad entry listed), and the role gate over all of it."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app.browse import Filters, filter_items
from app.uploads import MAX_ZIP_ENTRIES, UploadError, stage_uploads, zip_members
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog
from index.catalog.store import read_info
from tests.support.photos import product_photo, zip_of

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TOKEN = "a-test-token-for-catalog-managers"
# Every widget this page adds that changes the catalog.
NEW_MANAGEMENT_KEYS = {"browse_remove", "confirm_change", "restore_submit", "upload_files", "upload_category",
                       "upload_submit", "catalog_browse_select_all"}


@pytest.fixture
def shop(tiny_shop, tmp_path, monkeypatch):
    """A private copy of the tiny shop under the data root, with its own catalog, served to a manager."""
    data = tmp_path / "data"
    shutil.copytree(tiny_shop.manifest.parent, data / "shop")
    catalog = tmp_path / "catalogs" / "shop"
    build_catalog(data / "shop" / "manifest.csv", tiny_shop.model, catalog, progress=False)
    monkeypatch.setenv("COINSP_CATALOG", str(catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_DATA_ROOT", str(data))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    return {"data": data, "catalog": catalog, "images": data / "shop"}


def manager() -> AppTest:
    from app.roles import SIGNED_IN_KEY, token_digest

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[SIGNED_IN_KEY] = token_digest(TOKEN)
    at.run()
    at.switch_page("pages/catalog.py").run()
    assert not at.exception, at.exception
    return at


def items_metric(at: AppTest) -> str:
    return {m.label: m.value for m in at.metric}["Items"]


def no_errors(at: AppTest) -> None:
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])


# ---------------------------------------------------------------- browse and remove

def test_the_browser_filters_by_category_metadata_and_text():
    items = pd.DataFrame({"id": [0, 1, 2, 3], "path": ["a/red-1.png", "a/blue-2.png", "b/red-3.png", "b/x.png"],
                          "category": ["bags", "bags", "hats", "hats"], "colour": ["red", "blue", "red", "green"]})
    assert filter_items(items, Filters(category="bags"))["id"].tolist() == [0, 1]
    assert filter_items(items, Filters(column="colour", value="red"))["id"].tolist() == [0, 2]
    assert filter_items(items, Filters(category="hats", column="colour", value="red"))["id"].tolist() == [2]
    assert filter_items(items, Filters(text="BLUE"))["id"].tolist() == [1]  # any column, any case
    assert filter_items(items, Filters(text="nothing like it")).empty


def test_browse_select_and_remove_waits_for_the_confirmation(shop):
    at = manager()
    version = read_info(shop["catalog"])["version"]
    at.selectbox(key="catalog_browse_category").set_value("bags").run()
    assert "6 of 24 items match" in " ".join(c.value for c in at.caption)
    picked = [cb for cb in at.checkbox if cb.key and cb.key.startswith("catalog_browse_pick_")][:2]
    assert len(picked) == 2
    ids = sorted(int(cb.key.rsplit("_", 1)[1]) for cb in picked)
    for cb in picked:
        cb.check().run()
    at.button(key="browse_remove").click().run()
    no_errors(at)
    assert "Remove 2 items" in at.warning[0].value
    assert len(at.image) >= 1  # the photos to be removed are shown with the question
    assert read_info(shop["catalog"])["version"] == version  # nothing changed before the confirmation

    at.button(key="cancel_change").click().run()
    assert read_info(shop["catalog"])["version"] == version and items_metric(at) == "24"

    at.button(key="browse_remove").click().run()  # the selection survived the cancel
    at.button(key="confirm_change").click().run()
    no_errors(at)
    assert "2 removed" in at.success[0].value and items_metric(at) == "22"
    assert not set(ids) & set(Catalog.load(shop["catalog"]).ids.tolist())
    facts = dict(zip(at.table[0].value["fact"], at.table[0].value["value"]))
    assert "it now holds 22" in facts["Why this index"]  # status true after the change
    assert facts["Last change"].startswith("items removed (2 removed) at")


def test_the_browser_filters_stay_through_a_removal_and_its_confirmation(shop):
    at = manager()
    at.selectbox(key="catalog_browse_category").set_value("bags").run()
    at.selectbox(key="catalog_browse_column").set_value("view").run()
    at.selectbox(key="catalog_browse_value").set_value("0").run()
    at.text_input(key="catalog_browse_text").set_value("bags").run()
    at.selectbox(key="catalog_browse_page_size").set_value(12).run()
    assert "3 of 24 items match" in " ".join(c.value for c in at.caption)

    def filters() -> tuple:
        return (at.selectbox(key="catalog_browse_category").value, at.selectbox(key="catalog_browse_column").value,
                at.selectbox(key="catalog_browse_value").value, at.text_input(key="catalog_browse_text").value,
                at.selectbox(key="catalog_browse_page_size").value)

    chosen = ("bags", "view", "0", "bags", 12)
    for step in ("cancel_change", "confirm_change"):
        [cb for cb in at.checkbox if cb.key and cb.key.startswith("catalog_browse_pick_")][0].check().run()
        at.button(key="browse_remove").click().run()
        assert len(at.tabs) == 0 and not at.selectbox  # the confirmation draws no filters
        at.button(key=step).click().run()
        no_errors(at)
        assert filters() == chosen, step
    assert "1 removed" in at.success[0].value
    assert "2 of 23 items match" in " ".join(c.value for c in at.caption)  # the filters apply, not only show
    assert at.session_state["catalog_section"] == "Browse and remove"


def test_the_chosen_tab_stays_after_an_action_and_its_confirmation(shop):
    at = manager()
    at.session_state["catalog_section"] = "Rebuild"
    at.run()
    at.button(key="rebuild_submit").click().run()
    no_errors(at)
    assert at.success[0].value.startswith("Rebuild: 24 items")
    assert at.session_state["catalog_section"] == "Rebuild"

    at.session_state["catalog_section"] = "Undo"
    at.run()
    at.text_area(key="remove_lines").set_value("3\n")
    at.button(key="remove_submit").click().run()
    assert len(at.tabs) == 0  # the confirmation stands alone
    at.button(key="confirm_change").click().run()
    no_errors(at)
    assert "1 removed" in at.success[0].value and at.session_state["catalog_section"] == "Undo"


@pytest.mark.parametrize("typed, says", [
    ("99999999999999999999999", "is not an item id of this catalog: ids go up to 9223372036854775807"),
    ("²", "is not an item id: ids are written with the digits 0-9"),
])
def test_an_id_that_cannot_be_one_is_a_one_line_error_and_nothing_waits(shop, typed, says):
    at = manager()
    at.text_area(key="remove_lines").set_value(f"3\n{typed}\n")
    at.button(key="remove_submit").click().run()
    assert not at.exception and [e.value for e in at.error] == [f"{typed} {says}"]
    assert len(at.tabs) > 0 and items_metric(at) == "24"  # no confirmation asked for, nothing removed


@pytest.mark.parametrize("typed, says", [
    ("shop/a\x00b", "is not a usable path (it holds a NUL character)"),
    ("shop/" + "a" * 5000, "is not a usable path (File name too long)"),
])
def test_a_folder_that_cannot_be_a_path_is_a_one_line_error(shop, typed, says):
    at = manager()
    at.text_input(key="add_source").set_value(str(shop["data"] / typed))
    at.button(key="add_submit").click().run()
    assert not at.exception and len(at.error) == 1 and says in at.error[0].value
    assert len(at.error[0].value) < 400 and items_metric(at) == "24"


# ---------------------------------------------------------------- undo

def test_restore_the_previous_version_after_a_confirmation(shop):
    at = manager()
    at.text_area(key="remove_lines").set_value("0\n1\n")
    at.button(key="remove_submit").click().run()
    at.button(key="confirm_change").click().run()
    no_errors(at)
    assert items_metric(at) == "22"
    at.button(key="restore_submit").click().run()
    assert "Restore the previous version" in at.warning[0].value and items_metric(at) == "22"
    at.button(key="confirm_change").click().run()
    no_errors(at)
    assert items_metric(at) == "24" and len(Catalog.load(shop["catalog"])) == 24


# ---------------------------------------------------------------- upload to add

def test_upload_adds_the_good_photos_and_lists_every_bad_one(shop):
    at = manager()
    archive = zip_of({"front.jpg": product_photo((200, 30, 30), "JPEG"), "../escape.png": product_photo((1, 2, 3)),
                         "notes.txt": b"not a photo"})
    at.file_uploader(key="upload_files").set_value([
        ("side.png", product_photo((30, 200, 30)), "image/png"),
        ("broken.jpg", b"\xff\xd8\xff not really a jpeg", "image/jpeg"),
        ("more.zip", archive, "application/zip"),
    ])
    at.text_input(key="upload_category").set_value("scarves")
    at.text_input(key="upload_product").set_value("scarf-9")
    at.button(key="upload_submit").click().run()
    no_errors(at)
    assert "2 added" in at.success[0].value and items_metric(at) == "26"
    listed = " ".join(str(df.value) for df in at.dataframe)
    for bad in ("broken.jpg", "more.zip/../escape.png", "more.zip/notes.txt"):
        assert bad in listed
    added = Catalog.load(shop["catalog"]).metadata.tail(2)
    assert added["category"].tolist() == ["scarves", "scarves"] and set(added["product_id"]) == {"scarf-9"}
    uploads = [p for p in (shop["catalog"] / "photos").rglob("*") if p.is_file()]
    assert len(uploads) == 2 and set(map(str, uploads)) == set(Catalog.load(shop["catalog"]).metadata["image_path"].tail(2))
    assert not (shop["images"] / "uploads").exists()  # kept in the catalog folder, not the store's image folder
    assert not (shop["data"] / "escape.png").exists() and not (shop["images"] / "escape.png").exists()


def test_upload_without_a_category_adds_nothing(shop):
    at = manager()
    at.file_uploader(key="upload_files").set_value([("side.png", product_photo((30, 200, 30)), "image/png")])
    at.button(key="upload_submit").click().run()
    assert "Nothing was added: give a category" in at.error[0].value and items_metric(at) == "24"


def test_zip_with_too_many_entries_is_refused_whole_before_extracting(tmp_path):
    bomb = zip_of({f"p{i}.png": b"x" for i in range(MAX_ZIP_ENTRIES + 1)})
    with pytest.raises(UploadError, match="more than the"):
        zip_members("bomb.zip", bomb)
    with pytest.raises(UploadError, match="more than the"):
        stage_uploads([("bomb.zip", bomb)], tmp_path, "bags")
    assert not (tmp_path / "uploads").exists()


def test_zip_whose_entries_expand_too_far_is_refused(tmp_path, monkeypatch):
    import app.uploads

    monkeypatch.setattr(app.uploads, "MAX_UPLOAD_BYTES", 1 << 20)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("zeros.png", b"\0" * (2 << 20))  # 2 MiB of zeros in a few KiB
    assert len(out.getvalue()) < 20_000
    with pytest.raises(UploadError, match="uncompressed"):
        zip_members("zeros.zip", out.getvalue())


def test_zip_names_outside_the_folder_and_links_are_refused_one_by_one():
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (0o120777 << 16)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        bundle.writestr("ok.png", product_photo((9, 9, 9)))
        bundle.writestr("/etc/evil.png", product_photo((9, 9, 9)))
        bundle.writestr("C:/evil.png", product_photo((9, 9, 9)))
        bundle.writestr("a/../../evil.png", product_photo((9, 9, 9)))
        bundle.writestr(link, "/etc/passwd")
    good, bad = zip_members("z.zip", out.getvalue())
    assert [name for name, _ in good] == ["z.zip/ok.png"]
    assert {name for name, _ in bad} == {"z.zip//etc/evil.png", "z.zip/C:/evil.png", "z.zip/a/../../evil.png",
                                         "z.zip/link.png"}


# ---------------------------------------------------------------- the role gate

def test_without_the_token_none_of_these_actions_is_offered(shop, monkeypatch):
    monkeypatch.delenv("COINSP_ADMIN_TOKEN")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/catalog.py").run()
    assert not at.exception
    keys = {w.key for kind in ("button", "checkbox", "text_input", "file_uploader", "selectbox")
            for w in getattr(at, kind) if w.key}
    assert not keys & NEW_MANAGEMENT_KEYS and not any(k.startswith("catalog_browse") for k in keys)
    assert "Catalog management is off" in at.info[0].value


def test_signed_out_with_the_token_set_nothing_is_offered_either(shop):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/catalog.py").run()
    keys = {w.key for kind in ("button", "checkbox", "text_input", "file_uploader") for w in getattr(at, kind) if w.key}
    assert keys & NEW_MANAGEMENT_KEYS == set() and "manager_token" in keys


# ---------------------------------------------------------------- which model serves a store's photos

def test_small_grey_photos_get_the_kept_model_and_colour_photos_do_not(tmp_path):
    from app.store_catalog import small_grey_photos

    grey, colour = [], []
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(tmp_path / f"g{i}.png")
        grey.append(tmp_path / f"g{i}.png")
        (tmp_path / f"c{i}.jpg").write_bytes(product_photo((200, 40, 40), "JPEG"))
        colour.append(tmp_path / f"c{i}.jpg")
    assert small_grey_photos(grey)
    assert not small_grey_photos(colour) and not small_grey_photos(grey + colour)


def test_heic_and_avif_store_photos_are_looked_at_and_a_damaged_one_is_skipped(tmp_path):
    """In a fresh process, as `./run.sh --images` decides: iPhone photos are colour photos, not unreadable ones."""
    import subprocess
    import sys

    from tests.support.heic_files import heic

    colour = Image.open(io.BytesIO(product_photo((200, 40, 40)))).convert("RGB")
    (tmp_path / "c.heic").write_bytes(heic(colour))
    colour.save(tmp_path / "c.avif")
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(tmp_path / "g.png")
    Image.new("L", (28, 28), 90).save(tmp_path / "damaged.avif")
    data = (tmp_path / "damaged.avif").read_bytes()
    at = data.index(b"pitm") + 8  # names a primary image the file does not have
    (tmp_path / "damaged.avif").write_bytes(data[:at] + b"\x00\x63" + data[at + 2:])
    script = ("import sys; from pathlib import Path; from app.store_catalog import small_grey_photos as grey\n"
              "folder = Path(sys.argv[1])\n"
              "print(grey([folder / 'c.heic']), grey([folder / 'c.avif']), grey([folder / 'g.png', folder / 'damaged.avif']))")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False", "True"]


def test_the_page_says_which_model_serves_why_and_how_to_train_a_better_one(shop):
    at = manager()
    said = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Serving model:" in said and "not trained on this catalog's categories" in said
    assert any("python -m training --train-manifest" in c.value and "efficientnet_lite0" in c.value for c in at.code)


def test_frozen_imagenet_features_are_named_as_such():
    from app.store_catalog import serving_story

    frozen = {"backbone": {"name": "efficientnet_lite0"}, "preprocessing": {"size": 224, "channels": 3},
              "config": {"epochs": 0, "pretrained": "imagenet", "train_manifest": "x/seed.csv"}}
    story = serving_story(frozen, "data/shop/manifest.csv", 1000)
    assert "frozen ImageNet features" in story.model and "no model has been trained" in story.why
    assert "--train-manifest data/shop/manifest.csv" in story.train_command


@pytest.mark.parametrize("args, says", [([], "usage: ./run.sh --images FOLDER"),
                                        (["/no/such/folder"], "no such folder or manifest")])
def test_run_sh_images_needs_an_existing_folder(args, says):
    import subprocess

    done = subprocess.run(["bash", str(Path(APP).parents[1] / "run.sh"), "--images", *args], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0 and says in done.stderr
