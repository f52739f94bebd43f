"""python -m index: every command, and one-line errors (exit status 2) for user errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from index.__main__ import main
from index.catalog.loaded import Catalog
from index.catalog.store import catalog_lock, read_info
from tests.support.models import random_model

ROOT = Path(__file__).resolve().parents[1]



def write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (28, 28)).astype(np.uint8), mode="L").save(folder / name)


@pytest.fixture
def shop(tmp_path):
    names = [f"{c}{i}.png" for c in "ab" for i in range(6)]
    write_images(tmp_path / "shop" / "images", names)
    (tmp_path / "shop" / "images" / "bad.png").write_text("not an image")
    rows = [{"path": f"images/{n}", "category": n[0], "product_id": f"{n[0]}{int(n[1]) // 2}"} for n in names]
    rows.append({"path": "images/bad.png", "category": "a", "product_id": "a9"})
    manifest = tmp_path / "shop" / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return {"manifest": manifest, "model": random_model(tmp_path / "a.pt", ["a", "b"], seed=0), "model_b": random_model(tmp_path / "b.pt", ["a", "b"], seed=1),
            "catalog": tmp_path / "catalog", "tmp": tmp_path}


def run(capsys, *argv):
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def build(shop, capsys):
    return run(capsys, "build", "--manifest", shop["manifest"], "--model", shop["model"], "--out", shop["catalog"])


def test_build_info_search_evaluate(shop, capsys, tmp_path):
    code, out, err = build(shop, capsys)
    assert code == 0, err
    assert "build: 12 items" in out and "1 skipped" in out and "images/bad.png" in out and "index: Flat" in out
    code, out, _ = run(capsys, "info", "--catalog", shop["catalog"])
    assert code == 0 and "12" in out and "Flat" in out and "skipped      1" in out
    code, out, _ = run(capsys, "info", "--catalog", shop["catalog"], "--json")
    assert json.loads(out)["counts"]["items"] == 12

    image = shop["manifest"].parent / "images" / "a3.png"
    code, out, err = run(capsys, "search", "--catalog", shop["catalog"], "--model", shop["model"], "--image", image,
                         "--k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "id"] and "images/a3.png" in lines[1]
    assert "decode+embed" in lines[-1]
    code, out, err = run(capsys, "search", "--catalog", shop["catalog"], "--model", shop["model"], "--id", "0",
                         "--k", "4", "--category", "b", "--json")
    results = json.loads(out)["results"]
    assert code == 0 and len(results) == 4 and {r["category"] for r in results} == {"b"}
    # A random-init model sees every noise image alike (cosines > 0.99): all are near-duplicates.
    code, out, err = run(capsys, "search", "--catalog", shop["catalog"], "--model", shop["model"], "--id", "0",
                         "--hide-duplicates", "0.5", "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 1

    prefix = tmp_path / "reports" / "shop"
    code, out, err = run(capsys, "evaluate", "--catalog", shop["catalog"], "--out", prefix)
    assert code == 0, err
    assert "| all |" in out and "leave-one-out" in out
    saved = json.loads(prefix.with_suffix(".json").read_text())
    assert saved["num_queries"] == 12 and set(saved["per_category"]) == {"a", "b"}
    assert pd.read_csv(prefix.with_suffix(".csv")).shape[0] == 3
    assert prefix.with_suffix(".md").read_text().startswith("# Recall@k")


def test_add_remove_rebuild(shop, capsys):
    assert build(shop, capsys)[0] == 0
    write_images(shop["manifest"].parent / "new" / "c" / "p1", ["x.png", "y.png"], seed=5)
    code, out, err = run(capsys, "add", "--catalog", shop["catalog"], "--images", shop["manifest"].parent / "new")
    assert code == 0, err
    assert "2 added" in out
    catalog = Catalog.load(shop["catalog"])
    assert catalog.metadata["path"].iloc[-1] == "new/c/p1/y.png" and catalog.ids.tolist()[-2:] == [12, 13]
    code, out, err = run(capsys, "remove", "--catalog", shop["catalog"], "--ids", "0", "1", "--paths", "new/c/p1/x.png")
    assert code == 0 and "3 removed" in out
    code, out, err = run(capsys, "rebuild", "--catalog", shop["catalog"], "--index", "HNSW16")
    assert code == 0 and "HNSW16" in out and "recall@10" in out
    code, out, err = run(capsys, "rebuild", "--catalog", shop["catalog"], "--model", shop["model_b"])
    assert code == 0 and read_info(shop["catalog"])["counts"]["items"] == 11
    code, out, err = run(capsys, "search", "--catalog", shop["catalog"], "--model", shop["model_b"], "--id", "13")
    assert code == 0 and len(out.splitlines()) == 12  # header + 10 results + timing


def test_ensure_builds_once_then_is_up_to_date(shop, capsys):
    argv = ["ensure", "--manifest", shop["manifest"], "--model", shop["model"], "--out", shop["catalog"]]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "build: 12 items" in out
    version = read_info(shop["catalog"])["version"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and read_info(shop["catalog"])["version"] == version
    code, out, _ = run(capsys, "ensure", "--manifest", shop["manifest"], "--model", shop["model_b"],
                       "--out", shop["catalog"])
    assert code == 0 and "re-embedding" in out
    assert read_info(shop["catalog"])["model_fingerprint"] != read_info(shop["catalog"]).get("x")


@pytest.mark.parametrize("argv, message", [
    (["build", "--manifest", "{tmp}/none.csv", "--model", "{model}", "--out", "{tmp}/c2"], "manifest not found"),
    (["build", "--manifest", "{manifest}", "--model", "{tmp}/none.pt", "--out", "{tmp}/c2"], "checkpoint not found"),
    (["build", "--manifest", "{manifest}", "--model", "{model}", "--out", "{catalog}"], "already holds a catalog"),
    (["build", "--manifest", "{manifest}", "--model", "{model}", "--out", "{tmp}/c3", "--index", "Nope"], "cannot build index"),
    (["search", "--catalog", "{catalog}", "--model", "{model_b}", "--id", "1"], "Rebuild the catalog with this model"),
    (["search", "--catalog", "{catalog}", "--model", "{model}", "--image", "{manifest}"], "not a readable image"),
    (["search", "--catalog", "{catalog}", "--model", "{model}", "--id", "77"], "no item with id 77"),
    (["search", "--catalog", "{catalog}", "--model", "{model}", "--id", "1", "--category", "zz"], "no items in category"),
    (["info", "--catalog", "{tmp}/nowhere"], "no catalog at"),
    (["remove", "--catalog", "{catalog}"], "give --ids or --paths"),
    (["evaluate", "--catalog", "{catalog}", "--label", "colour"], "no 'colour' column"),
])
def test_user_errors_are_one_line_with_status_2(shop, capsys, argv, message):
    assert build(shop, capsys)[0] == 0
    fields = {k: v for k, v in shop.items()}
    code, out, err = run(capsys, *[a.format(**fields) for a in argv])
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_a_locked_catalog_is_refused(shop, capsys):
    assert build(shop, capsys)[0] == 0
    with catalog_lock(shop["catalog"], "rebuild"):
        code, _, err = run(capsys, "remove", "--catalog", shop["catalog"], "--ids", "1")
    assert code == 2 and "being changed by another process" in err


def test_module_runs_as_a_program(shop):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "index", "info", "--catalog", str(shop["tmp"] / "none")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: no catalog at") and "Traceback" not in done.stderr


def test_restore_lists_versions_and_undoes_the_last_change(shop, capsys):
    assert build(shop, capsys)[0] == 0
    code, _, err = run(capsys, "restore", "--catalog", shop["catalog"])
    assert code == 2 and err.startswith("error: ") and "no earlier version to restore" in err
    first = read_info(shop["catalog"]).version
    assert run(capsys, "remove", "--catalog", shop["catalog"], "--ids", "0", "1")[0] == 0
    second = read_info(shop["catalog"]).version

    code, out, err = run(capsys, "restore", "--catalog", shop["catalog"], "--list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{second}  current  10 items") and lines[0].endswith("by remove")
    assert lines[1].startswith(f"{first}  earlier  12 items") and lines[1].endswith("by build")
    assert read_info(shop["catalog"]).version == second  # --list changes nothing

    code, out, err = run(capsys, "restore", "--catalog", shop["catalog"])
    assert code == 0, err
    assert out.startswith(f"restore: version {first} is current again (12 items)") and f"--version {second}" in out
    assert len(Catalog.load(shop["catalog"])) == 12
    code, out, _ = run(capsys, "restore", "--catalog", shop["catalog"], "--version", second)
    assert code == 0 and len(Catalog.load(shop["catalog"])) == 10
    code, out, _ = run(capsys, "restore", "--catalog", shop["catalog"], "--version", second)
    assert code == 0 and out.strip() == f"version {second} is already the current one"
    code, _, err = run(capsys, "restore", "--catalog", shop["catalog"], "--version", "nope")
    assert code == 2 and "has no version 'nope'" in err and len(err.strip().splitlines()) == 1


def refused(capsys, *argv) -> tuple[int, str]:
    """The exit status and what was printed for arguments the CLI refuses before running anything."""
    try:
        code = main(["-q", *map(str, argv)])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["search", "--id", "1180591620717411303424"], "ids go up to 9223372036854775807"),
    (["search", "--id", "²"], "is not an item id"),
    (["search", "--id", "1", "--min-score", "nan"], "give a number from -1 to 1"),
    (["search", "--id", "1", "--min-score", "5"], "give a number from -1 to 1"),
    (["search", "--id", "1", "--hide-duplicates", "nan"], "give a number from -1 to 1"),
    (["search", "--id", "1", "--hide-duplicates", "-1.5"], "give a number from -1 to 1"),
    (["remove", "--ids", "1180591620717411303424"], "ids go up to 9223372036854775807"),
])
def test_numbers_out_of_range_are_one_line_errors_with_status_2(shop, capsys, argv, message):
    command, *rest = argv
    where = ["--catalog", shop["catalog"]] + (["--model", shop["model"]] if command == "search" else [])
    code, err = refused(capsys, command, *where, *rest)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_box_starting_with_a_minus_sign_is_read_as_the_box(shop, capsys, tmp_path):
    assert build(shop, capsys)[0] == 0
    photo = shop["manifest"].parent / "images" / "a0.png"
    common = ["search", "--catalog", shop["catalog"], "--model", shop["model"], "--image", photo]
    code, err = refused(capsys, *common, "--box", "-5,0,10,10")
    assert code == 2 and "reaches outside the 28x28 photo" in err  # read as a box, then checked as one
    code, err = refused(capsys, *common, "--box", "-0.4,0,27,27", "--min-score", "-1")
    assert code == 0, err
