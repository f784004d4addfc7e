"""Prometheus plumbing every service uses the same way.

Each app instance keeps its metrics in a :class:`CollectorRegistry` of its own: several
apps in one process (tests, the demo) would otherwise collide on metric names in the
global default registry. Each service defines its own metrics in its own module; what is
common is the HTTP request pair that :class:`RequestContextMiddleware` reports to and the
``/metrics`` answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.responses import Response


class RequestMetrics:
    """HTTP requests by route template, method and status, and latency by route template.

    :meth:`observe` is the ``observe`` callback of
    :class:`services.common.request_context.RequestContextMiddleware`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        requests: tuple[str, str],
        latency: tuple[str, str],
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        """``requests`` and ``latency`` are (metric name, help text)."""
        self.requests = Counter(*requests, ["route", "method", "status"], registry=registry)
        self.latency = Histogram(*latency, ["route"], buckets=buckets, registry=registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)


def metrics_response(registry: CollectorRegistry) -> Response:
    """The ``GET /metrics`` answer: ``registry`` in the Prometheus text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
