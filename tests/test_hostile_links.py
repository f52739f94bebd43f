"""A symbolic link inside an image folder that leads outside it is refused like any other path outside
the folder: left out of a folder's rows, and skipped with its reason by build, add and rebuild; its
target is never read."""
from __future__ import annotations

import os
import shutil
import sys

import pandas as pd
import pytest

from index.catalog.add import add_to_catalog
from index.catalog.loaded import Catalog
from index.importers import REFUSED_ATTR, image_folder_table
from index.catalog.operations import build_catalog, rebuild_catalog
from tests.support.photos import product_photo


@pytest.fixture
def outside(tmp_path):
    """A photo and a folder of photos outside every image folder below."""
    secret = tmp_path / "elsewhere"
    (secret / "folder").mkdir(parents=True)
    (secret / "private.png").write_bytes(product_photo((250, 10, 10)))
    (secret / "folder" / "p.png").write_bytes(product_photo((10, 250, 10)))
    return secret


_OPENED: dict = {"watching": False, "files": []}


def _audit(event: str, args: tuple) -> None:
    if _OPENED["watching"] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED["files"].append(os.path.realpath(os.fsdecode(args[0])))


@pytest.fixture
def opened() -> list[str]:
    """The files this process opens during the test (Python's open audit event; the hook stays, idle)."""
    if not _OPENED.get("hooked"):
        sys.addaudithook(_audit)
        _OPENED["hooked"] = True
    _OPENED["files"], _OPENED["watching"] = [], True
    yield _OPENED["files"]
    _OPENED["watching"] = False


def test_a_folders_rows_leave_out_links_leading_outside_it_and_say_why(tmp_path, outside):
    root = tmp_path / "shop"
    (root / "bags").mkdir(parents=True)
    (root / "bags" / "own.png").write_bytes(product_photo((20, 20, 200)))
    (root / "bags" / "stolen.png").symlink_to(outside / "private.png")
    (root / "bags" / "stolen-folder").symlink_to(outside / "folder", target_is_directory=True)
    (root / "bags" / "same.png").symlink_to(root / "bags" / "own.png")  # stays inside: an ordinary image
    table = image_folder_table(root)
    assert sorted(table["path"]) == ["bags/own.png", "bags/same.png"]
    refused = dict(table.attrs[REFUSED_ATTR])
    assert set(refused) == {"bags/stolen.png", "bags/stolen-folder"}
    assert all("symbolic link leading outside the image folder" in why for why in refused.values())


def test_build_add_and_rebuild_skip_a_link_leading_outside_and_never_read_it(tiny_shop, tmp_path, outside, opened):
    images = tmp_path / "shop"
    shutil.copytree(tiny_shop.manifest.parent, images)
    (images / "images" / "stolen.png").symlink_to(outside / "private.png")
    rows = pd.concat([tiny_shop.items, pd.DataFrame([{"path": "images/stolen.png", "category": "tops",
                                                      "product_id": "tops-9", "title": "x", "view": 0}])])
    rows.to_csv(images / "manifest.csv", index=False)
    catalog = tmp_path / "catalog"
    report = build_catalog(images / "manifest.csv", tiny_shop.model, catalog, progress=False)
    assert dict(report.skipped)["images/stolen.png"].startswith("a symbolic link leading outside the image folder")
    assert "images/stolen.png" not in set(Catalog.load(catalog).metadata["path"])

    new = images / "new" / "bags"
    new.mkdir(parents=True)
    (new / "fine.png").write_bytes(product_photo((30, 90, 200)))
    (new / "stolen.png").symlink_to(outside / "private.png")
    (images / "new" / "hats").symlink_to(outside / "folder", target_is_directory=True)
    report = add_to_catalog(catalog, images=images / "new", progress=False)
    assert report.added == 1
    skipped = dict(report.skipped)
    assert set(skipped) >= {"new/bags/stolen.png", "new/hats"}
    assert not [f for f in opened if f.startswith(str(outside))]

    (images / "images" / "bags-0-0.jpg").unlink()  # an item's file becomes a link leading outside
    (images / "images" / "bags-0-0.jpg").symlink_to(outside / "private.png")
    report = rebuild_catalog(catalog, reembed=True, progress=False)
    assert "images/bags-0-0.jpg" in dict(report.skipped)
    assert not [f for f in opened if f.startswith(str(outside))]
