"""Photos saved for uploads are deleted once no catalog version names them, and only they: a removal
stays undoable with its photos on disk, and a store's own images are never deleted."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from app.uploads import add_uploads, stage_uploads
from index.add import add_to_catalog
from index.catalog import Catalog
from index.operations import build_catalog, remove_from_catalog, restore_catalog
from index.store import CatalogLockedError, catalog_lock, discard_unadded_uploads, list_versions
from index.uploaded_files import UPLOAD_MARK, saved_upload, uploads_to_delete
from conftest import product_photo, zip_of  # noqa: E402


@pytest.fixture
def shop(tiny_shop, tmp_path):
    """A copy of the tiny shop whose own images include a folder the store itself named uploads/."""
    images = tmp_path / "data" / "shop"
    shutil.copytree(tiny_shop.manifest.parent, images)
    own = images / "uploads" / "spring"  # the store's folder, not one an upload made: no mark
    own.mkdir(parents=True)
    (own / "own.png").write_bytes(product_photo((10, 120, 200)))
    rows = pd.concat([tiny_shop.items, pd.DataFrame([{"path": "uploads/spring/own.png", "category": "tops",
                                                      "product_id": "tops-9", "title": "Own", "view": 0}])])
    rows.to_csv(images / "manifest.csv", index=False)
    catalog = tmp_path / "catalogs" / "shop"
    build_catalog(images / "manifest.csv", tiny_shop.model, catalog, progress=False)
    return images, catalog


def upload_and_add(images, catalog) -> list:
    archive = zip_of({"shoe-123/front.png": product_photo((200, 30, 30)), "shoe-123/side.png": product_photo((190, 40, 30))})
    staged = stage_uploads([("new.zip", archive)], images, "shoes")
    add_to_catalog(catalog, manifest=staged.manifest, progress=False)
    return [staged.folder / name for name in ("shoe-123-front.png", "shoe-123-side.png")]


def ids_of(catalog, prefix: str) -> list[int]:
    metadata = Catalog.load(catalog).metadata
    return metadata.loc[metadata["path"].str.startswith(prefix), "id"].tolist()


def test_removed_uploads_stay_while_restorable_and_go_with_the_last_version_naming_them(shop):
    images, catalog = shop
    saved = upload_and_add(images, catalog)
    assert all(f.is_file() for f in saved) and len(ids_of(catalog, "uploads/2")) == 2

    remove_from_catalog(catalog, ids=ids_of(catalog, "uploads/2"), progress=False)
    assert ids_of(catalog, "uploads/2") == []
    assert all(f.is_file() for f in saved)  # the previous version names them: the removal can be undone

    restore_catalog(catalog)  # undo: the photos are there for the restored items
    assert len(ids_of(catalog, "uploads/2")) == 2 and all(f.is_file() for f in saved)
    restore_catalog(catalog)  # redo the removal
    assert ids_of(catalog, "uploads/2") == [] and all(f.is_file() for f in saved)

    # One more change: the version that named the uploads is cleaned up, and with it the photos.
    store_item = ids_of(catalog, "images/bags-0-0")
    remove_from_catalog(catalog, ids=store_item, progress=False)
    assert len(list_versions(catalog)) == 2
    assert not any(f.exists() for f in saved)
    assert not saved[0].parent.exists()  # the emptied batch folder (its mark and manifest) goes too
    assert (images / "images" / "bags-0-0.jpg").is_file()  # the store's own image, though removed


def test_a_store_image_in_its_own_uploads_folder_is_never_deleted(shop):
    images, catalog = shop
    own = images / "uploads" / "spring" / "own.png"
    remove_from_catalog(catalog, ids=ids_of(catalog, "uploads/spring"), progress=False)
    remove_from_catalog(catalog, ids=ids_of(catalog, "images/bags-0-0"), progress=False)
    remove_from_catalog(catalog, ids=ids_of(catalog, "images/bags-0-1"), progress=False)
    assert ids_of(catalog, "uploads/spring") == [] and own.is_file()
    assert all((images / p).is_file() for p in Catalog.load(catalog).metadata["path"])


def test_uploads_still_in_the_catalog_are_kept_through_every_change(shop):
    images, catalog = shop
    saved = upload_and_add(images, catalog)
    for prefix in ("images/bags-0-0", "images/bags-0-1", "images/hats-0-0"):
        remove_from_catalog(catalog, ids=ids_of(catalog, prefix), progress=False)
    assert all(f.is_file() for f in saved) and len(ids_of(catalog, "uploads/2")) == 2


def test_an_upload_another_catalog_over_the_same_images_names_is_kept_until_neither_does(shop, tiny_shop):
    images, catalog = shop
    other = catalog.parent / "other-model"  # a second catalog over the same image folder
    build_catalog(images / "manifest.csv", tiny_shop.model_b, other, progress=False)
    saved = upload_and_add(images, catalog)
    add_to_catalog(other, manifest=saved[0].parent / "manifest.csv", progress=False)
    for prefix in ("uploads/2", "images/bags-0-0", "images/bags-0-1"):
        remove_from_catalog(catalog, ids=ids_of(catalog, prefix), progress=False)
    assert all(f.is_file() for f in saved) and len(ids_of(other, "uploads/2")) == 2  # the other catalog's

    for prefix in ("uploads/2", "images/bags-0-0", "images/bags-0-1"):
        remove_from_catalog(other, ids=ids_of(other, prefix), progress=False)
    assert not any(f.exists() for f in saved)


def staged_zip(images, photos: dict[str, bytes]):
    return stage_uploads([("new.zip", zip_of(photos))], images, "shoes")


def test_uploaded_photos_the_add_leaves_out_are_deleted_and_the_added_ones_kept(shop):
    images, catalog = shop
    staged = staged_zip(images, {"shoe-1/front.png": product_photo((200, 30, 30)), "shoe-1/side.png": product_photo((190, 40, 30)),
                                 "shoe-2/front.png": product_photo((30, 30, 200))})
    damaged = staged.folder / "shoe-2-front.png"
    damaged.write_bytes(b"\x89PNG cut short")  # saved, then unreadable when the add embeds it
    report = add_uploads(catalog, staged, progress=False)
    assert report.added == 2 and [Path(p).name for p, _ in report.skipped] == [damaged.name]
    assert not damaged.exists()
    named = Catalog.load(catalog).metadata["image_path"].map(Path)
    added = [staged.folder / "shoe-1-front.png", staged.folder / "shoe-1-side.png"]
    assert all(f.is_file() for f in added) and set(added) <= set(named)
    assert (staged.folder / UPLOAD_MARK).is_file()  # still the upload's: deleted with the last version naming it


def test_an_upload_the_add_takes_nothing_from_leaves_no_folder_behind(shop):
    images, catalog = shop
    staged = staged_zip(images, {"a.png": product_photo((200, 30, 30)), "b.png": product_photo((30, 200, 30))})
    for name in ("a.png", "b.png"):
        (staged.folder / name).write_bytes(b"not a photo any more")
    report = add_uploads(catalog, staged, progress=False)
    assert report.added == 0 and len(report.skipped) == 2
    assert not staged.folder.exists()
    assert (images / "uploads" / "spring" / "own.png").is_file()  # the store's own uploads/ folder is untouched


def test_an_upload_whose_add_fails_leaves_no_folder_behind(shop):
    images, catalog = shop
    staged = staged_zip(images, {"a.png": product_photo((200, 30, 30))})
    with catalog_lock(catalog, "rebuild"), pytest.raises(CatalogLockedError):
        add_uploads(catalog, staged, progress=False)
    assert not staged.folder.exists()


def test_only_an_upload_batch_no_other_catalog_claims_is_cleaned_after_its_add(shop, tiny_shop):
    images, catalog = shop
    own = images / "uploads" / "spring"  # no mark: the store's own files, whatever the catalog names
    (own / "stray.png").write_bytes(product_photo((1, 2, 3)))
    assert discard_unadded_uploads(catalog, own) == [] and (own / "stray.png").is_file()

    other = catalog.parent / "other-model"  # another catalog names a photo of the batch: it decides, not this one
    build_catalog(images / "manifest.csv", tiny_shop.model_b, other, progress=False)
    staged = staged_zip(images, {"a.png": product_photo((200, 30, 30)), "b.png": product_photo((30, 200, 30))})
    add_to_catalog(other, manifest=staged.manifest, progress=False)
    assert discard_unadded_uploads(catalog, staged.folder) == []
    assert (staged.folder / "a.png").is_file() and (staged.folder / "b.png").is_file()


def test_only_marked_batch_folders_hold_deletable_uploads(tmp_path):
    batch = tmp_path / "uploads" / "20250101-000000-abcdef"
    batch.mkdir(parents=True)
    (batch / "a.png").write_bytes(b"x")
    (tmp_path / "uploads" / "plain").mkdir()
    assert saved_upload(tmp_path, "uploads/20250101-000000-abcdef/a.png") is None  # not marked
    (batch / UPLOAD_MARK).write_text("")
    assert saved_upload(tmp_path, "uploads/20250101-000000-abcdef/a.png") == batch / "a.png"
    for elsewhere in ("uploads/plain/a.png", "images/a.png", "uploads/a.png", "uploads/../uploads/x/a.png"):
        assert saved_upload(tmp_path, elsewhere) is None
    root = str(tmp_path)
    dropped = [(root, ["images/a.png", "uploads/20250101-000000-abcdef/a.png"])]
    assert uploads_to_delete(dropped, [(root, ["images/a.png"])]) == [batch / "a.png"]
    assert uploads_to_delete(dropped, [(root, ["uploads/20250101-000000-abcdef/a.png"])]) == []
