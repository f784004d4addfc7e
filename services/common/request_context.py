"""Per-request context: a request id (``X-Request-ID`` in and out), the W3C trace context
(``traceparent`` in, ``traceresponse`` out; see :mod:`services.common.tracing`), an access
log line and an optional metrics callback.

The request is served as a new span of the caller's trace when it sent a valid
``traceparent``, else as the first span of a new trace; either way the trace id is on
every log line of the request and on the hub calls made while serving it.

Plain ASGI rather than ``BaseHTTPMiddleware``: no extra task or body copy per request,
which matters for the inference latency budget.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.structured_logging import request_id_var
from services.common.tracing import (
    TRACEPARENT,
    TRACERESPONSE,
    TraceContext,
    parse_traceparent,
    trace_var,
)

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})  # probes: debug level only

Observer = Callable[[str, str, int, float], None]
"""``observe(route_path, method, status, seconds)`` after each request."""


class RequestContextMiddleware:
    """Assigns the request id, logs one access line and reports to ``observe``."""

    def __init__(self, app: ASGIApp, *, logger: str, observe: Observer | None = None) -> None:
        self.app = app
        self.log = logging.getLogger(logger)
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        caller = parse_traceparent(headers.get(TRACEPARENT.encode(), b"").decode("latin-1"))
        trace = caller.child() if caller else TraceContext.start()
        token = request_id_var.set(request_id)
        trace_token = trace_var.set(trace)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    (TRACERESPONSE.encode(), trace.header().encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route_path = getattr(scope.get("route"), "path", "unmatched")
            if self.observe is not None:
                self.observe(route_path, scope["method"], status, elapsed)
            self.log.log(
                logging.DEBUG if route_path in _QUIET_ROUTES else logging.INFO,
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    }
                },
            )
            trace_var.reset(trace_token)
            request_id_var.reset(token)
