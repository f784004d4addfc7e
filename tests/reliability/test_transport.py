"""What reaches the services below the app: dropped uploads, slow headers, query strings.

Each service runs under uvicorn as ``fedmedclip ... serve`` runs it
(``services.common.serving.ServerLimits``), on a loopback port, spoken to over raw sockets
where a well-behaved client library would not misbehave on purpose.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from fastapi import FastAPI

from services.aggregator.app import create_app as create_hub
from services.common.serving import ServerLimits
from tests.integration.inference.helpers import CLINICIAN, make_settings, serve
from tests.reliability.support import hub_settings, threaded_hub
from tests.support.hub import ADMIN_TOKEN
from tests.support.processes import ThreadedServer


def _drop_mid_body(port: int, head: str, sent: int = 1000) -> None:
    """Send ``head`` (announcing a larger body), part of the body, then hang up."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode() + b"x" * sent)
        time.sleep(0.3)
    time.sleep(0.7)  # let the server notice and answer into the void


def _assert_one_quiet_line(caplog: pytest.LogCaptureFixture, path: str) -> None:
    mentions = [r for r in caplog.records if path in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info], "a disconnect logged a traceback"
    assert "Traceback" not in caplog.text
    assert all(r.levelno <= logging.WARNING for r in mentions), [r.getMessage() for r in mentions]
    assert 1 <= len(mentions) <= 2, [r.getMessage() for r in mentions]  # handler + access line
    assert any("499" in r.getMessage() or "disconnected" in r.getMessage() for r in mentions)


@pytest.mark.slow
def test_a_dropped_update_upload_is_one_quiet_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with threaded_hub(tmp_path) as (server, hub):
        token = hub.add_node("dropper")
        round_id = hub.open_round(min_clients=1)["id"]
        caplog.clear()
        path = f"/api/v1/rounds/{round_id}/updates"
        _drop_mid_body(
            server.port,
            f"POST {path} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/octet-stream\r\nX-Sample-Count: 5\r\n"
            "Idempotency-Key: drop-1\r\nContent-Length: 100000\r\n\r\n",
        )
        _assert_one_quiet_line(caplog, path)
        assert hub.round(round_id)["updates_received"] == 0


@pytest.mark.slow
def test_a_dropped_image_upload_is_one_quiet_log_line(
    tmp_path: Path, trained_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serve(make_settings(trained_store, tmp_path)) as server:
        caplog.clear()
        _drop_mid_body(
            server.port,
            f"POST /predict HTTP/1.1\r\nHost: site\r\nAuthorization: Bearer {CLINICIAN}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 200000\r\n\r\n"
            '--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n",
        )
        _assert_one_quiet_line(caplog, "/predict")


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF) within ``seconds``; data before is skipped."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(65536) == b"":
                return True
    except TimeoutError:
        pass
    return False


@pytest.mark.slow
def test_connections_that_never_finish_their_headers_are_closed(tmp_path: Path) -> None:
    limits = ServerLimits(header_timeout_seconds=1.0, keep_alive_seconds=30.0)
    app = _hub_app(tmp_path)
    with ThreadedServer(app, limits=limits) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            started = time.monotonic()
            assert _closed_within(slow, 5.0)
            assert time.monotonic() - started < 4.0
        # A kept-alive connection whose second request stalls in its headers is closed too.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5.0)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            assert _closed_within(sock, 5.0)
        # A client that sends its headers in time is not affected.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(0.3)
            sock.sendall(b"Host: x\r\n\r\n")
            sock.settimeout(5.0)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def _hub_app(data_dir: Path) -> FastAPI:
    """A hub app: the smallest real service (these limits sit below any app)."""
    return create_hub(hub_settings(data_dir / "hub"))


def test_query_strings_never_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn's access log writes the raw target; served our way only our line is written."""
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-in-a-query-string"
    with ThreadedServer(_hub_app(tmp_path), log_level="debug") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                f"GET /api/v1/task?token={secret} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n".encode()
            )
            sock.settimeout(5.0)
            assert sock.recv(4096).startswith(b"HTTP/1.1 ")
        time.sleep(0.3)
    assert "/api/v1/task" in caplog.text  # the request was logged ...
    assert secret not in caplog.text  # ... without its query string
