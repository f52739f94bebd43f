"""Fixing items in place (index.catalog.edit, `python -m index edit`): a re-categorised item keeps its
vector, the category pools and the calibration follow, and restore undoes the edit byte for byte."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from index.__main__ import main as index_main
from index.catalog.loaded import Catalog
from index.catalog.edit import edit_catalog
from index.catalog.store import CatalogError, METADATA_FILE, VERSIONS_DIR, read_info


@pytest.fixture
def catalog(tiny_shop, tmp_path):
    folder = tmp_path / "catalog"
    shutil.copytree(tiny_shop.catalog, folder)
    return folder


def metadata_bytes(folder) -> bytes:
    return (folder / VERSIONS_DIR / read_info(folder).version / METADATA_FILE).read_bytes()


def test_recategorising_keeps_the_vector_and_moves_the_item_between_pools(catalog, capsys):
    before = Catalog.load(catalog)
    item = int(before.ids[0])
    old_category = str(before.metadata["category"].iloc[0])
    new_category = next(c for c in before.metadata["category"].unique() if c != old_category)
    vector = np.array(before.embeddings[0])

    assert index_main(["edit", "--catalog", str(catalog), "--id", str(item), "--set", f"category={new_category}"]) == 0
    assert "edit:" in capsys.readouterr().out
    after = Catalog.load(catalog)
    row = int(after.rows_of([item])[0])
    assert after.metadata["category"].iloc[row] == new_category
    np.testing.assert_array_equal(np.asarray(after.embeddings[row]), vector)  # not embedded again
    assert item in set(after.ids[after.category_pool(new_category)[0]].tolist())
    assert item not in set(after.ids[after.category_pool(old_category)[0]].tolist())
    assert after.info.counts["categories"][new_category] == before.info.counts["categories"][new_category] + 1
    assert after.info.calibration == recalibrated(after)  # computed at the commit from the new metadata
    assert after.info.last_operation["operation"] == "edit"


def recalibrated(catalog):
    """The calibration of the catalog's current vectors and metadata."""
    from index.search.calibration import calibrate

    return calibrate([np.asarray(catalog.embeddings)], catalog.metadata.drop(columns=["image_path"]))


def test_restore_undoes_an_edit_byte_for_byte(catalog):
    original = metadata_bytes(catalog)
    item = int(Catalog.load(catalog).ids[2])
    edit_catalog(catalog, ids=[item], values={"category": "footwear", "colour": "red"}, tags=["review"])
    edited = Catalog.load(catalog).metadata
    row = edited.index[edited["id"] == item][0]
    assert (edited.loc[row, "category"], edited.loc[row, "colour"], edited.loc[row, "tags"]) == ("footwear", "red",
                                                                                                 "review")
    assert index_main(["restore", "--catalog", str(catalog)]) == 0
    assert metadata_bytes(catalog) == original


def test_tags_are_added_once_and_kept_beside_other_tags(catalog):
    ids = [int(i) for i in Catalog.load(catalog).ids[:2]]
    edit_catalog(catalog, ids=ids, tags=["review"])
    edit_catalog(catalog, ids=ids[:1], tags=["review"])
    edit_catalog(catalog, ids=ids[:1], tags=["sale"])
    tags = Catalog.load(catalog).metadata.set_index("id")["tags"]
    assert tags[ids[0]] == "review,sale" and tags[ids[1]] == "review"


@pytest.mark.parametrize("arguments, message", [
    (["--id", "0", "--set", "id=5"], "cannot be edited"),
    (["--id", "0", "--set", "path=x.png"], "cannot be edited"),
    (["--id", "0", "--set", "category"], "column=value"),
    (["--id", "0", "--set", "category="], "cannot be empty"),
    (["--id", "0", "--set", "view=three"], "whole numbers"),
    (["--id", "999999", "--set", "category=bags"], "999999"),
    (["--id", "0"], "what to change"),
])
def test_bad_edits_are_refused_in_one_line_and_change_nothing(catalog, capsys, arguments, message):
    version = read_info(catalog).version
    assert index_main(["edit", "--catalog", str(catalog), *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert read_info(catalog).version == version


def test_an_edit_is_refused_while_another_process_changes_the_catalog(catalog):
    from index.catalog.store import catalog_lock

    with catalog_lock(catalog, "test"):
        with pytest.raises(CatalogError, match="being changed"):
            edit_catalog(catalog, ids=[0], values={"category": "bags"})
