"""W3C trace context: header parsing, the request middleware, and the hub client's header."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from services.common.hub_client import HubClient
from services.common.request_context import RequestContextMiddleware
from services.common.structured_logging import JsonFormatter, RequestIdFilter
from services.common.tracing import TraceContext, parse_traceparent, traced
from tests.support.processes import ThreadedServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


@pytest.mark.parametrize(
    "header",
    [
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex
        f"ff-{TRACE}-{PARENT}-01",  # forbidden version
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        "garbage",
        "",
    ],
)
def test_invalid_traceparent_is_ignored(header: str) -> None:
    assert parse_traceparent(header) is None


def test_valid_traceparent_and_a_future_version_with_extra_fields() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, PARENT, "01")
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-00-later") == TraceContext(TRACE, PARENT, "00")
    child = TraceContext(TRACE, PARENT).child()
    assert child.trace_id == TRACE and child.span_id != PARENT
    assert parse_traceparent(child.header()) == child


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Log lines as the services write them (JSON, with the request-context filter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware, logger="test.access")

    @app.get("/work")
    def work() -> dict:
        logging.getLogger("test.route").info("working")
        return {}

    return app


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_callers_trace_id_is_on_every_log_line_and_in_the_answer(log_lines) -> None:
    with TestClient(_app()) as client:
        response = client.get("/work", headers={"traceparent": VALID})
    answered = parse_traceparent(response.headers["traceresponse"])
    assert answered is not None and answered.trace_id == TRACE
    assert answered.span_id != PARENT  # the server's own span
    mine = [line for line in _lines(log_lines) if line["logger"].startswith("test.")]
    assert [line["logger"] for line in mine] == ["test.route", "test.access"]
    assert all(line["trace_id"] == TRACE for line in mine)


def test_without_a_valid_traceparent_each_request_starts_a_trace(log_lines) -> None:
    with TestClient(_app()) as client:
        first = client.get("/work", headers={"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"})
        second = client.get("/work")
    traces = [parse_traceparent(r.headers["traceresponse"]).trace_id for r in (first, second)]
    assert TRACE not in traces and traces[0] != traces[1]
    route_lines = [line for line in _lines(log_lines) if line["logger"] == "test.route"]
    assert [line["trace_id"] for line in route_lines] == traces


def test_hub_requests_carry_the_current_trace_with_a_new_span_each() -> None:
    seen: list[str] = []
    app = FastAPI()

    @app.get("/api/v1/task")
    def task(request: Request) -> JSONResponse:
        seen.append(request.headers["traceparent"])
        if len(seen) == 1:  # the first attempt fails: the retry is a new span too
            return JSONResponse({"detail": "busy"}, status_code=503)
        return JSONResponse({"detail": "no task"}, status_code=404)

    with ThreadedServer(app) as server, HubClient(server.url, "t", backoff_seconds=0.01) as hub:
        with traced() as job:
            for _ in range(2):
                with pytest.raises(Exception, match="refused"):
                    hub.get_task()
        outside = len(seen)
        with pytest.raises(Exception, match="refused"):
            hub.get_task()
    parsed = [parse_traceparent(header) for header in seen]
    assert all(p is not None for p in parsed)
    assert {p.trace_id for p in parsed[:outside]} == {job.trace_id}
    assert len({p.span_id for p in parsed[:outside]}) == outside == 3
    assert parsed[outside].trace_id != job.trace_id  # outside a trace: a new one
