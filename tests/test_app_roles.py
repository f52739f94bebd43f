"""Shoppers search; only a catalog manager, signed in with the server's token, changes the catalog,
and only with files inside the data root. The app refuses to serve without its server settings."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from app.settings import (MAX_UPLOAD_MB, OutsideDataRootError, inside_data_root, is_admin_token,
                          server_settings_problem)
from index.catalog.store import read_info
from tests.support.app_pages import signed_in as sign_in

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TOKEN = "a-long-enough-secret-for-tests"
# Every widget that changes the catalog (app/pages/catalog.py).
MANAGEMENT_KEYS = {"add_source", "add_submit", "remove_ids", "remove_lines", "remove_submit", "rebuild_reembed",
                   "rebuild_submit", "build_manifest", "build_replace", "build_submit"}
PAGES = ("pages/search.py", "pages/catalog.py", "pages/quality.py")


@pytest.fixture
def shop(tiny_shop, tmp_path, monkeypatch):
    """A private copy of the tiny shop under a data root, its catalog, and a folder outside the root."""
    data = tmp_path / "data"
    shutil.copytree(tiny_shop.manifest.parent, data / "shop")
    catalog = tmp_path / "catalogs" / "shop"
    shutil.copytree(tiny_shop.catalog, catalog)
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_shop.manifest.parent / "images", outside / "new-arrivals")
    monkeypatch.setenv("COINSP_CATALOG", str(catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_DATA_ROOT", str(data))
    monkeypatch.delenv("COINSP_ADMIN_TOKEN", raising=False)
    return {"data": data, "catalog": catalog, "outside": outside}


def widget_keys(at: AppTest) -> set[str]:
    keys = set()
    for kind in ("text_input", "text_area", "multiselect", "checkbox", "button"):
        keys |= {w.key for w in getattr(at, kind) if w.key}
    return keys


def visit_every_page(at: AppTest) -> set[str]:
    seen = set()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, at.exception
        seen |= widget_keys(at)
    return seen


def signed_in(at: AppTest, token: str = TOKEN) -> AppTest:
    return sign_in(at, token)


def test_without_the_token_in_the_environment_no_page_can_change_the_catalog(shop):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not visit_every_page(at) & MANAGEMENT_KEYS
    at.switch_page("pages/catalog.py").run()
    assert "Catalog management is off" in at.info[0].value and "COINSP_ADMIN_TOKEN" in at.info[0].value
    assert "manager_token" not in widget_keys(at)  # nothing to sign in to
    assert not at.metric and not at.table  # no facts about the server's files either


def test_with_the_token_set_a_shopper_gets_only_the_sign_in_form(shop, monkeypatch):
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not visit_every_page(at) & MANAGEMENT_KEYS
    signed_in(at, "a-wrong-guess-of-the-secret")
    assert "not the catalog manager token" in at.error[0].value
    assert not visit_every_page(at) & MANAGEMENT_KEYS


def test_the_right_token_opens_catalog_management_for_the_session(shop, monkeypatch):
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = signed_in(AppTest.from_file(APP, default_timeout=60).run())
    assert {"add_source", "remove_lines", "rebuild_submit", "build_manifest"} <= widget_keys(at)
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN + "-rotated")  # a new token ends the old sign-ins
    at.run()
    assert not widget_keys(at) & MANAGEMENT_KEYS


def test_a_short_or_weak_token_does_not_enable_management():
    assert not is_admin_token("short", {"COINSP_ADMIN_TOKEN": "short"})
    assert not is_admin_token("aaaaaaaaaaaaaaaa", {"COINSP_ADMIN_TOKEN": "aaaaaaaaaaaaaaaa"})
    assert not is_admin_token("", {})
    assert is_admin_token(TOKEN, {"COINSP_ADMIN_TOKEN": TOKEN})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_wrong_tokens_make_the_address_wait_even_for_the_right_one(shop, monkeypatch):
    from app import roles
    from app.sign_in_backoff import SignInBackoff

    clock = Clock()
    monkeypatch.setattr(roles, "SIGN_IN_BACKOFF", SignInBackoff(clock, free=3, first_wait_s=2))
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=60).run()
    for _ in range(2):
        signed_in(at, "a-wrong-guess-of-the-secret")
        assert at.error[0].value == "That is not the catalog manager token."
    signed_in(at, "a-wrong-guess-of-the-secret")
    assert "Wait 2 s before the next try" in at.error[0].value
    signed_in(at)  # the right token, too soon: refused without being looked at
    assert "Too many wrong tokens from your address: try again in 2 s" in at.error[0].value
    assert not widget_keys(at) & MANAGEMENT_KEYS
    clock.now += 2
    signed_in(at)
    assert {"add_source", "rebuild_submit"} <= widget_keys(at)


@pytest.mark.parametrize("url, warned", [("http://192.168.1.20:8501/catalog", True),
                                         ("https://shop.example.com/catalog", False),
                                         ("http://127.0.0.1:8501/catalog", False)])
def test_the_sign_in_warns_when_the_page_came_over_plain_http_from_another_machine(shop, monkeypatch, url, warned):
    from app import roles

    monkeypatch.setattr(roles, "browser_url", lambda: url)
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/catalog.py").run()
    warnings = [w.value for w in at.warning if "plain HTTP" in w.value]
    assert len(warnings) == int(warned)
    if warned:
        assert "192.168.1.20:8501" in warnings[0] and "TLS proxy" in warnings[0]


def test_paths_outside_the_data_root_are_refused_before_anything_is_written(shop, monkeypatch):
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = signed_in(AppTest.from_file(APP, default_timeout=60).run())
    version = read_info(shop["catalog"])["version"]
    outside_before = sorted(p.name for p in (shop["outside"] / "new-arrivals").iterdir())

    at.text_input(key="add_source").set_value(str(shop["outside"] / "new-arrivals"))
    at.button(key="add_submit").click().run()
    assert "is outside the data folder" in at.error[0].value
    at.text_input(key="build_manifest").set_value(str(shop["outside"] / ".." / "catalogs" / "shop" / "catalog.json"))
    at.checkbox(key="build_replace").check()
    at.button(key="build_submit").click().run()
    assert "is outside the data folder" in at.error[0].value
    assert not at.exception
    assert read_info(shop["catalog"])["version"] == version  # the served catalog is as it was
    assert sorted(p.name for p in (shop["outside"] / "new-arrivals").iterdir()) == outside_before  # no manifest.csv


def test_a_link_inside_the_data_root_to_outside_it_is_refused(shop):
    link = shop["data"] / "innocent-looking"
    link.symlink_to(shop["outside"])
    with pytest.raises(OutsideDataRootError):
        inside_data_root(link / "new-arrivals", shop["data"])
    with pytest.raises(OutsideDataRootError):
        inside_data_root(shop["data"] / ".." / "elsewhere", shop["data"])
    assert inside_data_root(shop["data"] / "shop" / "manifest.csv", shop["data"]).is_file()


def test_a_path_inside_the_data_root_is_used(shop, monkeypatch):
    monkeypatch.setenv("COINSP_ADMIN_TOKEN", TOKEN)
    at = signed_in(AppTest.from_file(APP, default_timeout=60).run())
    at.text_input(key="build_manifest").set_value(str(shop["data"] / "shop" / "manifest.csv"))
    at.checkbox(key="build_replace").check()
    at.button(key="build_submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.success[0].value.startswith("Build: 24 items")


# ---------------------------------------------------------------- server settings

def test_started_from_another_folder_streamlit_has_no_address_and_no_cap():
    """The premise of the check below: .streamlit/config.toml is read from the working folder only."""
    script = "from streamlit import config; print(config.get_option('server.address'), config.get_option('server.maxUploadSize'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    here = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    elsewhere = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True, text=True, env=env,
                               timeout=60)
    assert here.stdout.split() == ["127.0.0.1", str(MAX_UPLOAD_MB)]
    assert elsewhere.stdout.split() == ["None", "200"]


@pytest.mark.parametrize("address, cap, missing", [
    (None, 20, "no listen address"), ("127.0.0.1", 200, "upload cap of 200 MB"), ("0.0.0.0", 20, None),
    ("127.0.0.1", 5, None)])
def test_server_settings_are_checked(address, cap, missing):
    problem = server_settings_problem({"server.address": address, "server.maxUploadSize": cap}.get)
    assert (problem is None) if missing is None else (missing in problem and "./run.sh" in problem)


def test_the_app_refuses_to_serve_without_its_server_settings(shop, monkeypatch):
    defaults = {"server.address": None, "server.maxUploadSize": 200}
    real = streamlit.get_option
    monkeypatch.setattr(streamlit, "get_option", lambda key: defaults.get(key) if key in defaults else real(key))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "started without its server settings" in at.error[0].value
    assert not at.file_uploader  # no search either
