"""What the serving layer (``services.common.serving``) does with clients that send too much
header or stay idle (slow headers: ``test_transport.py``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from services.common.serving import MAX_HEADER_BYTES, ServerLimits
from tests.support.processes import ThreadedServer

LIMITS = ServerLimits(keep_alive_seconds=2.0)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    with ThreadedServer(app, limits=LIMITS) as server:
        yield server.port


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Read until the server closes (True) or ``seconds`` pass (False)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    return True


def test_oversized_headers_are_refused_and_the_connection_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES)
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:80]
        assert _closed_within(sock, 5)


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert _closed_within(sock, LIMITS.keep_alive_seconds + 5)
        assert time.monotonic() - started >= LIMITS.keep_alive_seconds - 0.5
