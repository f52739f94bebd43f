"""Uploaded photos live inside the catalog folder (DIR/photos/), named by paths relative to it, so a copy of
the folder is a complete, independent catalog; clean-up deletes only there, and only what no version on
disk names (a removal stays undoable with its photos). Catalogs whose uploads lie below the image folder
(the earlier layout) move them in at their next write."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from app.uploads import add_uploads, stage_uploads
from index.catalog.add import add_to_catalog
from index.catalog.loaded import Catalog
from index.manifest import write_manifest
from index.catalog.operations import build_catalog, remove_from_catalog, restore_catalog
from index.catalog.store import CatalogLockedError, catalog_lock, list_versions
from index.catalog.uploaded_files import CATALOG_PREFIX, LEGACY_MARK, PHOTOS_FOLDER, image_file
from tests.support.photos import product_photo, zip_of

UPLOADED = CATALOG_PREFIX + PHOTOS_FOLDER + "/"


@pytest.fixture
def shop(tiny_shop, tmp_path):
    """A copy of the tiny shop whose own images include a folder the store itself named uploads/."""
    images = tmp_path / "data" / "shop"
    shutil.copytree(tiny_shop.manifest.parent, images)
    own = images / "uploads" / "spring"  # the store's folder: its images are never deleted
    own.mkdir(parents=True)
    (own / "own.png").write_bytes(product_photo((10, 120, 200)))
    rows = pd.concat([tiny_shop.items, pd.DataFrame([{"path": "uploads/spring/own.png", "category": "tops",
                                                      "product_id": "tops-9", "title": "Own", "view": 0}])])
    rows.to_csv(images / "manifest.csv", index=False)
    catalog = tmp_path / "catalogs" / "shop"
    build_catalog(images / "manifest.csv", tiny_shop.model, catalog, progress=False)
    return images, catalog


def photos(count: int, first: int = 0) -> dict[str, bytes]:
    return {f"shoe-{i}/front.png": product_photo(((37 * i) % 250, (91 * i) % 250, 200 - i)) for i in range(first, first + count)}


def upload(catalog: Path, entries: dict[str, bytes]):
    staged = stage_uploads([("new.zip", zip_of(entries))], catalog, "shoes")
    report = add_uploads(catalog, staged, progress=False)
    return staged, report


def ids_of(catalog, prefix: str) -> list[int]:
    metadata = Catalog.load(catalog).metadata
    return metadata.loc[metadata["path"].str.startswith(prefix), "id"].tolist()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_uploaded_photos_are_kept_in_the_catalog_folder_and_named_relative_to_it(shop):
    images, catalog = shop
    staged, report = upload(catalog, photos(3))
    assert report.added == 3 and staged.folder.parent == catalog / PHOTOS_FOLDER
    metadata = Catalog.load(catalog).metadata
    added = metadata[metadata["path"].str.startswith(UPLOADED)]
    assert len(added) == 3
    assert all(Path(p).is_file() and catalog in Path(p).parents for p in added["image_path"])
    assert not (images / "uploads" / staged.folder.name).exists()  # nothing written into the store's folder


def test_a_copy_of_the_catalog_folder_is_a_complete_independent_catalog(shop):
    images, catalog = shop
    upload(catalog, photos(12))
    backup = catalog.parent / "backup"
    shutil.copytree(catalog, backup, symlinks=True)  # cp -a
    remove_from_catalog(catalog, ids=ids_of(catalog, UPLOADED), progress=False)
    remove_from_catalog(catalog, ids=ids_of(catalog, "images/bags-0-0"), progress=False)  # the clean-up runs
    assert files_under(catalog / PHOTOS_FOLDER) == []  # the original's photos went with its last version

    kept = Catalog.load(backup).metadata
    assert len(kept[kept["path"].str.startswith(UPLOADED)]) == 12
    assert all(Path(p).is_file() for p in kept["image_path"])  # every item of the copy has its file
    assert all(backup in Path(p).parents for p in kept.loc[kept["path"].str.startswith(UPLOADED), "image_path"])
    remove_from_catalog(backup, ids=ids_of(backup, "images/bags-0-1"), progress=False)  # the copy changes alone
    assert len(ids_of(backup, UPLOADED)) == 12 and all(Path(p).is_file() for p in Catalog.load(backup).metadata["image_path"])


def test_removed_uploads_stay_while_restorable_and_go_with_the_last_version_naming_them(shop):
    images, catalog = shop
    staged, _ = upload(catalog, photos(2))
    saved = files_under(staged.folder)
    assert len(saved) == 2 and len(ids_of(catalog, UPLOADED)) == 2  # the photos only: the manifest was for the add

    remove_from_catalog(catalog, ids=ids_of(catalog, UPLOADED), progress=False)
    assert ids_of(catalog, UPLOADED) == [] and all(f.is_file() for f in saved)  # the previous version names them

    restore_catalog(catalog)  # undo: the photos are there for the restored items
    assert len(ids_of(catalog, UPLOADED)) == 2 and all(Path(p).is_file() for p in Catalog.load(catalog).metadata["image_path"])
    restore_catalog(catalog)  # redo the removal
    assert ids_of(catalog, UPLOADED) == []

    remove_from_catalog(catalog, ids=ids_of(catalog, "images/bags-0-0"), progress=False)
    assert len(list_versions(catalog)) == 2
    assert not staged.folder.exists()  # the photos, the manifest and the emptied batch folder
    assert (images / "images" / "bags-0-0.jpg").is_file()  # the store's own image, though removed


def test_clean_up_deletes_only_inside_the_catalogs_photos_folder(shop):
    images, catalog = shop
    (catalog / "notes.txt").write_text("the catalog manager's")
    (catalog / PHOTOS_FOLDER).mkdir()
    outside = images / "uploads" / "spring" / "own.png"
    (catalog / PHOTOS_FOLDER / "link.png").symlink_to(outside)  # a link in photos/: the link goes, never its target
    for prefix in ("uploads/spring", "images/bags-0-0", "images/bags-0-1"):
        remove_from_catalog(catalog, ids=ids_of(catalog, prefix), progress=False)
    assert outside.is_file() and (catalog / "notes.txt").is_file()
    assert all((images / p).is_file() for p in pd.read_csv(images / "manifest.csv")["path"] if p != "images/broken.jpg")
    assert not (catalog / PHOTOS_FOLDER / "link.png").exists()


def test_uploads_still_in_the_catalog_are_kept_through_every_change(shop):
    images, catalog = shop
    staged, _ = upload(catalog, photos(2))
    for prefix in ("images/bags-0-0", "images/bags-0-1", "images/hats-0-0"):
        remove_from_catalog(catalog, ids=ids_of(catalog, prefix), progress=False)
    upload(catalog, photos(1, first=5))
    assert len(ids_of(catalog, UPLOADED)) == 3
    assert all(Path(p).is_file() for p in Catalog.load(catalog).metadata["image_path"])


def test_uploaded_photos_the_add_leaves_out_are_deleted_and_the_added_ones_kept(shop):
    images, catalog = shop
    staged = stage_uploads([("new.zip", zip_of(photos(3)))], catalog, "shoes")
    damaged = "shoe-2-front.png"
    staged.files[damaged] = b"\x89PNG cut short"  # saved, then unreadable when the add embeds it
    report = add_uploads(catalog, staged, progress=False)
    assert report.added == 2 and [Path(p).name for p, _ in report.skipped] == [damaged]
    assert not (staged.folder / damaged).exists()
    named = set(Catalog.load(catalog).metadata["image_path"].map(Path))
    added = [staged.folder / "shoe-0-front.png", staged.folder / "shoe-1-front.png"]
    assert all(f.is_file() for f in added) and set(added) <= named


def test_an_upload_the_add_takes_nothing_from_leaves_no_folder_behind(shop):
    images, catalog = shop
    staged = stage_uploads([("new.zip", zip_of(photos(2)))], catalog, "shoes")
    staged.files = {name: b"not a photo any more" for name in staged.files}
    report = add_uploads(catalog, staged, progress=False)
    assert report.added == 0 and len(report.skipped) == 2
    assert files_under(catalog / PHOTOS_FOLDER) == []
    assert (images / "uploads" / "spring" / "own.png").is_file()


def test_an_upload_whose_add_is_refused_writes_nothing(shop):
    images, catalog = shop
    staged = stage_uploads([("new.zip", zip_of(photos(1)))], catalog, "shoes")
    with catalog_lock(catalog, "rebuild"), pytest.raises(CatalogLockedError):
        add_uploads(catalog, staged, progress=False)
    assert not staged.folder.exists() and not (catalog / PHOTOS_FOLDER).exists()


def test_another_writer_between_staging_and_adding_takes_nothing(shop):
    images, catalog = shop
    staged = stage_uploads([("new.zip", zip_of(photos(2)))], catalog, "shoes")
    remove_from_catalog(catalog, ids=ids_of(catalog, "images/bags-0-0"), progress=False)  # its clean-up runs
    assert add_uploads(catalog, staged, progress=False).added == 2
    assert all(Path(p).is_file() for p in Catalog.load(catalog).metadata["image_path"])


def legacy_catalog(images: Path, catalog: Path, tiny_shop) -> list[Path]:
    """A catalog as earlier versions wrote it: uploaded photos in a marked batch below the image folder."""
    batch = images / "uploads" / "20250101-000000-abcdef"
    batch.mkdir(parents=True)
    for i in range(2):
        (batch / f"p{i}.png").write_bytes(product_photo((200, 40 * i, 30)))
    rows = pd.read_csv(images / "manifest.csv")
    rows = pd.concat([rows, pd.DataFrame({"path": [f"uploads/{batch.name}/p{i}.png" for i in range(2)],
                                          "category": "shoes", "product_id": "shoe-1"})])
    rows.to_csv(images / "with-uploads.csv", index=False)
    build_catalog(images / "with-uploads.csv", tiny_shop.model, catalog, progress=False, overwrite=True)
    (batch / LEGACY_MARK).write_text("# Photos saved by a catalog upload\n" + str(catalog) + "\n")  # as uploads did
    return [batch / "p0.png", batch / "p1.png"]


def test_a_catalog_with_uploads_in_the_image_folder_moves_them_in_at_its_next_write(shop, tiny_shop):
    images, catalog = shop
    originals = legacy_catalog(images, catalog, tiny_shop)
    assert len(ids_of(catalog, "uploads/20250101")) == 2  # named in the image folder, as before

    remove_from_catalog(catalog, ids=ids_of(catalog, "images/bags-0-0"), progress=False)  # the next write
    metadata = Catalog.load(catalog).metadata
    moved = metadata[metadata["path"].str.startswith(UPLOADED)]
    assert sorted(moved["path"]) == [UPLOADED + "20250101-000000-abcdef/p0.png", UPLOADED + "20250101-000000-abcdef/p1.png"]
    assert all(Path(p).read_bytes() == o.read_bytes() for p, o in zip(sorted(moved["image_path"]), originals))
    assert ids_of(catalog, "uploads/") == [ids_of(catalog, "uploads/spring")[0]]  # the store's own stays put
    assert all(o.is_file() for o in originals)  # the originals are left where they were
    assert read_last_operation(catalog)["uploads_copied_into_catalog"] == 2

    backup = catalog.parent / "backup"  # from now on a copy of the folder holds them
    shutil.copytree(catalog, backup, symlinks=True)
    for prefix in (UPLOADED, "images/bags-0-1", "images/hats-0-0"):
        remove_from_catalog(catalog, ids=ids_of(catalog, prefix), progress=False)
    assert all(Path(p).is_file() for p in Catalog.load(backup).metadata["image_path"])
    assert all(o.is_file() for o in originals)  # clean-up never deletes outside its catalog folder


def read_last_operation(catalog: Path) -> dict:
    from index.catalog.store import read_info
    return read_info(catalog).last_operation


def test_a_manifest_may_not_name_paths_reserved_for_the_catalog_folder(shop):
    images, catalog = shop
    (images / "@catalog").mkdir()
    (images / "@catalog" / "x.png").write_bytes(product_photo((5, 5, 5)))
    write_manifest(pd.DataFrame({"path": ["@catalog/x.png"], "category": "tops"}), images / "sneaky.csv")
    with pytest.raises(ValueError, match="name photos kept in a catalog folder"):
        add_to_catalog(catalog, manifest=images / "sneaky.csv", progress=False)


def test_a_catalog_path_names_a_file_below_the_catalog_folder_or_below_the_image_folder(tmp_path):
    assert image_file(tmp_path / "cat", "/shop", "images/a.png") == os.path.join("/shop", "images/a.png")
    assert image_file(tmp_path / "cat", "/shop", UPLOADED + "b/a.png") == str(tmp_path / "cat" / PHOTOS_FOLDER / "b" / "a.png")
