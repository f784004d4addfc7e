"""Serving a service with uvicorn, the same way for all three services.

One place decides what the HTTP server does before our app sees a request:

* uvicorn's own access log stays off: it writes the raw target with its query string (a
  token passed as ``?token=`` would land in the log). :class:`RequestContextMiddleware`
  logs one line per request, path only, with the request id.
* Connections that never finish their request headers are closed after
  ``header_timeout_seconds`` (uvicorn has no such timeout: its keep-alive timer only runs
  between requests, so a client sending a header byte by byte would hold a connection
  and its buffers forever). Idle keep-alive connections close after
  ``keep_alive_seconds``.
* Header blocks are capped (h11's incomplete-event limit), so a client cannot make the
  server buffer an unbounded header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 64 * 1024
"""Far above any legitimate header block here (a bearer JWT is a few KB)."""


class HeaderTimeoutProtocol(H11Protocol):
    """h11 protocol that closes a connection whose request headers arrive too slowly.

    A timer runs from the first byte of each request (and from the connection's opening)
    until the request line and headers are complete.
    """

    header_timeout_seconds: float = 15.0
    _header_timer: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # request line and headers are complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        self.logger.info(
            "closed a connection whose request headers did not arrive within %.0f s",
            self.header_timeout_seconds,
        )
        self.transport.close()


@dataclass(frozen=True)
class ServerLimits:
    """Timeouts and caps of the HTTP server, below the app."""

    header_timeout_seconds: float = 15.0
    keep_alive_seconds: float = 5.0
    max_header_bytes: int = MAX_HEADER_BYTES

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that apply these limits."""
        protocol = type(
            "HeaderTimeoutProtocol",
            (HeaderTimeoutProtocol,),
            {"header_timeout_seconds": self.header_timeout_seconds},
        )
        return {
            "http": protocol,
            "timeout_keep_alive": self.keep_alive_seconds,
            "h11_max_incomplete_event_size": self.max_header_bytes,
            "access_log": False,
            "log_config": None,
        }


def serve(
    app: Any, *, host: str, port: int, limits: ServerLimits | None = None, **extra: Any
) -> None:
    """Run ``app`` (an ASGI app, or an import string with ``factory=True`` in ``extra``)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, **(limits or ServerLimits()).uvicorn_options(), **extra)
