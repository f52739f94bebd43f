"""Hostile input through the catalog's doors as a store would meet it: thousands of rows (so
embedding runs in data-loader workers), repeated rows, a path longer than the file system allows,
and `add --images` of a folder where bad files lie beside good ones and the store keeps its own
manifest. The promise: every good file becomes exactly one item, every bad one is listed with its
reason, no traceback, 0 items lost, and nothing is written into the store's folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from embedder import embed
from tests.support.hostile_corpus import hostile_images, make_hostile_corpus
from index.__main__ import main
from index.catalog.loaded import Catalog
from index.importers import IMAGE_EXTENSIONS
from index.catalog.store import read_info


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_hostile_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def loader_workers(monkeypatch):
    """Embedding in two data-loader workers, as for a manifest of thousands of images."""
    embed_files = embed.Embedder.embed_files

    def with_workers(self, paths, **kwargs):
        return embed_files(self, paths, **{**kwargs, "num_workers": 2, "batch_size": 4})
    monkeypatch.setattr(embed.Embedder, "embed_files", with_workers)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_build_in_loader_workers_makes_each_good_file_one_item_and_lists_every_bad_one(
        corpus, tiny_shop, capsys, tmp_path, loader_workers):
    manifest = corpus["manifest.csv"]
    table = pd.read_csv(manifest.path, dtype=str, keep_default_na=False)
    good_rows = table[table["product_id"].isin(manifest.extra["good"])]
    over_path_max = "images/" + "/".join(["y" * 200] * 25) + ".jpg"  # 5,000 bytes: over PATH_MAX
    mixed = manifest.path.parent / "mixed.csv"
    pd.concat([table, good_rows.assign(title="again"),
               pd.DataFrame([{"path": over_path_max, "category": "hostile", "product_id": "over-path-max"}])]
              ).to_csv(mixed, index=False)

    out_dir = tmp_path / "catalog"
    code, out, err = cli(capsys, "build", "--manifest", mixed, "--model", tiny_shop.model, "--out", out_dir)
    assert code == 0 and "Traceback" not in out + err, err
    assert f"{len(good_rows)} duplicate manifest rows dropped" in out
    catalog = Catalog.load(out_dir)
    assert sorted(map(str, catalog.metadata["product_id"])) == manifest.extra["good"]  # each once: 0 lost
    skipped = {entry["path"]: entry["reason"] for entry in read_info(out_dir).skipped}
    assert len(skipped) == len(manifest.extra["bad"]) + 1
    assert "File name too long" in skipped[over_path_max]


def test_add_images_takes_the_good_files_beside_bad_ones_and_writes_nothing_into_the_folder(
        corpus, tiny_shop, capsys, tmp_path):
    root = corpus["manifest.csv"].path.parent
    first = root / "first.csv"
    pd.DataFrame([{"path": "images/plain.jpg", "category": "base", "product_id": "base"}]).to_csv(first, index=False)
    out_dir = tmp_path / "catalog"
    assert cli(capsys, "build", "--manifest", first, "--model", tiny_shop.model, "--out", out_dir)[0] == 0

    arrivals = root / "arrivals"
    (arrivals / "hostile").mkdir(parents=True)
    listed = [f for f in hostile_images(corpus) if f.path.suffix.lower() in IMAGE_EXTENSIONS]
    for f in listed:
        shutil.copy(f.path, arrivals / "hostile" / f.path.name)
    curated = "path,category,product_id,brand\nhostile/plain.jpg,shoes,SKU-1,Acme\n"
    (arrivals / "manifest.csv").write_text(curated)
    before = sorted(p.name for p in arrivals.rglob("*"))

    code, out, err = cli(capsys, "add", "--catalog", out_dir, "--images", arrivals)
    assert code == 0 and "Traceback" not in out + err, err
    good = sorted(f.path.name for f in listed if not f.refused)
    bad = sorted(f.path.name for f in listed if f.refused)
    catalog = Catalog.load(out_dir)
    added = sorted(Path(p).name for p in catalog.metadata["path"] if p.startswith("arrivals/"))
    assert added == good  # 0 lost
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in catalog.info.skipped}
    assert sorted(skipped) == bad and all(skipped.values())
    assert (arrivals / "manifest.csv").read_text() == curated
    assert sorted(p.name for p in arrivals.rglob("*")) == before
