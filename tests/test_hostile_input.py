"""Hostile input (tests/hostile_corpus.py) through every door: decode_image, the CLI's search,
build and add, the Streamlit search page, and model loading. Each input gets the handling the
corpus states (a clear refusal or a correct decode); nothing crashes, nothing outside the
catalog root is read, and a checkpoint's pickled code never runs."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from embedder.checkpoint import CheckpointError, load_checkpoint
from embedder.images import ImageError, decode_image
from hostile_corpus import HOSTILE_IMAGE_NAMES, hostile_images, make_hostile_corpus
from index.__main__ import main
from index.catalog import Catalog
from index.store import read_info

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
PIXEL_TOLERANCE = 40  # per channel: JPEG is lossy


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_hostile_corpus(tmp_path_factory.mktemp("hostile"))


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, fragment: str) -> None:
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert fragment in err, err
    assert "Traceback" not in out + err


def assert_decoded_as_promised(image, expected) -> None:
    assert image.mode == "RGB" and image.size == expected.size
    for (x, y), rgb in expected.pixels:
        got = image.getpixel((x, y))
        assert max(abs(a - b) for a, b in zip(got, rgb)) <= PIXEL_TOLERANCE, (expected.name, (x, y), got, rgb)


@contextlib.contextmanager
def files_opened_under(folder: Path):
    """Record every file this process opens below `folder` (Python's audit hook "open")."""
    opened: list[str] = []
    folder = str(folder.resolve())
    active = [True]

    def hook(event, args):
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(args[0]))
            if path.startswith(folder):
                opened.append(path)

    sys.addaudithook(hook)  # hooks cannot be removed: this one is switched off on exit
    try:
        yield opened
    finally:
        active[0] = False


def test_the_corpus_holds_every_hostile_kind(corpus):
    assert sorted(f.name for f in hostile_images(corpus)) == sorted(HOSTILE_IMAGE_NAMES)
    assert {f.kind for f in corpus.values()} == {"image", "manifest", "checkpoint"}
    assert all(f.path.is_file() for f in corpus.values())
    assert corpus["bomb.png"].path.stat().st_size < 1_000_000  # small on disk, 400 Mpx claimed


# ---------------------------------------------------------------- the one decoding path

@pytest.mark.parametrize("name", HOSTILE_IMAGE_NAMES)
def test_decode_image_refuses_or_decodes_as_the_corpus_states(corpus, name):
    expected = corpus[name]
    if expected.refused:
        with pytest.raises(ImageError, match=expected.error):
            decode_image(expected.path)
        with pytest.raises(ImageError, match=expected.error):  # uploads arrive as bytes
            decode_image(expected.path.read_bytes())
    else:
        assert_decoded_as_promised(decode_image(expected.path), expected)
        assert_decoded_as_promised(decode_image(expected.path.read_bytes()), expected)


