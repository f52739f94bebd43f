"""Slowing down guesses of the catalog-management token, per client address.

The first FREE_FAILURES wrong tokens from an address cost nothing (typos); from then on each wrong
token makes the address wait before its next try, FIRST_WAIT_S doubled at every further failure up to
MAX_WAIT_S. A try during the wait is refused without looking at the token, so it tells a guesser
nothing. The right token clears the address's count. Before, 200 wrong guesses took 11 s; now the
tenth alone waits 256 s, and 200 take about 16 hours.

The clock is injected (`clock`: seconds, monotonic), so the waits are exact in tests. Entries are
forgotten FORGET_AFTER_S after an address's last failure, and at most MAX_CLIENTS are kept (the
oldest dropped first), so a stream of addresses cannot fill memory.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

FREE_FAILURES = 3
FIRST_WAIT_S = 2.0
MAX_WAIT_S = 300.0
FORGET_AFTER_S = 3600.0
MAX_CLIENTS = 10_000


@dataclass
class _Failures:
    count: int
    last: float  # clock time of the last failure
    not_before: float  # clock time of the next allowed try


class SignInBackoff:
    """Per-client waits after repeated wrong tokens. Thread-safe: Streamlit runs each session in
    its own thread, and all sessions share one instance."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, free: int = FREE_FAILURES,
                 first_wait_s: float = FIRST_WAIT_S, max_wait_s: float = MAX_WAIT_S,
                 forget_after_s: float = FORGET_AFTER_S, max_clients: int = MAX_CLIENTS):
        self.clock, self.free, self.first_wait_s, self.max_wait_s = clock, free, first_wait_s, max_wait_s
        self.forget_after_s, self.max_clients = forget_after_s, max_clients
        self._clients: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def wait_left(self, client: str) -> float:
        """Seconds before `client` may try a token again (0: now)."""
        with self._lock:
            entry = self._current(client, self.clock())
            return 0.0 if entry is None else max(0.0, entry.not_before - self.clock())

    def failed(self, client: str) -> float:
        """Record a wrong token from `client`; returns the wait it must now observe (0: none yet)."""
        with self._lock:
            now = self.clock()
            entry = self._current(client, now) or _Failures(0, now, now)
            entry.count += 1
            wait = self.wait_after(entry.count)
            entry.last, entry.not_before = now, now + wait
            self._clients[client] = entry
            self._clients.move_to_end(client)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
            return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def wait_after(self, failures: int) -> float:
        """The wait imposed after the `failures`-th wrong token in a row."""
        if failures < self.free:
            return 0.0
        return min(self.max_wait_s, self.first_wait_s * 2 ** (failures - self.free))

    def _current(self, client: str, now: float) -> _Failures | None:
        entry = self._clients.get(client)
        if entry is not None and now - entry.last >= self.forget_after_s and now >= entry.not_before:
            del self._clients[client]
            return None
        return entry
