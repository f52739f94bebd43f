"""A picked model's catalog of the same manifest built in the background from the Quality page
(app.catalog_builds, app.model_choice): the page answers while it builds and shows its progress,
then compares the new catalog; builds that cannot or need not run are refused, a failed one
leaves nothing behind."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.catalog_builds import BuildError, CatalogBuilds
from index.catalog import operations
from index.catalog.loaded import Catalog
from index.quality.evaluation import recall_at_k
from tests.support.threads import one_torch_thread
from tests.support.app_pages import signed_in

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TOKEN = "a-long-enough-secret-for-tests"
WAIT_S = 300  # only turns a build that never ends into a failure


@pytest.fixture
def catalogs(tiny_shop, tmp_path) -> Path:
    """A catalogs folder holding a copy of the tiny shop's catalog built with model a only."""
    return tiny_shop.copied_catalogs(tmp_path / "catalogs", with_b=False)


def signed_in_quality_page(tiny_shop, catalogs, monkeypatch) -> AppTest:
    monkeypatch.setenv("COINSP_CATALOG", str(catalogs / "tiny-a"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(catalogs))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=120).run()
    signed_in(at, TOKEN)
    at.switch_page("pages/quality.py").run()
    assert not at.exception, at.exception
    return at


def test_a_picked_model_is_built_in_the_background_then_compared(tiny_shop, catalogs, monkeypatch):
    gate, real_build = threading.Event(), operations.build_catalog

    def build_when_let(*args, **kwargs):  # holds the build until the page has been seen answering
        assert gate.wait(WAIT_S)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(operations, "build_catalog", build_when_let)
    with one_torch_thread():  # the build's thread is the server's: one torch thread, as the tests' shops
        compare_a_built_model(tiny_shop, catalogs, monkeypatch, gate)


def compare_a_built_model(tiny_shop, catalogs: Path, monkeypatch, gate: threading.Event) -> None:
    at = signed_in_quality_page(tiny_shop, catalogs, monkeypatch)
    assert any("(below)" in i.value for i in at.info)  # nothing to compare with yet
    model = at.selectbox(key="build_model")
    fingerprint_b = Catalog.load(tiny_shop.catalog_b).info.model_fingerprint
    assert f"tiny-b.pt · fingerprint {fingerprint_b}" in model.options  # beside the served model
    assert not [o for o in model.options if o.startswith("tiny-a.pt")]  # the catalog's own model is not offered
    model.set_value(tiny_shop.model_b).run()
    at.button(key="build_start").click().run()
    assert not at.exception, at.exception
    from app.model_choice import builds
    job = builds().latest(catalogs / "tiny-a")
    assert job is not None and job.running and job.folder == catalogs / "tiny-a-tiny-b"
    bars = [p.proto.text for p in at.get("progress")]
    assert bars == ["Building tiny-a-tiny-b with tiny-b.pt: starting"]  # the page answered while it builds
    assert at.button(key="build_start").disabled
    gate.set()
    assert job.wait(WAIT_S) and job.state == "done", job.line()
    items = len(Catalog.load(catalogs / "tiny-a"))
    assert job.items == items and (job.done, job.total) != (0, 0)  # the build reported its progress to the page
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="compare_other").value == catalogs / "tiny-a-tiny-b"  # the new catalog, compared
    table = next(d.value for d in at.dataframe if "tiny-a-tiny-b" in d.value.columns).set_index("k")
    built = Catalog.load(catalogs / "tiny-a-tiny-b")
    assert built.info.model_fingerprint == fingerprint_b
    expected = recall_at_k(built.embeddings, built.metadata["product_id"].to_numpy(), ks=(1, 10))
    assert table.loc["R@1", "tiny-a-tiny-b"] == pytest.approx(expected.overall[1])
    assert any(f"Built tiny-a-tiny-b with tiny-b.pt: {items} items" in s.value for s in at.success)
    at.button(key="build_start").click().run()  # the same model again: refused, nothing built
    assert any("already built from this manifest with tiny-b.pt" in e.value for e in at.error)
    assert sorted(p.name for p in catalogs.iterdir() if p.is_dir()) == ["tiny-a", "tiny-a-tiny-b"]


def test_builds_that_cannot_or_need_not_run_are_refused_and_a_failed_one_leaves_nothing(tiny_shop, catalogs,
                                                                                       monkeypatch):
    jobs, source = CatalogBuilds(), catalogs / "tiny-a"
    with pytest.raises(BuildError, match="is the model tiny-a was built with"):
        jobs.start(source, tiny_shop.model, catalogs)
    (catalogs / "not-a-model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BuildError, match="can't be read as a search model"):
        jobs.start(source, catalogs / "not-a-model.pt", catalogs)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(operations, "build_catalog", broken)
    job = jobs.start(source, tiny_shop.model_b, catalogs)
    assert job.wait(WAIT_S) and job.state == "failed" and job.error == "disk full"
    assert not job.folder.exists()  # its own unfinished folder is removed
    assert jobs.latest(source) is job and jobs.running() is None