def test_the_bomb_is_refused_before_its_pixels_are_allocated(corpus):
    # A fresh process, so its peak memory is this decode's: 400 Mpx would need 400 MB at least.
    script = ("import resource, sys\n"
              "from embedder.images import ImageError, decode_image\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "try:\n    decode_image(sys.argv[1])\nexcept ImageError as exc:\n    print(exc)\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    done = subprocess.run([sys.executable, "-c", script, str(corpus["bomb.png"].path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    message, grown_kb = done.stdout.strip().splitlines()
    assert "too large" in message and "400,000,000 pixels" in message
    assert int(grown_kb) < 50_000, f"decoding the bomb raised peak memory by {int(grown_kb) // 1024} MB"
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- checkpoints

def test_the_malicious_checkpoint_is_live_when_loaded_unsafely(tmp_path):
    """The corpus' payload really runs code when unpickled without weights_only (so the refusal
    below is what keeps it from running)."""
    corpus = make_hostile_corpus(tmp_path)
    evil = corpus["evil.pt"]
    script = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    subprocess.run([sys.executable, "-c", script, str(evil.path)], check=True, timeout=120, capture_output=True)
    assert evil.marker.exists()


def test_load_checkpoint_refuses_pickled_code_without_running_it(corpus):
    evil = corpus["evil.pt"]
    with pytest.raises(CheckpointError, match=evil.error) as refused:
        load_checkpoint(evil.path)
    message = str(refused.value)
    assert "refers to code" in message and len(message.splitlines()) == 1
    assert "weights_only" not in message  # torch's advice to load it unsafely is not passed on
    assert not evil.marker.exists()


def test_cli_build_with_the_malicious_model_is_refused_in_one_line(corpus):
    evil = corpus["evil.pt"]
    out = corpus["manifest.csv"].path.parent.parent / "evil-catalog"
    done = subprocess.run([sys.executable, "-m", "index", "-q", "build", "--manifest", str(corpus["manifest.csv"].path),
                           "--model", str(evil.path), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_one_line_error(done.returncode, done.stdout, done.stderr, evil.error)
    assert not evil.marker.exists() and not (out / "catalog.json").exists()


def test_cli_search_with_the_malicious_model_is_refused(corpus, tiny_shop, capsys):
    evil = corpus["evil.pt"]
    assert_one_line_error(*cli(capsys, "search", "--catalog", tiny_shop.catalog, "--model", evil.path,
                               "--image", corpus["plain.jpg"].path), evil.error)
    assert not evil.marker.exists()


# ---------------------------------------------------------------- the CLI

@pytest.mark.parametrize("name", HOSTILE_IMAGE_NAMES)
def test_cli_search_answers_every_hostile_photo(corpus, tiny_shop, capsys, name):
    expected = corpus[name]
    code, out, err = cli(capsys, "search", "--catalog", tiny_shop.catalog, "--model", tiny_shop.model,
                         "--image", expected.path, "--k", "3")
    if expected.refused:
        assert_one_line_error(code, out, err, expected.error)
        assert name in err  # the message names the file
    else:
        assert code == 0 and "3 results over" in out and "Traceback" not in err


def test_cli_search_as_a_program_prints_no_traceback(corpus, tiny_shop):
    done = subprocess.run([sys.executable, "-m", "index", "search", "--catalog", str(tiny_shop.catalog),
                           "--model", str(tiny_shop.model), "--image", str(corpus["truncated.jpg"].path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "corrupt or truncated")


def test_cli_build_indexes_the_good_files_and_lists_the_bad_with_reasons(corpus, tiny_shop, capsys, tmp_path):
    manifest = corpus["manifest.csv"]
    out = tmp_path / "catalog"
    code, stdout, err = cli(capsys, "build", "--manifest", manifest.path, "--model", tiny_shop.model, "--out", out)
    assert code == 0 and "Traceback" not in err
    info = read_info(out)
    reasons = {Path(entry["path"]).name: entry["reason"] for entry in info["skipped"]}
    assert sorted(reasons) == manifest.extra["bad"]
    for name, reason in reasons.items():
        assert corpus[name].error in reason, (name, reason)
        assert name in stdout  # the command lists what it skipped
    catalog = Catalog.load(out)
    assert sorted(Path(p).name for p in catalog.metadata["path"]) == manifest.extra["good"]
    assert catalog.embeddings.shape[0] == len(manifest.extra["good"])
    assert np.isfinite(np.asarray(catalog.embeddings)).all()


def test_cli_add_adds_the_good_files_and_lists_the_bad_with_reasons(corpus, tiny_shop, capsys, tmp_path):
    import pandas as pd

    manifest = corpus["manifest.csv"]
    root = manifest.path.parent
    only_plain = root / "only-plain.csv"
    pd.read_csv(manifest.path).head(1).to_csv(only_plain, index=False)
    out = tmp_path / "catalog"
    assert cli(capsys, "build", "--manifest", only_plain, "--model", tiny_shop.model, "--out", out)[0] == 0
    code, stdout, err = cli(capsys, "add", "--catalog", out, "--manifest", manifest.path)
    assert code == 0 and "Traceback" not in err
    catalog = Catalog.load(out)
    assert sorted(Path(p).name for p in catalog.metadata["path"]) == manifest.extra["good"]
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in catalog.info["skipped"]}
    assert sorted(skipped) == manifest.extra["bad"]
    assert all(corpus[name].error in reason for name, reason in skipped.items())
    assert all(name in stdout for name in manifest.extra["bad"])


def test_cli_refuses_manifests_reaching_outside_the_catalog_root(corpus, tiny_shop, capsys, tmp_path):
    escaping = corpus["escaping-manifest.csv"]
    sentinel: Path = escaping.extra["sentinel"]
    outside = sentinel.parent
    before = sorted((p.name, p.stat().st_mtime_ns) for p in outside.iterdir())
    out = tmp_path / "catalog"
    with files_opened_under(outside) as opened:
        build = cli(capsys, "build", "--manifest", escaping.path, "--model", tiny_shop.model, "--out", out)
    assert_one_line_error(*build, escaping.error)
    assert "../outside/sentinel.png" in build[2]
    assert opened == [] and not (out / "catalog.json").exists()

    shop_copy = tmp_path / "shop"  # `add` to an existing catalog of the same root: refused too
    assert cli(capsys, "build", "--manifest", corpus["manifest.csv"].path, "--model", tiny_shop.model,
               "--out", shop_copy)[0] == 0
    version = read_info(shop_copy)["version"]
    with files_opened_under(outside) as opened:
        add = cli(capsys, "add", "--catalog", shop_copy, "--manifest", escaping.path)
    assert_one_line_error(*add, escaping.error)
    assert opened == [] and read_info(shop_copy)["version"] == version
    assert sorted((p.name, p.stat().st_mtime_ns) for p in outside.iterdir()) == before  # nothing written there


def test_the_open_audit_would_see_a_read_outside_the_root(corpus):
    """The check above can fail: reading the sentinel is recorded."""
    sentinel = corpus["escaping-manifest.csv"].extra["sentinel"]
    with files_opened_under(sentinel.parent) as opened:
        decode_image(sentinel)
    assert opened == [str(sentinel.resolve())]


# ---------------------------------------------------------------- the app

def start_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def result_count(at: AppTest) -> int:
    return sum(1 for c in at.caption if c.value.startswith("**#"))


def upload_name(name: str) -> str:
    """The uploader takes .jpg/.jpeg/.png/.webp names (Streamlit refuses others before the page runs);
    other content arrives under such a name, e.g. a GIF renamed .png."""
    return name if Path(name).suffix in (".jpg", ".jpeg", ".png", ".webp") else name + ".png"


def test_app_search_page_answers_every_hostile_upload_and_keeps_working(corpus, tiny_shop_env):
    at = start_app()
    at.slider(key="search_k").set_value(4).run()
    for name in HOSTILE_IMAGE_NAMES:
        expected = corpus[name]
        name = upload_name(name)
        at.file_uploader(key="search_upload").set_value((name, expected.path.read_bytes(), "image/png")).run()
        assert not at.exception, (name, at.exception)
        if expected.refused:
            assert len(at.error) == 1, (name, [e.value for e in at.error])
            assert name in at.error[0].value and expected.error in at.error[0].value
            assert result_count(at) == 0
        else:
            assert not at.error, (name, at.error[0].value)
            assert result_count(at) == 4  # the option set before the first upload still holds


def test_app_refuses_the_malicious_model_without_running_it(corpus, tiny_shop, monkeypatch):
    evil = corpus["evil.pt"]
    monkeypatch.setenv("COINSP_CATALOG", str(tiny_shop.catalog))
    monkeypatch.setenv("COINSP_MODEL", str(evil.path))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(tiny_shop.catalogs_dir))
    at = start_app()
    assert "Search is not available" in at.error[0].value and evil.error in at.error[0].value
    at.switch_page("pages/catalog.py").run()
    assert not at.exception
    at.switch_page("pages/quality.py").run()
    assert not at.exception
    assert not evil.marker.exists()
