"""What one search may cost, and the share of a server one client may take.

The HTTP API and the Search page pass the same bounds to `SearchService.search`:

  MAX_K               results asked for at most (the API answers 422 above it)
  MAX_CANDIDATES      candidates the index is asked for at most while near-duplicate hiding, one result per
                      product or a filter leave fewer than k: the widening (four times more each round,
                      index.search.grouping.rank_results) stops there and the answer says so (`cut_short`)
  SEARCH_BUDGET_S     no new widening round starts after this long; a round already started finishes
  ROUND_BOUND_S       what one round may then add: with MAX_K and MAX_CANDIDATES the widest round measured
                      0.2 s of CPU (id search, k = 100, hiding at 0.8, 10,000 items of 2,048 numbers)

Without them, k = 1000 with near-duplicate hiding made one request compare 10,000 candidates with up to
1,000 shown results, round after round: 15 s of CPU for one id search.

The API also shares itself out by client address (`ClientShare`): at most CLIENT_RUNNING searches of one
address run at once, CLIENT_WAITING more wait their turn (for at most CLIENT_WAIT_S), and any beyond
are answered 429 with Retry-After, before their body is read, after holding them RETRY_AFTER_S (so
a client that ignores Retry-After cannot turn refusals into a flood). A client that sends many
requests at once then slows only itself.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

MAX_K = 100
MAX_CANDIDATES = 4096
SEARCH_BUDGET_S = 1.0
ROUND_BOUND_S = 0.5
CLIENT_RUNNING = 2  # searches of one client address running at once, per server process
CLIENT_WAITING = 16  # more of them waiting for a turn; beyond that, 429
# The longest a request waits for its turn before 429; COINSP_CLIENT_WAIT_S sets another (a gateway that
# queues for its many users behind one address, or a test whose clients all come from loopback).
CLIENT_WAIT_S = float(os.environ.get("COINSP_CLIENT_WAIT_S", "10"))
RETRY_AFTER_S = 1


def search_bounds() -> dict:
    """The keyword arguments that bound one SearchService.search."""
    return {"max_candidates": MAX_CANDIDATES, "time_budget_s": SEARCH_BUDGET_S}


@dataclass
class _Turns:
    """One client's searches: a semaphore for its running ones, and how many are running or waiting
    (counted on arrival, before any await, so a burst arriving at once is counted exactly)."""
    running: asyncio.Semaphore
    admitted: int = 0  # the entry is dropped when it falls to 0


class ClientShare:
    """ASGI middleware: per client address, at most `running` requests to `paths` at once, `waiting`
    more queued (each for at most `wait_s`), the rest answered 429 with Retry-After after
    `refusal_hold_s`.

    The client is `scope["client"]`'s host: the peer address, or the address a trusted proxy sends in
    X-Forwarded-For (uvicorn's --forwarded-allow-ips). Runs on the server's event loop, so the
    bookkeeping needs no lock; entries of clients with nothing in flight are dropped.
    """

    def __init__(self, app, *, paths: tuple[str, ...] = ("/search",), running: int = CLIENT_RUNNING,
                 waiting: int = CLIENT_WAITING, wait_s: float = CLIENT_WAIT_S, refusal_hold_s: float = RETRY_AFTER_S):
        self.app, self.paths, self.running, self.waiting, self.wait_s = app, paths, running, waiting, wait_s
        self.refusal_hold_s = refusal_hold_s
        self.clients: dict[str, _Turns] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        turns = self.clients.get(client)
        if turns is None:
            turns = self.clients[client] = _Turns(asyncio.Semaphore(self.running))
        if turns.admitted >= self.running + self.waiting:
            await asyncio.sleep(self.refusal_hold_s)
            return await _refuse(send, f"too many requests from {client} at once: at most {self.running} run and "
                                       f"{self.waiting} wait; retry after {RETRY_AFTER_S} s")
        turns.admitted += 1
        try:
            try:
                if turns.running.locked():
                    await asyncio.wait_for(turns.running.acquire(), self.wait_s)
                else:
                    await turns.running.acquire()  # free: taken at once
            except asyncio.TimeoutError:
                return await _refuse(send, f"too many requests from {client}: this one waited {self.wait_s:g} s "
                                           f"for one of its {self.running} turns; retry later")
            try:
                await self.app(scope, receive, send)
            finally:
                turns.running.release()
        finally:
            turns.admitted -= 1
            if turns.admitted == 0:
                self.clients.pop(client, None)


async def _refuse(send, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body})
