"""Who may change the catalog: shoppers search; a catalog manager, signed in with the token from
the server's environment (COINSP_ADMIN_TOKEN, see app/settings.py), may also change it.

The sign-in lasts for the browser session and ends when the server's token changes or is removed.
"""
from __future__ import annotations

import hashlib

import streamlit as st

from app.settings import admin_token, admin_token_problem, is_admin_token

SIGNED_IN_KEY = "catalog_manager_token_digest"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_catalog_manager() -> bool:
    """True in a session signed in with the server's current token."""
    token = admin_token()
    if admin_token_problem() is not None or token is None:
        return False
    return st.session_state.get(SIGNED_IN_KEY) == token_digest(token)


def catalog_manager_gate() -> bool:
    """True for a signed-in catalog manager; otherwise shows why not (or the sign-in form) and returns False."""
    if is_catalog_manager():
        if st.sidebar.button("Sign out of catalog management", icon=":material/logout:", key="manager_sign_out"):
            st.session_state.pop(SIGNED_IN_KEY, None)
            st.rerun()
        return True
    problem = admin_token_problem()
    if problem is not None:
        st.info(problem, icon=":material/lock:")
        return False
    st.info("Changing the catalog needs the catalog manager token.", icon=":material/lock:")
    with st.form("manager_sign_in"):
        entered = st.text_input("Catalog manager token", type="password", key="manager_token")
        if st.form_submit_button("Sign in", icon=":material/login:", key="manager_sign_in_submit"):
            if is_admin_token(entered):
                st.session_state[SIGNED_IN_KEY] = token_digest(admin_token())
                st.rerun()
            st.error("That is not the catalog manager token.", icon=":material/error:")
    return False
