"""Driving the Streamlit app in AppTest as its users do."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def signed_in(at: AppTest, token: str) -> AppTest:
    """Sign in as the catalog manager on the Catalog page, as a person would (the page stays there)."""
    at.switch_page("pages/catalog.py").run()
    at.text_input(key="manager_token").set_value(token)
    at.button(key="manager_sign_in_submit").click().run()
    assert not at.exception, at.exception
    return at
