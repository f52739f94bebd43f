"""Catalog folders: build, load, add, remove, rebuild, atomic versions, locking, index choice."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedder.embed import Embedder
from index.catalog import store
from index.catalog.add import add_to_catalog
from index.catalog.loaded import Catalog
from index.catalog.description import CatalogInfo
from index.catalog.operations import build_catalog, rebuild_catalog, remove_from_catalog
from index.catalog.store import CatalogError, CatalogLockedError, ModelMismatchError, catalog_lock, read_info
from embedder.files import parse_size
from index.catalog.choose import IndexChoiceError, choice_from_factory, choose_index
from tests.support.models import random_model

CATEGORIES = ["tops", "shoes", "bags"]



def product_image(category: int, product: int, view: int) -> Image.Image:
    rng = np.random.default_rng(1000 * category + 10 * product + view)
    base = np.random.default_rng(100 * category + product).integers(0, 255, (28, 28))
    pixels = np.clip(base + rng.integers(-20, 21, (28, 28)), 0, 255).astype(np.uint8)
    pixels[:, : 4 + 6 * category] //= 3  # the category's stripe
    return Image.fromarray(pixels, mode="L")


def make_shop(root, products=3, views=2, name="manifest.csv"):
    """PNGs root/images/*.png and a manifest with three bad rows (corrupt, missing, text file)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, category in enumerate(CATEGORIES):
        for p in range(products):
            for v in range(views):
                path = images / f"{category}-{p}-{v}.png"
                product_image(c, p, v).save(path)
                rows.append({"path": f"images/{path.name}", "category": category,
                             "product_id": f"{category}-{p}", "title": f"{category} {p}"})
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (images / "notes.png").write_text("this is a text file, not an image\n")
    bad = [{"path": "images/corrupt.png", "category": "tops", "product_id": "x", "title": "corrupt"},
           {"path": "images/missing.png", "category": "tops", "product_id": "y", "title": "missing"},
           {"path": "images/notes.png", "category": "bags", "product_id": "z", "title": "text"}]
    manifest = root / name
    pd.DataFrame(rows + bad).to_csv(manifest, index=False)
    return manifest, len(rows)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return random_model(folder / "a.pt", CATEGORIES, seed=0, config={"test": True}), random_model(folder / "b.pt", CATEGORIES, seed=1, config={"test": True})


@pytest.fixture
def shop(tmp_path, models):
    manifest, good = make_shop(tmp_path / "shop")
    out = tmp_path / "catalog"
    build_catalog(manifest, models[0], out, progress=False)
    return manifest, out, good


def snapshot(folder):
    catalog = Catalog.load(folder)
    return (catalog.info["version"], np.array(catalog.embeddings), catalog.metadata.copy(),
            catalog.search_vectors(np.array(catalog.embeddings), 3).padded(3))


def test_build_skips_bad_images_and_describes_the_catalog(shop, models):
    manifest, folder, good = shop
    info = read_info(folder)
    reasons = {entry["path"]: entry["reason"] for entry in info["skipped"]}
    assert set(reasons) == {"images/corrupt.png", "images/missing.png", "images/notes.png"}
    assert "not found" in reasons["images/missing.png"]
    assert "not a readable image" in reasons["images/notes.png"]
    assert info["counts"]["items"] == good and info["counts"]["skipped"] == 3
    assert info["model_fingerprint"] == Embedder.from_checkpoint(models[0]).fingerprint
    assert info["feature_dim"] == 32 and info["index"]["factory"] == "Flat" and "exact" in info["index"]["reason"]
    assert info["index"]["recall_at_10"] == 1.0 and info["root"] == str(manifest.parent)
    # An exact index is its vectors: they are stored once (embeddings.npy), added to it on load.
    assert (folder / "versions" / info["version"] / "index.faiss").stat().st_size < 1000
    catalog = Catalog.load(folder)
    assert catalog.ids.tolist() == list(range(good))
    assert {"id", "path", "category", "product_id", "title", "content_hash", "image_path"} <= set(catalog.metadata)
    assert catalog.embeddings.shape == (good, 32)
    np.testing.assert_allclose(np.linalg.norm(catalog.embeddings, axis=1), 1, atol=1e-5)
    assert all((manifest.parent / p).is_file() for p in catalog.metadata["path"])
    assert catalog.metadata["image_path"].iloc[0] == str(manifest.parent / catalog.metadata["path"].iloc[0])


def test_round_trip_and_every_item_is_its_own_nearest_neighbour(shop):
    _, folder, good = shop
    first, second = Catalog.load(folder), Catalog.load(folder)
    scores, ids = first.search_vectors(np.array(first.embeddings), 5).padded(5)
    scores2, ids2 = second.search_vectors(np.array(second.embeddings), 5).padded(5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2)
    assert (ids[:, 0] == first.ids).all()
    np.testing.assert_allclose(scores[:, 0], 1, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_existing_catalog_is_not_overwritten_by_accident(shop, models):
    manifest, folder, _ = shop
    with pytest.raises(CatalogError, match="already holds a catalog"):
        build_catalog(manifest, models[0], folder, progress=False)
    build_catalog(manifest, models[0], folder, overwrite=True, progress=False)


def test_add_embeds_only_new_images_and_keeps_ids(shop, tmp_path):
    manifest, folder, good = shop
    before = Catalog.load(folder)
    table = pd.read_csv(manifest)
    images = manifest.parent / "images"
    product_image(0, 9, 0).save(images / "new-0.png")  # new
    shutil.copy(images / "tops-0-0.png", images / "copy-of-tops-0-0.png")  # same bytes, new path
    product_image(1, 9, 1).save(images / "shoes-0-1.png")  # same path, new bytes
    extra = pd.DataFrame([{"path": "images/new-0.png", "category": "tops", "product_id": "tops-9", "title": "n"},
                          {"path": "images/copy-of-tops-0-0.png", "category": "tops", "product_id": "tops-0",
                           "title": "copy", "colour": "red"}])
    bigger = tmp_path / "shop" / "more.csv"
    pd.concat([table, extra]).to_csv(bigger, index=False)
    report = add_to_catalog(folder, bigger, progress=False)
    assert (report.added, report.reused, report.updated) == (1, 1, 1)
    assert report.unchanged == good - 1 and len(report.skipped) == 3
    after = Catalog.load(folder)
    assert after.ids.tolist() == list(range(good + 2))
    old = before.metadata.set_index("id")
    new = after.metadata.set_index("id")
    assert (new.loc[old.index, "path"] == old["path"]).all()
    changed = int(old.index[old["path"] == "images/shoes-0-1.png"][0])
    assert new.loc[changed, "content_hash"] != old.loc[changed, "content_hash"]
    untouched = [i for i in old.index if i != changed]
    np.testing.assert_array_equal(after.vectors_of(untouched), before.vectors_of(untouched))
    # The embeddings are what the model gives for these files, row for row.
    embedder = Embedder.from_checkpoint(after.info["model_path"])
    fresh = embedder.embed_files(list(after.metadata["image_path"]))
    np.testing.assert_allclose(fresh.embeddings, np.asarray(after.embeddings), atol=1e-5)
    copy_id = int(new.index[new["path"] == "images/copy-of-tops-0-0.png"][0])
    assert new.loc[copy_id, "colour"] == "red"
    assert after.info["next_id"] == good + 2 and after.index.ntotal == good + 2

    again = add_to_catalog(folder, bigger, progress=False)  # nothing new: nothing written
    assert not again.wrote and again.unchanged == good + 2
    assert read_info(folder)["version"] == after.info["version"]


def test_remove_by_id_and_path_never_reuses_ids(shop, tmp_path):
    manifest, folder, good = shop
    report = remove_from_catalog(folder, ids=[0, 3], paths=["images/bags-2-1.png"], progress=False)
    assert report.removed == 3
    catalog = Catalog.load(folder)
    assert 0 not in catalog.ids and 3 not in catalog.ids and len(catalog) == good - 3
    assert "images/bags-2-1.png" not in set(catalog.metadata["path"])
    assert catalog.index.ntotal == good - 3
    scores, ids = catalog.search_vectors(np.array(catalog.embeddings), 1).padded(1)
    assert (ids[:, 0] == catalog.ids).all()
    with pytest.raises(CatalogError, match="no item with id 0"):
        remove_from_catalog(folder, ids=[0], progress=False)
    with pytest.raises(CatalogError, match="not in the catalog"):
        remove_from_catalog(folder, paths=["images/nope.png"], progress=False)
    add_to_catalog(folder, manifest, progress=False)  # the removed files come back with new ids
    back = Catalog.load(folder)
    assert len(back) == good and back.ids.max() == good + 2
    assert set(back.ids) == (set(range(good)) - {0, 3, good - 1}) | {good, good + 1, good + 2}


def test_rebuild_keeps_ids_and_reembeds_for_a_new_model(shop, models):
    _, folder, good = shop
    before = Catalog.load(folder)
    report = rebuild_catalog(folder, index="HNSW16", progress=False)
    assert not report.reembedded
    hnsw = Catalog.load(folder)
    assert hnsw.info["index"]["factory"] == "HNSW16" and "efSearch" in hnsw.info["index"]["params"]
    assert hnsw.info["index"]["recall_at_10"] >= 0.95
    np.testing.assert_array_equal(hnsw.ids, before.ids)
    np.testing.assert_array_equal(np.asarray(hnsw.embeddings), np.asarray(before.embeddings))
    remove_from_catalog(folder, ids=[1], progress=False)  # HNSW cannot remove: rebuilt from embeddings
    assert Catalog.load(folder).index.ntotal == good - 1

    report = rebuild_catalog(folder, model=models[1], progress=False)
    assert report.reembedded
    other = Catalog.load(folder)
    assert other.fingerprint == Embedder.from_checkpoint(models[1]).fingerprint
    assert other.info["index"]["factory"] == "HNSW16"  # the user's choice is kept
    assert other.ids.tolist() == [i for i in before.ids if i != 1]
    assert not np.allclose(np.asarray(other.embeddings), np.asarray(before.embeddings)[before.ids != 1])
    rebuild_catalog(folder, index="IVF4,Flat", progress=False)
    ivf = Catalog.load(folder)
    assert ivf.info["index"]["factory"] == "IVF4,Flat" and ivf.info["index"]["recall_at_10"] >= 0.95
    remove_from_catalog(folder, ids=[2], progress=False)  # IVF removes in place
    assert Catalog.load(folder).index.ntotal == good - 2


@pytest.mark.parametrize("failing", ["write_embeddings", "write_index", "write_info"])
def test_an_interrupted_write_leaves_the_old_catalog_intact(shop, tmp_path, monkeypatch, failing):
    manifest, folder, good = shop
    version, embeddings, metadata, (scores, ids) = snapshot(folder)
    product_image(2, 7, 0).save(manifest.parent / "images" / "late.png")
    bigger = tmp_path / "shop" / "late.csv"
    pd.concat([pd.read_csv(manifest), pd.DataFrame([{"path": "images/late.png", "category": "bags",
                                                     "product_id": "bags-7", "title": "late"}])]).to_csv(bigger, index=False)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store, failing, crash)
    with pytest.raises(OSError, match="simulated"):
        add_to_catalog(folder, bigger, progress=False)
    for operation in (lambda: remove_from_catalog(folder, ids=[0], progress=False),
                      lambda: rebuild_catalog(folder, progress=False)):
        with pytest.raises(OSError, match="simulated"):
            operation()
    version2, embeddings2, metadata2, (scores2, ids2) = snapshot(folder)
    assert version2 == version
    np.testing.assert_array_equal(embeddings2, embeddings)
    pd.testing.assert_frame_equal(metadata2, metadata)
    np.testing.assert_array_equal(ids2, ids)
    assert [p.name for p in (folder / "versions").iterdir()] == [version]  # nothing half-written left
    monkeypatch.undo()
    assert add_to_catalog(folder, bigger, progress=False).added == 1


def test_a_crash_that_leaves_a_staging_folder_is_harmless(shop):
    _, folder, _ = shop
    version = read_info(folder)["version"]
    staging = folder / "versions" / ".tmp-20000101T000000-dead00"
    staging.mkdir()
    (staging / "embeddings.npy").write_bytes(b"half")
    assert len(Catalog.load(folder)) > 0
    remove_from_catalog(folder, ids=[0], progress=False)
    names = {p.name for p in (folder / "versions").iterdir()}
    assert staging.name not in names and version in names and len(names) == 2  # current + previous


def test_a_second_writer_is_refused_with_a_clear_message(shop):
    manifest, folder, _ = shop
    with catalog_lock(folder, "add"):
        with pytest.raises(CatalogLockedError, match="being changed by another process.*add"):
            remove_from_catalog(folder, ids=[0], progress=False)
        with pytest.raises(CatalogLockedError):
            add_to_catalog(folder, manifest, progress=False, lock_timeout=0.3)
    remove_from_catalog(folder, ids=[0], progress=False)  # released


def test_adding_with_another_model_is_refused(shop, models):
    manifest, folder, _ = shop
    product_image(0, 8, 0).save(manifest.parent / "images" / "other.png")
    extra = manifest.parent / "extra.csv"
    pd.DataFrame([{"path": "images/other.png", "category": "tops", "product_id": "t8"}]).to_csv(extra, index=False)
    with pytest.raises(ModelMismatchError, match="Rebuild the catalog with this model"):
        add_to_catalog(folder, extra, model=models[1], progress=False)


def test_images_outside_the_catalog_folder_are_refused(shop, tmp_path):
    _, folder, _ = shop
    elsewhere, _ = make_shop(tmp_path / "elsewhere")
    with pytest.raises(CatalogError, match="outside the catalog's image folder"):
        add_to_catalog(folder, elsewhere, progress=False)


def test_loading_a_missing_catalog_says_how_to_build_one(tmp_path):
    with pytest.raises(CatalogError, match="python -m index build"):
        Catalog.load(tmp_path / "nothing")


def test_evaluate_uses_leave_one_out_or_a_sample(shop):
    _, folder, good = shop
    catalog = Catalog.load(folder)
    report, how = catalog.evaluate()
    assert how["mode"] == "leave-one-out" and report.num_queries == good
    assert set(report.per_category.index) == set(CATEGORIES)
    report, how = catalog.evaluate(max_queries=5)
    # each sampled item queries every other item of the catalog
    assert report.num_queries == 5 and report.num_gallery == good and how["gallery"] == good - 1


# ----------------------------------------------------------------------------- index choice

def test_choose_index_by_size_and_budget():
    small = choose_index(10_000, 2048, parse_size("4GB"))
    assert small.factory == "Flat" and "exact" in small.reason
    assert choose_index(150_000, 128, parse_size("4GB")).factory == "Flat"
    mid = choose_index(1_000_000, 128, parse_size("4GB"))
    assert mid.factory == "HNSW32" and "efSearch" in mid.params and "HNSW" in mid.reason
    big = choose_index(1_000_000, 2048, parse_size("4GB"))
    assert big.factory.startswith("IVF") and big.factory.endswith("SQ8") and "nprobe" in big.params
    assert choose_index(1_000_000, 2048, parse_size("16GB")).factory.endswith(",Flat")
    tight = choose_index(1_000_000, 2048, parse_size("100MB"))
    assert ",PQ" in tight.factory and "budget" in tight.reason
    with pytest.raises(IndexChoiceError, match="raise --memory-budget"):
        choose_index(10_000_000, 128, parse_size("1MB"))
    assert choose_index(100, 16, 10**9).factory == "Flat"


def test_factory_override_and_sizes():
    assert choice_from_factory("HNSW32", 64).params == {"efSearch": 64}
    with pytest.raises(IndexChoiceError, match="cannot build"):
        choice_from_factory("NoSuchIndex", 64)
    assert parse_size("2GB") == 2 * 1024**3 and parse_size("512 MiB") == 512 * 1024**2 and parse_size(1000) == 1000
    with pytest.raises(ValueError):
        parse_size("lots")


def test_catalog_json_is_plain_json(shop):
    _, folder, _ = shop
    info = json.loads((folder / "catalog.json").read_text())
    assert {"model_fingerprint", "feature_dim", "index", "built_at", "counts", "skipped", "root", "next_id",
            "version"} <= set(info)


def test_the_catalog_description_is_typed_and_keeps_what_it_does_not_know(shop):
    _, folder, good = shop
    info = read_info(folder)
    assert isinstance(info, CatalogInfo) and info.counts["items"] == good and info.vectors is None
    assert info.version == info["version"] and info.choice.factory == info.index["factory"] == "Flat"
    stored = json.loads((folder / "catalog.json").read_text())
    assert info.to_dict() == stored and CatalogInfo.from_dict(stored) == info
    later = CatalogInfo.from_dict({**stored, "written_by_a_later_version": {"x": 1}})
    assert later.to_dict()["written_by_a_later_version"] == {"x": 1}
    (folder / "catalog.json").write_text(json.dumps({k: v for k, v in stored.items() if k != "feature_dim"}))
    with pytest.raises(CatalogError, match="damaged.*feature_dim"):
        read_info(folder)


# ---------------------------------------------------------------- image folders, duplicates, long names

def folder_state(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_adding_an_image_folder_writes_nothing_into_it(shop):
    manifest, folder, good = shop
    arrivals = manifest.parent / "images" / "arrivals"
    for p in range(2):
        (arrivals / "tops" / f"tops-7{p}").mkdir(parents=True)
        product_image(0, 70 + p, 0).save(arrivals / "tops" / f"tops-7{p}" / "front.png")
    # The store's own, curated manifest of that folder: it must survive every add, even a refused one.
    curated = "path,category,product_id,brand\ntops/tops-70/front.png,tops,SKU-70,Acme\n"
    (arrivals / "manifest.csv").write_text(curated)
    before = folder_state(arrivals)

    report = add_to_catalog(folder, images=arrivals, progress=False)
    assert report.added == 2 and folder_state(arrivals) == before
    catalog = Catalog.load(folder)
    assert set(catalog.metadata["path"].iloc[-2:]) == {"images/arrivals/tops/tops-70/front.png",
                                                      "images/arrivals/tops/tops-71/front.png"}

    outside = manifest.parent.parent / "elsewhere"  # not below the catalog's image folder: refused
    (outside / "bags" / "bags-80").mkdir(parents=True)
    product_image(2, 80, 0).save(outside / "bags" / "bags-80" / "front.png")
    with pytest.raises(CatalogError, match="outside the catalog's image folder"):
        add_to_catalog(folder, images=outside, progress=False)
    assert not (outside / "manifest.csv").exists()
    assert (arrivals / "manifest.csv").read_text() == curated


def test_build_keeps_one_item_per_image_and_says_how_many_rows_repeated_one(tmp_path, models):
    manifest, good = make_shop(tmp_path / "shop")
    table = pd.read_csv(manifest)
    repeats = table.iloc[[0, 1]].assign(title="repeated")
    repeats.iloc[1, repeats.columns.get_loc("path")] = "images/./" + repeats.iloc[1]["path"].split("/")[-1]
    pd.concat([table, repeats]).to_csv(manifest, index=False)
    report = build_catalog(manifest, models[0], tmp_path / "catalog", progress=False)
    assert report.items == good and report.duplicates == 2
    assert "2 duplicate manifest rows dropped" in report.summary()
    catalog = Catalog.load(tmp_path / "catalog")
    assert catalog.metadata["path"].is_unique and len(catalog) == good
    assert "repeated" not in set(catalog.metadata["title"])  # the first row naming a file is the one kept
    assert catalog.info.last_operation["duplicates"] == 2
    # `add` drops repeated rows the same way, and says so.
    again = add_to_catalog(tmp_path / "catalog", manifest, progress=False)
    assert again.duplicates == 2 and not again.wrote


def test_a_path_longer_than_the_file_system_allows_is_skipped_like_any_unreadable_row(shop, tmp_path, models):
    manifest, folder, good = shop
    too_long_name = "images/" + "x" * 300 + ".png"  # over NAME_MAX (255)
    too_long_path = "images/" + "/".join(["y" * 200] * 25) + ".png"  # over PATH_MAX (4096)
    table = pd.read_csv(manifest)
    rows = pd.DataFrame([{"path": too_long_name, "category": "tops", "product_id": "long", "title": "long"},
                         {"path": too_long_path, "category": "tops", "product_id": "long", "title": "long"}])
    longer = manifest.parent / "longer.csv"
    pd.concat([table.iloc[:2], rows, table.iloc[2:]]).to_csv(longer, index=False)

    built = build_catalog(longer, models[0], tmp_path / "built", progress=False)
    assert built.items == good
    reasons = dict(built.skipped)
    assert "File name too long" in reasons[too_long_name] and "File name too long" in reasons[too_long_path]

    added = add_to_catalog(folder, longer, progress=False)
    reasons = dict(added.skipped)
    assert added.unchanged == good
    assert reasons[too_long_name] == reasons[too_long_path] == "file not readable: File name too long"


# ---------------------------------------------------------------- undo: restore an earlier version

def test_restore_makes_the_previous_version_current_and_can_itself_be_undone(shop):
    from index.catalog.operations import restore_catalog
    from index.catalog.store import list_versions

    manifest, folder, good = shop
    before = snapshot(folder)
    remove_from_catalog(folder, ids=[0, 1], progress=False)
    removed = snapshot(folder)
    versions = list_versions(folder)
    assert [(v.version, v.current, v.items) for v in versions] == [(removed[0], True, good - 2),
                                                                   (before[0], False, good)]
    assert versions[0].last_operation["operation"] == "remove" and all(v.restorable for v in versions)

    report = restore_catalog(folder)
    assert (report.operation, report.version, report.undone_version, report.items) == ("restore", before[0],
                                                                                       removed[0], good)
    assert "is current again" in report.summary()
    restored = snapshot(folder)
    assert restored[0] == before[0]
    np.testing.assert_array_equal(restored[1], before[1])
    pd.testing.assert_frame_equal(restored[2], before[2])
    np.testing.assert_array_equal(restored[3][1], before[3][1])
    info = read_info(folder)
    assert info.previous_version == removed[0] and info.counts["items"] == good
    assert info.last_operation["operation"] == "restore"

    restore_catalog(folder)  # undo the undo: the removal again
    assert snapshot(folder)[0] == removed[0] and len(Catalog.load(folder)) == good - 2


def test_ids_given_out_before_a_restore_are_never_given_out_again(shop, tmp_path):
    from index.catalog.operations import restore_catalog

    manifest, folder, good = shop
    product_image(0, 9, 0).save(manifest.parent / "images" / "new-0.png")
    more = tmp_path / "shop" / "more.csv"
    pd.concat([pd.read_csv(manifest), pd.DataFrame([{"path": "images/new-0.png", "category": "tops",
                                                      "product_id": "tops-9", "title": "n"}])]).to_csv(more, index=False)
    add_to_catalog(folder, more, progress=False)  # id `good` given to new-0.png
    restore_catalog(folder)  # new-0.png is gone again
    assert read_info(folder).next_id == good + 1
    add_to_catalog(folder, more, progress=False)
    assert Catalog.load(folder).ids.max() == good + 1


def test_restore_refuses_what_it_cannot_do_and_changes_nothing(shop, tmp_path, models):
    from index.catalog.operations import restore_catalog

    manifest, folder, good = shop
    with pytest.raises(CatalogError, match="no earlier version to restore"):
        restore_catalog(folder)  # a new catalog has one version
    remove_from_catalog(folder, ids=[0], progress=False)
    current = read_info(folder).version
    for bad in ("20990101T000000000000-abcdef", "../catalog", ".tmp-x"):
        with pytest.raises(CatalogError, match="has no version"):
            restore_catalog(folder, bad)
    assert not restore_catalog(folder, current).wrote  # already current: nothing written
    with catalog_lock(folder, "rebuild"):
        with pytest.raises(CatalogLockedError):
            restore_catalog(folder)
    previous = read_info(folder).previous_version
    (folder / "versions" / previous / "catalog.json").unlink()  # as versions written before they kept one
    with pytest.raises(CatalogError, match="cannot be restored"):
        restore_catalog(folder)
    assert read_info(folder).version == current and len(Catalog.load(folder)) == good - 1


def test_an_interrupted_restore_leaves_the_catalog_as_it_was(shop, monkeypatch):
    from index.catalog.operations import restore_catalog

    manifest, folder, good = shop
    remove_from_catalog(folder, ids=[0], progress=False)
    before = snapshot(folder)

    def fail(*args, **kwargs):
        raise OSError("disk gone")
    monkeypatch.setattr(store, "write_info", fail)
    with pytest.raises(OSError):
        restore_catalog(folder)
    monkeypatch.undo()
    after = snapshot(folder)
    assert after[0] == before[0] and len(Catalog.load(folder)) == good - 1
    assert restore_catalog(folder).items == good
