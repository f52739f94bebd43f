"""The HTTP API under hostile use: one request's work is bounded (k, candidates, time) and says when a
bound cut its results short; one client address gets a bounded share; non-finite or out-of-range
numbers are refused; idle and half-sent connections are closed."""
from __future__ import annotations

import asyncio
import socket
import threading
import warnings

import pytest

pytest.importorskip("fastapi", reason="optional extra: pip install -r requirements-distributed.txt")
with warnings.catch_warnings():  # Starlette suggests httpx2 for its TestClient; httpx is what is installed
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402

from app import api, connections, limits  # noqa: E402

WAIT_S = 60  # a generous bound on every wait: the tests assert what happens, never how fast


@pytest.fixture(scope="module")
def client(tiny_shop):
    with TestClient(api.create_app(tiny_shop.catalog, tiny_shop.model)) as http:
        yield http


# ---------------------------------------------------------------- one request's work

def test_k_above_the_maximum_is_refused(client):
    response = client.post("/search", data={"id": "1", "k": str(limits.MAX_K + 1)})
    assert response.status_code == 422 and f"less than or equal to {limits.MAX_K}" in str(response.json()["detail"])
    assert client.post("/search", data={"id": "1", "k": str(limits.MAX_K)}).status_code == 200


def test_the_candidate_cap_stops_the_widening_and_the_answer_says_so(client, monkeypatch):
    monkeypatch.setattr(limits, "MAX_CANDIDATES", 8)
    monkeypatch.setattr(limits, "SEARCH_BUDGET_S", 1e9)  # only the cap can stop it
    # Every result hides every later one: widening could never find 10, so it stops at the cap.
    body = client.post("/search", data={"id": "1", "k": "10", "hide_duplicates_above": "-1"}).json()
    assert body["cut_short"] == {"reason": "max_candidates", "candidates": 8}
    assert len(body["results"]) == 1 and len(body["hidden_near_duplicates"]) == 7


def test_the_time_budget_stops_the_widening_and_the_answer_says_so(client, monkeypatch):
    monkeypatch.setattr(limits, "SEARCH_BUDGET_S", 0.0)  # spent before the first round ends
    body = client.post("/search", data={"id": "1", "k": "10", "hide_duplicates_above": "-1"}).json()
    assert body["cut_short"]["reason"] == "time_budget" and len(body["results"]) < 10


def test_a_search_that_finds_k_results_is_not_cut_short(client, monkeypatch):
    monkeypatch.setattr(limits, "MAX_CANDIDATES", 8)
    monkeypatch.setattr(limits, "SEARCH_BUDGET_S", 1e9)
    body = client.post("/search", data={"id": "1", "k": "5"}).json()
    assert body["cut_short"] is None and len(body["results"]) == 5


@pytest.mark.parametrize("field", ["min_score", "hide_duplicates_above"])
@pytest.mark.parametrize("value, message", [
    ("nan", "finite number"), ("NaN", "finite number"), ("inf", "finite number"), ("-inf", "finite number"),
    ("1e309", "finite number"), ("5", "less than or equal to 1"), ("-5", "greater than or equal to -1"),
    ("1.0000001", "less than or equal to 1"),
])
def test_non_finite_or_out_of_range_numbers_are_refused(client, field, value, message):
    response = client.post("/search", data={"id": "1", field: value})
    assert response.status_code == 422 and message in str(response.json()["detail"]), response.text


# ---------------------------------------------------------------- one client's share

class Gate:
    """A stand-in app whose requests wait until the test lets them finish."""

    def __init__(self):
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send):
        name = scope["query_string"].decode()
        self.started.append(name)
        await self.release.setdefault(name, asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _request(share, client: str, name: str) -> asyncio.Task:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "path": "/search", "client": (client, 5000), "query_string": name.encode()}
    task = asyncio.ensure_future(share(scope, receive, send))
    task.sent = sent
    return task


async def _until(condition) -> None:
    for _ in range(10_000):  # event-loop turns, not seconds
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


