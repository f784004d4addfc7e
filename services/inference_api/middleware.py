"""Per-request context: a request id, one log line and the request metrics.

Written as plain ASGI rather than with ``BaseHTTPMiddleware``: it adds no task or body
copy per request, which matters for a latency budget of a few milliseconds.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.inference_api.logs import request_id_var
from services.inference_api.metrics import InferenceMetrics

log = logging.getLogger("services.inference_api.access")

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})  # probes: debug level only


class RequestContextMiddleware:
    """Sets the request id (``X-Request-ID`` in and out), logs and measures each request."""

    def __init__(self, app: ASGIApp, metrics: InferenceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(route_path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route_path).observe(elapsed)
            log.log(
                logging.DEBUG if route_path in _QUIET_ROUTES else logging.INFO,
                "%s %s",
                scope["method"],
                scope["path"],
                extra={"fields": {"status": status, "ms": round(elapsed * 1000, 2)}},
            )
            request_id_var.reset(token)
