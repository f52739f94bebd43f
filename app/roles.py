"""Who may change the catalog: shoppers search; a catalog manager, signed in with the token from
the server's environment (COINSP_ADMIN_TOKEN, see app/settings.py), may also change it.

The sign-in lasts for the browser session and ends when the server's token changes or is removed.
Wrong tokens are slowed down per client address (app/sign_in_backoff.py, one record for all sessions
of this server process); the form warns when the page came over plain HTTP from another machine.
"""
from __future__ import annotations

import hashlib

import streamlit as st

from app.settings import admin_token, admin_token_problem, is_admin_token, plain_http_problem
from app.sign_in_backoff import SignInBackoff

SIGNED_IN_KEY = "catalog_manager_token_digest"
SIGN_IN_BACKOFF = SignInBackoff()  # shared by every session of this process


def client_address() -> str:
    """Who is signing in, for the backoff: the connection's address (Streamlit gives None for a
    loopback one), the same for every session from it."""
    address = st.context.ip_address
    return address if isinstance(address, str) and address else "loopback"


def browser_url() -> str | None:
    return st.context.url


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
    insecure = plain_http_problem(browser_url())
    if insecure:
        st.warning(insecure, icon=":material/no_encryption:")
    with st.form("manager_sign_in"):
        entered = st.text_input("Catalog manager token", type="password", key="manager_token")
        if st.form_submit_button("Sign in", icon=":material/login:", key="manager_sign_in_submit"):
            sign_in(entered)
    return False


def sign_in(entered: str) -> None:
    """Check a token typed in the form, unless this address must still wait after wrong ones."""
    client = client_address()
    wait = SIGN_IN_BACKOFF.wait_left(client)
    if wait > 0:
        st.error(f"Too many wrong tokens from your address: try again in {wait:.0f} s.", icon=":material/timer:")
        return
    if is_admin_token(entered):
        SIGN_IN_BACKOFF.succeeded(client)
        st.session_state[SIGNED_IN_KEY] = token_digest(admin_token())
        st.rerun()
    wait = SIGN_IN_BACKOFF.failed(client)
    later = f" Wait {wait:.0f} s before the next try." if wait > 0 else ""
    st.error(f"That is not the catalog manager token.{later}", icon=":material/error:")