def test_one_client_gets_a_bounded_share_and_others_are_not_held_behind_it():
    async def scenario():
        gate = Gate()
        share = limits.ClientShare(gate, running=1, waiting=1, refusal_hold_s=0)
        first, second, third = (_request(share, "10.0.0.1", n) for n in ("first", "second", "third"))
        await _until(lambda: third.done() and "first" in gate.started)
        assert gate.started == ["first"]  # one runs, one waits, the third is refused at once
        status = third.sent[0]
        assert status["status"] == 429 and (b"retry-after", b"1") in status["headers"]
        assert b"too many requests from 10.0.0.1" in third.sent[1]["body"]
        other = _request(share, "10.0.0.2", "other")  # another client runs beside them
        await _until(lambda: "other" in gate.started)
        gate.release["other"].set()
        await other
        gate.release["first"].set()
        await first
        await _until(lambda: "second" in gate.started)  # the waiting one gets its turn
        gate.release["second"].set()
        await second
        assert [t.sent[0]["status"] for t in (first, second, other)] == [200, 200, 200]
        assert share.clients == {}  # nothing kept for clients with nothing in flight

    asyncio.run(scenario())


def test_a_request_waiting_too_long_for_its_turn_is_refused():
    async def scenario():
        gate = Gate()
        share = limits.ClientShare(gate, running=1, waiting=4, wait_s=0)
        first = _request(share, "10.0.0.1", "first")
        await _until(lambda: "first" in gate.started)
        late = _request(share, "10.0.0.1", "late")
        await late
        assert late.sent[0]["status"] == 429 and b"waited" in late.sent[1]["body"]
        gate.release["first"].set()
        await first

    asyncio.run(scenario())


def test_the_api_shares_itself_out_by_client_address(tiny_shop):
    app = api.create_app(tiny_shop.catalog, tiny_shop.model)
    middleware = [m.cls for m in app.user_middleware]
    assert middleware[0] is limits.ClientShare  # outermost: before the body is read


# ---------------------------------------------------------------- connections

def test_the_server_is_started_with_connection_timeouts_and_a_connection_cap(tiny_shop, monkeypatch):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(options))
    assert api.main(["--catalog", str(tiny_shop.catalog), "--model", str(tiny_shop.model)]) == 0
    assert started["http"] is connections.BoundedH11Protocol
    assert started["timeout_keep_alive"] == connections.KEEP_ALIVE_S
    assert started["limit_concurrency"] == connections.MAX_CONNECTIONS
    assert started["h11_max_incomplete_event_size"] == connections.MAX_HEAD_BYTES
    assert connections.BoundedH11Protocol.head_timeout == connections.HEAD_TIMEOUT_S
    assert connections.BoundedH11Protocol.body_timeout == connections.BODY_TIMEOUT_S


class QuickTimeouts(connections.BoundedH11Protocol):
    head_timeout = 0.2  # short, so the test does not wait long; the assertions are on closure only
    body_timeout = 0.2


async def _hello(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def server_port():
    """A real uvicorn server with the API's connection options (shorter timeouts), in a thread."""
    import uvicorn

    options = {**connections.server_options(), "http": QuickTimeouts, "timeout_keep_alive": 1}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_hello, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(WAIT_S * 100):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(WAIT_S)


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes the connection (read returns nothing or a reset); False if it
    answered instead. A socket timeout (WAIT_S) raises: the connection was left open."""
    sock.settimeout(WAIT_S)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return True
    return data == b""


@pytest.mark.parametrize("sent", [
    b"",  # connected, then nothing
    b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le",  # half a head
    b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nhalf a body",  # half a body
])
def test_a_connection_that_does_not_send_its_request_is_closed(server_port, sent):
    with socket.create_connection(("127.0.0.1", server_port), timeout=WAIT_S) as sock:
        sock.sendall(sent)
        assert _closed_by_server(sock)


def test_a_whole_request_is_answered_and_the_idle_connection_then_closed(server_port):
    with socket.create_connection(("127.0.0.1", server_port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(WAIT_S)
        answer = b""
        while not answer.endswith(b"ok"):  # the head and the body may arrive in separate segments
            part = sock.recv(4096)
            assert part, f"closed before the whole answer came: {answer!r}"
            answer += part
        assert answer.startswith(b"HTTP/1.1 200")
        assert _closed_by_server(sock)  # keep-alive timeout
