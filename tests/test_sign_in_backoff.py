"""The catalog-management token: weak configured tokens are refused with the reason, repeated wrong
tokens are slowed down per client address (on an injected clock), and signing in over plain HTTP
from another machine is warned about."""
from __future__ import annotations

import base64
import random
import re
from pathlib import Path

import pytest

from app.settings import admin_token_problem, is_admin_token, plain_http_problem, token_weakness
from app.sign_in_backoff import SignInBackoff

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("token, reason", [
    ("short", "shorter than 16 characters (5)"),
    ("aaaaaaaaaaaaaaaa", "only 1 different characters"),
    ("abcdabcdabcdabcd", "only 4 different characters"),
    ("password12345678", "too predictable: about 62 bits"),
    ("0123456789abcdef", "too predictable: about 64 bits"),
])
def test_a_weak_configured_token_is_refused_with_the_reason(token, reason):
    assert reason in token_weakness(token)
    environ = {"COINSP_ADMIN_TOKEN": token}
    problem = admin_token_problem(environ)
    assert problem.startswith("Catalog management is off: COINSP_ADMIN_TOKEN is too weak: it") and reason in problem
    assert not is_admin_token(token, environ)  # management stays off, even for the matching token


def test_random_tokens_as_run_sh_and_openssl_make_them_pass():
    assert "secrets.token_urlsafe(24)" in (ROOT / "run.sh").read_text()
    draws = random.Random(2026)  # the same bytes on every machine: exact, not probable
    for _ in range(10_000):
        raw = draws.randbytes(24)
        assert token_weakness(base64.urlsafe_b64encode(raw).decode().rstrip("=")) is None  # token_urlsafe(24)
        assert token_weakness(raw[:16].hex()) is None  # openssl rand -hex 16
    for token in ("a-long-enough-secret-for-tests", "a-browser-test-token-for-catalog-managers"):
        assert token_weakness(token) is None and is_admin_token(token, {"COINSP_ADMIN_TOKEN": token})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_tokens_make_their_address_wait_longer_and_longer():
    clock = Clock()
    backoff = SignInBackoff(clock, free=3, first_wait_s=2, max_wait_s=300)
    assert [backoff.failed("10.0.0.5") for _ in range(2)] == [0, 0]  # typos cost nothing
    assert backoff.wait_left("10.0.0.5") == 0
    assert backoff.failed("10.0.0.5") == 2
    assert backoff.wait_left("10.0.0.5") == 2 and backoff.wait_left("10.0.0.6") == 0  # per address
    clock.now += 1.5
    assert backoff.wait_left("10.0.0.5") == 0.5
    clock.now += 0.5
    assert backoff.wait_left("10.0.0.5") == 0
    assert [backoff.failed("10.0.0.5") for _ in range(10)] == [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_two_hundred_guesses_now_take_hours():
    backoff = SignInBackoff(Clock())
    assert sum(backoff.wait_after(n) for n in range(1, 201)) > 15 * 3600


def test_the_right_token_clears_the_count_and_old_failures_are_forgotten():
    clock = Clock()
    backoff = SignInBackoff(clock, free=1, first_wait_s=2, forget_after_s=3600)
    backoff.failed("a")
    backoff.succeeded("a")
    assert backoff.wait_left("a") == 0 and backoff.failed("a") == 2  # counted from the start again
    clock.now += 3600
    assert backoff.failed("a") == 2  # an hour later the earlier failure no longer counts


def test_at_most_max_clients_addresses_are_remembered():
    backoff = SignInBackoff(Clock(), free=1, max_clients=3)
    for address in ("a", "b", "c", "d"):
        backoff.failed(address)
    assert backoff.wait_left("a") == 0 and backoff.wait_left("d") > 0  # the oldest was dropped


@pytest.mark.parametrize("url, warned", [
    ("http://192.168.1.20:8501/catalog", True),
    ("http://shop.example.com/catalog", True),
    ("https://shop.example.com/catalog", False),
    ("http://127.0.0.1:8501/catalog", False),
    ("http://localhost:8501/catalog", False),
    ("http://[::1]:8501/catalog", False),
    (None, False),
])
def test_plain_http_from_another_machine_is_warned_about(url, warned):
    problem = plain_http_problem(url)
    assert (problem is not None) == warned
    if warned:
        assert re.search("plain HTTP .*TLS proxy", problem)
