"""Importers turn image collections and public data sets into manifests, once."""
import gzip
import pickle
import struct
import os

import numpy as np
import pytest
from PIL import Image

from index.importers import (FASHION_MNIST_DIR, import_cifar100, import_fashion_mnist, import_image_folder,
                             import_sop, load_fashion_mnist_arrays)
from index.manifest import ManifestError, read_manifest, resolve_image_paths


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image)


def manifest_images(manifest):
    return resolve_image_paths(read_manifest(manifest), manifest.parent)


def save_png(path, value=0, size=(4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


# --- Fashion-MNIST -------------------------------------------------------------------------

def write_idx(path, array):
    """IDX: two zero bytes, type 0x08 (unsigned byte), number of dimensions, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_source(tmp_path):
    """A tiny Fashion-MNIST: train holds every class once plus two more; test three images."""
    source = tmp_path / "source"
    source.mkdir()
    rng = np.random.default_rng(0)
    splits = {"train": np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8]), "t10k": np.array([9, 0, 3])}
    arrays = {}
    for prefix, labels in splits.items():
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        write_idx(source / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = images, labels
    return source, arrays


def test_idx_files_load_as_image_and_label_arrays(idx_source):
    source, arrays = idx_source
    images, labels = load_fashion_mnist_arrays("test", source)
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28)
    assert labels.dtype == np.int64 and labels.tolist() == [9, 0, 3]
    np.testing.assert_array_equal(images, arrays["t10k"][0])


def test_fashion_mnist_store_grouping(idx_source, tmp_path):
    source, arrays = idx_source
    manifest = import_fashion_mnist(tmp_path / "out", "train", source)
    table = read_manifest(manifest)
    assert manifest == tmp_path / "out" / "train" / "manifest_store.csv"
    assert list(table.columns) == ["path", "category", "product_id", "fine_label"]
    assert table["path"].iloc[0] == "images/00000.png"
    assert table["category"].tolist() == ["apparel"] * 5 + ["footwear", "apparel", "footwear", "bags", "footwear",
                                                             "footwear", "bags"]
    assert table["product_id"].tolist()[:10] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert table["fine_label"].tolist() == arrays["train"][1].tolist()
    for path, image in zip(manifest_images(manifest), arrays["train"][0]):
        np.testing.assert_array_equal(pixels(path), image)


def test_fashion_mnist_five_grouping_shares_the_images(idx_source, tmp_path):
    source, _ = idx_source
    store = import_fashion_mnist(tmp_path / "out", "test", source, grouping="store")
    five = import_fashion_mnist(tmp_path / "out", "test", source, grouping="five")
    assert read_manifest(five)["category"].tolist() == ["footwear", "tops", "dresses"]
    assert read_manifest(store)["category"].tolist() == ["footwear", "apparel", "apparel"]
    assert manifest_images(five) == manifest_images(store)


def test_fashion_mnist_limit_keeps_the_first_images(idx_source, tmp_path):
    source, _ = idx_source
    table = read_manifest(import_fashion_mnist(tmp_path / "out", "train", source, limit=4))
    assert table["fine_label"].tolist() == [0, 1, 2, 3]


LONG_AGO_NS = 1_000_000_000 * 10**9  # 2001: no write made by a test can carry this modification time


def file_stamp(path) -> tuple[int, int]:
    """(inode, modification time): a rewrite (a new file renamed over it) or any write changes it."""
    facts = path.stat()
    return facts.st_ino, facts.st_mtime_ns


def untouched_since(path) -> tuple[int, int]:
    """Mark the file with a modification time long past, so that any later write shows, without waiting
    for the clock to move on; returns its stamp."""
    os.utime(path, ns=(LONG_AGO_NS, LONG_AGO_NS))
    return file_stamp(path)


def test_a_second_import_finds_the_work_done(idx_source, tmp_path):
    source, _ = idx_source
    manifest = import_fashion_mnist(tmp_path / "out", "train", source)
    first_image = manifest_images(manifest)[0]
    stamps = untouched_since(manifest), untouched_since(first_image)
    assert import_fashion_mnist(tmp_path / "out", "train", source) == manifest
    assert (file_stamp(manifest), file_stamp(first_image)) == stamps


def test_an_interrupted_import_is_redone(idx_source, tmp_path):
    source, arrays = idx_source
    manifest = import_fashion_mnist(tmp_path / "out", "train", source)
    lost = manifest_images(manifest)[3]
    lost.unlink()
    import_fashion_mnist(tmp_path / "out", "train", source)
    np.testing.assert_array_equal(pixels(lost), arrays["train"][0][3])


def test_missing_fashion_mnist_files_explain_the_ways_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_fashion_mnist_arrays("train", tmp_path)
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--source folder holding the four .gz IDX files" in message
    assert "allow download where a network exists" in message


def test_a_file_that_is_not_idx_is_refused(idx_source):
    source, _ = idx_source
    with gzip.open(source / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="IDX"):
        load_fashion_mnist_arrays("test", source)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_the_real_fashion_mnist_test_split(tmp_path):
    images, labels = load_fashion_mnist_arrays("test")
    assert images.shape == (10_000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10
    # A prefix keeps the test quick; every image goes through the same path.
    manifest = import_fashion_mnist(tmp_path, "test", limit=3000)
    table = read_manifest(manifest)
    assert table["fine_label"].tolist() == labels[:3000].tolist()
    assert set(table["category"]) == {"apparel", "footwear", "bags"}
    assert table["product_id"].nunique() == 10
    np.testing.assert_array_equal(pixels(manifest_images(manifest)[2999]), images[2999])


# --- CIFAR-100 -----------------------------------------------------------------------------

@pytest.fixture
def cifar_source(tmp_path):
    source = tmp_path / "cifar-100-python"
    source.mkdir()
    meta = {b"fine_label_names": [b"apple", b"bicycle", b"bus"], b"coarse_label_names": [b"fruit", b"vehicles"]}
    rng = np.random.default_rng(1)
    batches = {}
    for split, n in (("train", 5), ("test", 2)):
        fine = rng.integers(0, 3, n).tolist()
        batches[split] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                          b"fine_labels": fine, b"coarse_labels": [0 if f == 0 else 1 for f in fine]}
    for name, content in (("meta", meta), *batches.items()):
        (source / name).write_bytes(pickle.dumps(content))
    return source, batches


def test_cifar100_coarse_names_are_categories_and_fine_names_products(cifar_source, tmp_path):
    source, batches = cifar_source
    manifest = import_cifar100(source, tmp_path / "out", "train")
    table = read_manifest(manifest)
    fine = batches["train"][b"fine_labels"]
    assert len(table) == 5
    assert table["product_id"].tolist() == [["apple", "bicycle", "bus"][f] for f in fine]
    assert table["category"].tolist() == ["fruit" if f == 0 else "vehicles" for f in fine]
    # Each row is the red plane, then green, then blue, of a 32 x 32 image.
    expected = batches["train"][b"data"][2].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(pixels(manifest_images(manifest)[2]), expected)


def test_cifar_files_that_would_run_code_are_refused(cifar_source, tmp_path):
    source, _ = cifar_source

    class RunsCode:
        def __reduce__(self):
            return print, ("this must not run",)

    (source / "test").write_bytes(pickle.dumps({b"data": RunsCode()}))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        import_cifar100(source, tmp_path / "out", "test")


# --- Stanford Online Products --------------------------------------------------------------

@pytest.fixture
def sop_source(tmp_path):
    source = tmp_path / "Stanford_Online_Products"
    rows = [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
            (3, 2, 2, "chair_final/222_0.JPG"), (4, 3, 2, "chair_final/333_0.JPG")]
    for *_, path in rows:
        save_png(source / path)
    lines = ["image_id class_id super_class_id path"] + [" ".join(map(str, row)) for row in rows]
    (source / "Ebay_train.txt").write_text("\n".join(lines) + "\n")
    return source


def test_sop_manifest_uses_super_class_folders_and_class_ids(sop_source):
    manifest = import_sop(sop_source, "train")
    table = read_manifest(manifest)
    assert manifest == sop_source / "manifest_train.csv"
    assert table["path"].tolist()[0] == "bicycle_final/111_0.JPG"
    assert table["category"].tolist() == ["bicycle", "bicycle", "chair", "chair"]
    assert table["product_id"].tolist() == ["1", "1", "2", "3"]
    assert all(path.is_file() for path in manifest_images(manifest))


def test_sop_refuses_a_listing_whose_images_are_missing(sop_source):
    (sop_source / "chair_final" / "333_0.JPG").unlink()
    with pytest.raises(FileNotFoundError, match="1 images"):
        import_sop(sop_source, "train")


# --- image folders -------------------------------------------------------------------------

def test_image_folder_with_product_folders(tmp_path):
    save_png(tmp_path / "shoes" / "runner-1" / "front.png")
    save_png(tmp_path / "shoes" / "runner-1" / "side" / "left.JPG")
    save_png(tmp_path / "bags" / "tote-9" / "a.webp")
    (tmp_path / "bags" / "tote-9" / "notes.txt").write_text("not an image")
    save_png(tmp_path / "bags" / ".thumbnails" / "a.png")
    save_png(tmp_path / "loose.png")  # no category folder
    table = read_manifest(import_image_folder(tmp_path))
    assert table["path"].tolist() == ["bags/tote-9/a.webp", "shoes/runner-1/front.png",
                                      "shoes/runner-1/side/left.JPG"]
    assert table["category"].tolist() == ["bags", "shoes", "shoes"]
    assert table["product_id"].tolist() == ["tote-9", "runner-1", "runner-1"]


def test_image_folder_without_product_folders_has_no_product_id(tmp_path):
    save_png(tmp_path / "shoes" / "a.png")
    save_png(tmp_path / "bags" / "b.jpeg")
    table = read_manifest(import_image_folder(tmp_path))
    assert table.to_dict("list") == {"path": ["bags/b.jpeg", "shoes/a.png"], "category": ["bags", "shoes"]}


def test_image_folder_mixing_both_layouts_is_refused(tmp_path):
    save_png(tmp_path / "shoes" / "runner-1" / "a.png")
    save_png(tmp_path / "shoes" / "b.png")
    with pytest.raises(ManifestError, match="shoes/b.png"):
        import_image_folder(tmp_path)


def test_image_folder_without_images_is_refused(tmp_path):
    (tmp_path / "shoes").mkdir()
    with pytest.raises(ManifestError, match="no images"):
        import_image_folder(tmp_path)


def test_image_folder_manifest_is_rewritten_only_when_the_tree_changes(tmp_path):
    save_png(tmp_path / "shoes" / "a.png")
    manifest = import_image_folder(tmp_path)
    stamp = untouched_since(manifest)
    import_image_folder(tmp_path)
    assert file_stamp(manifest) == stamp
    save_png(tmp_path / "shoes" / "b.png")
    assert len(read_manifest(import_image_folder(tmp_path))) == 2


def test_image_folder_of_heic_and_avif_photos_is_listed_and_indexed(tmp_path, tiny_shop):
    from tests.support.heic_files import heic
    from index.catalog.loaded import Catalog
    from index.catalog.operations import build_catalog

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    folder = tmp_path / "store"
    (folder / "shoes" / "runner-1").mkdir(parents=True)
    (folder / "bags" / "tote-9").mkdir(parents=True)
    (folder / "shoes" / "runner-1" / "IMG_0001.HEIC").write_bytes(heic(photo))  # as an iPhone names it
    (folder / "shoes" / "runner-1" / "side.heif").write_bytes(heic(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    photo.save(folder / "bags" / "tote-9" / "front.avif")
    manifest = import_image_folder(folder)
    paths = ["bags/tote-9/front.avif", "shoes/runner-1/IMG_0001.HEIC", "shoes/runner-1/side.heif"]
    assert read_manifest(manifest)["path"].tolist() == paths
    build_catalog(manifest, tiny_shop.model, tmp_path / "catalog", progress=False)
    catalog = Catalog.load(tmp_path / "catalog")
    assert sorted(catalog.metadata["path"]) == paths and not catalog.info.skipped
