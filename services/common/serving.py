"""uvicorn options shared by the three services' ``serve`` commands.

Pinned rather than left to uvicorn's defaults, so an upgrade or an extra package cannot
loosen them silently:

* ``http="h11"``: with ``httptools`` installed, uvicorn's "auto" would switch parsers and
  ignore the header-size limit below.
* ``h11_max_incomplete_event_size``: a request line plus headers larger than 16 KiB is
  refused (and the connection closed) instead of being buffered without end.
* ``timeout_keep_alive``: an idle keep-alive connection is closed after 5 s.

uvicorn has no timeout for reading a request's headers: a client that sends them a byte
at a time holds its connection for as long as it likes (checked in
tests/reliability/test_slow_clients.py). docs/reliability.md says which ingress setting
covers that.
"""

from __future__ import annotations

from typing import Any

MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_SECONDS = 5


def uvicorn_limits() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``."""
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
