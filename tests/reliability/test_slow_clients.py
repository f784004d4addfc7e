"""What uvicorn, run with the services' options (``services.common.serving``), does with
clients that send too much header, stay idle, or send their headers a byte at a time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from services.common.serving import KEEP_ALIVE_SECONDS, MAX_HEADER_BYTES, uvicorn_limits
from tests.support.processes import free_port


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    number = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=number, log_level="warning", **uvicorn_limits()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield number
    server.should_exit = True
    thread.join(timeout=10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


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
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES)
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:80]
        assert _closed_within(sock, 5)


def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert _closed_within(sock, KEEP_ALIVE_SECONDS + 5)
        assert time.monotonic() - started >= KEEP_ALIVE_SECONDS - 0.5


def test_uvicorn_has_no_header_read_timeout_so_the_ingress_must_set_one(port: int) -> None:
    """A slowloris client (headers a byte at a time) keeps its connection past every
    uvicorn timeout. docs/reliability.md gives the ingress setting that covers it; if this
    test starts failing, uvicorn has gained such a timeout and the doc can say so."""
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        deadline = time.monotonic() + KEEP_ALIVE_SECONDS + 3
        while time.monotonic() < deadline:
            sock.sendall(b"X")  # never a complete header line
            assert not _closed_within(sock, 0.5), "uvicorn closed the slow connection"
