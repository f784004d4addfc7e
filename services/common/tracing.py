"""W3C Trace Context (``traceparent``) across the services, without a tracing SDK.

One trace id follows a unit of work from service to service so that its log lines can be
joined: a node's training job is one trace (every hub request of the job carries its trace
id, each with a new span id), and a request that arrives with a valid ``traceparent`` is
served, logged and propagated under the caller's trace id. The id lives in a context
variable, so log lines (``structured_logging``) and outgoing hub calls (``hub_client``)
made while serving a request or running a job pick it up without being passed it.

Header format (https://www.w3.org/TR/trace-context/): ``00-<32 hex trace id>-<16 hex parent
span id>-<2 hex flags>``, lower-case hex, ids not all zeros, version ``ff`` invalid. A later
version may append fields after the flags; they are ignored. An invalid header is
dropped and a new trace started, as the recommendation asks.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACERESPONSE = "traceresponse"
"""Response header naming the trace and the server's span (W3C Trace Context Level 2)."""

_HEADER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_SAMPLED = "01"


@dataclass(frozen=True)
class TraceContext:
    """The current trace and span: what a ``traceparent`` header carries."""

    trace_id: str
    span_id: str
    flags: str = _SAMPLED

    @classmethod
    def start(cls) -> TraceContext:
        """A new trace (random ids, as the recommendation asks of a trace's first service)."""
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A new span of the same trace (one per outgoing request)."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The context a ``traceparent`` header names, or None when it is absent or invalid."""
    if not value:
        return None
    match = _HEADER.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
        return None
    if set(span_id) == {"0"}:
        return None
    return TraceContext(trace_id, span_id, flags)


trace_var: ContextVar[TraceContext | None] = ContextVar("trace", default=None)


def current_trace_id() -> str | None:
    context = trace_var.get()
    return context.trace_id if context else None


@contextmanager
def traced(context: TraceContext | None = None) -> Iterator[TraceContext]:
    """Run the block under ``context`` (a new trace when None); restores the previous one."""
    context = context or TraceContext.start()
    token = trace_var.set(context)
    try:
        yield context
    finally:
        trace_var.reset(token)


def current_traceparent() -> str | None:
    """The header of the current span (to hand work over, e.g. to a job), or None."""
    context = trace_var.get()
    return context.header() if context else None


def outgoing_traceparent() -> str:
    """The header for one outgoing request: a new span of the current trace (or a new
    trace when nothing is being traced)."""
    context = trace_var.get()
    return (context.child() if context else TraceContext.start()).header()
