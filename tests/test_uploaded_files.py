"""Photos saved for uploads are deleted once no catalog version names them, and only they: a removal
stays undoable with its photos on disk, and a store's own images are never deleted."""
from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app.uploads import stage_uploads
from index.add import add_to_catalog
from index.catalog import Catalog
from index.operations import build_catalog, remove_from_catalog, restore_catalog
from index.store import list_versions
from index.uploaded_files import UPLOAD_MARK, saved_upload, uploads_to_delete


def photo(colour: tuple[int, int, int]) -> bytes:
    pixels = np.full((48, 48, 3), 240, np.uint8)
    pixels[8:40, 12:36] = colour
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def shop(tiny_shop, tmp_path):
    """A copy of the tiny shop whose own images include a folder the store itself named uploads/."""
    images = tmp_path / "data" / "shop"
    shutil.copytree(tiny_shop.manifest.parent, images)
    own = images / "uploads" / "spring"  # the store's folder, not one an upload made: no mark
    own.mkdir(parents=True)
    (own / "own.png").write_bytes(photo((10, 120, 200)))
    rows = pd.concat([tiny_shop.items, pd.DataFrame([{"path": "uploads/spring/own.png", "category": "tops",
                                                      "product_id": "tops-9", "title": "Own", "view": 0}])])
    rows.to_csv(images / "manifest.csv", index=False)
    catalog = tmp_path / "catalogs" / "shop"
    build_catalog(images / "manifest.csv", tiny_shop.model, catalog, progress=False)
    return images, catalog


def upload_and_add(images, catalog) -> list:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("shoe-123/front.png", photo((200, 30, 30)))
        bundle.writestr("shoe-123/side.png", photo((190, 40, 30)))
    staged = stage_uploads([("new.zip", archive.getvalue())], images, "shoes")
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
