"""The manifest: the one catalog format every part of the product reads and writes."""
import os

import pandas as pd
import pytest

from index.manifest import (CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN, ManifestError, read_manifest,
                            resolve_image_paths, write_manifest)


def catalog(**extra):
    return pd.DataFrame({
        PATH_COLUMN: ["shoes/a.png", "shoes/b.png", "bags/c.png"],
        CATEGORY_COLUMN: ["shoes", "shoes", "bags"],
        **extra,
    })


@pytest.mark.parametrize("name", ["manifest.csv", "manifest.parquet"])
def test_round_trip_keeps_columns_labels_and_metadata(tmp_path, name):
    table = catalog(product_id=[7, 7, 12], price=[9.5, 12.0, 30.0])
    read = read_manifest(write_manifest(table, tmp_path / name))
    assert list(read.columns) == [PATH_COLUMN, CATEGORY_COLUMN, PRODUCT_COLUMN, "price"]
    assert read[PATH_COLUMN].tolist() == ["shoes/a.png", "shoes/b.png", "bags/c.png"]
    assert read[PRODUCT_COLUMN].tolist() == ["7", "7", "12"]  # identities are text
    assert read["price"].tolist() == [9.5, 12.0, 30.0]


def test_product_id_is_optional(tmp_path):
    read = read_manifest(write_manifest(catalog(), tmp_path / "manifest.csv"))
    assert PRODUCT_COLUMN not in read.columns


def test_labels_are_read_as_written(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path,category,product_id\na.png,NA,007\nb.png,None,null\n")
    read = read_manifest(path)
    assert read[CATEGORY_COLUMN].tolist() == ["NA", "None"]
    assert read[PRODUCT_COLUMN].tolist() == ["007", "null"]


def test_a_missing_column_is_named_with_the_file(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path,label\na.png,shoes\n")
    with pytest.raises(ManifestError, match="'category'") as error:
        read_manifest(path)
    assert str(path) in str(error.value)


def test_blank_labels_are_refused(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path,category\na.png,shoes\nb.png,\n")
    with pytest.raises(ManifestError, match="blank 'category'"):
        read_manifest(path)


@pytest.mark.parametrize("content", ["", "path,category\n"])
def test_an_empty_manifest_is_refused(tmp_path, content):
    path = tmp_path / "manifest.csv"
    path.write_text(content)
    with pytest.raises(ManifestError, match="empty|no rows"):
        read_manifest(path)


def test_a_missing_file_or_unknown_format_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "absent.csv")
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ManifestError, match=".csv or .parquet"):
        read_manifest(tmp_path / "manifest.json")


def test_image_paths_resolve_below_the_catalog_root(tmp_path):
    table = pd.DataFrame({PATH_COLUMN: ["shoes/a.png", "shoes/./b.png", "bags/old/../c.png"],
                          CATEGORY_COLUMN: ["shoes", "shoes", "bags"]})
    assert resolve_image_paths(table, tmp_path) == [
        tmp_path / "shoes/a.png", tmp_path / "shoes/b.png", tmp_path / "bags/c.png"]


@pytest.mark.parametrize("unsafe", ["../secret.png", "shoes/../../secret.png", "/etc/passwd",
                                    "C:/Windows/x.png", "..\\secret.png", "."])
def test_paths_outside_the_catalog_root_are_refused_by_row(tmp_path, unsafe):
    table = pd.DataFrame({PATH_COLUMN: ["shoes/a.png", unsafe], CATEGORY_COLUMN: ["shoes", "shoes"]})
    with pytest.raises(ManifestError, match="row 1") as error:
        resolve_image_paths(table, tmp_path)
    assert repr(unsafe) in str(error.value)
    assert "row 0" not in str(error.value)


def test_writing_replaces_the_file_whole_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "manifest.csv"
    write_manifest(catalog(), path)
    write_manifest(catalog().iloc[:1], path)
    assert len(read_manifest(path)) == 1
    assert os.listdir(tmp_path) == ["manifest.csv"]


def test_an_invalid_table_is_never_written(tmp_path):
    path = tmp_path / "manifest.csv"
    write_manifest(catalog(), path)
    with pytest.raises(ManifestError, match="'category'"):
        write_manifest(catalog().drop(columns=[CATEGORY_COLUMN]), path)
    assert len(read_manifest(path)) == 3
