"""How the HTTP API's server treats connections: none stays open for nothing.

uvicorn closes a keep-alive connection that stays idle after a response (`timeout_keep_alive`), but
arms nothing on a new connection: one that sends nothing, or half a request head, or a body that
never ends, was kept for ever (3,000 such connections held 3,000 descriptors after 75 s). Here:

  KEEP_ALIVE_S      an idle connection after a response is closed after this long (uvicorn's timer)
  HEAD_TIMEOUT_S    a connection whose request head (request line and headers) has not fully arrived
                    this long after it opened, or after its previous response, is closed
  BODY_TIMEOUT_S    a request whose body has not fully arrived this long after its head is closed
                    (20 MB in 60 s: 2.7 Mbit/s at least)
  MAX_CONNECTIONS   connections and requests in flight per worker process; uvicorn answers 503 beyond
  MAX_HEAD_BYTES    a request head larger than this is refused (h11's 16 KB default, stated)

`server_options()` is what `python -m app.api` hands to uvicorn.run.
"""
from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

KEEP_ALIVE_S = 5
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 256
MAX_HEAD_BYTES = 16 * 1024


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request: its head within
    `head_timeout` of the connection opening (or of the previous response), its body within
    `body_timeout` of the head. A connection past its deadline is closed."""

    head_timeout = HEAD_TIMEOUT_S
    body_timeout = BODY_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = None
        self._waiting_for = None
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc) -> None:
        self._stop()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline for what the peer still owes: a head (IDLE), a body (SEND_BODY), or nothing."""
        if self.transport.is_closing():
            return self._stop()
        state = self.conn.their_state
        owed = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if owed == self._waiting_for:
            return  # the same part: its deadline stands (trickling bytes do not extend it)
        self._stop()
        self._waiting_for = owed
        if owed is not None:
            delay = self.head_timeout if owed == "head" else self.body_timeout
            self._deadline = self.loop.call_later(delay, self._expired)

    def _stop(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection that did not send its request %s in time", self._waiting_for)
            self.transport.close()


def server_options() -> dict:
    """uvicorn.run's keyword arguments for the bounds above."""
    return {"http": BoundedH11Protocol, "timeout_keep_alive": KEEP_ALIVE_S, "limit_concurrency": MAX_CONNECTIONS,
            "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
