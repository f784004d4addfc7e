"""Structured logging with the request id and the trace id on every line logged while
serving a request (the trace id also while a node runs a job).

The ids travel in context variables (set by :class:`RequestContextMiddleware`); the
thread pool copies the context, so log calls in route code running in threads carry it too.
Pass structured values with ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from services.common.tracing import current_trace_id

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_HANDLER_NAME = "fedmedclip"


class RequestIdFilter(logging.Filter):
    """Puts the current request id and trace id on each record (``record.request_id``,
    ``record.trace_id``, None outside a trace)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace_id = current_trace_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors in containers (``level`` in lower case)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if trace_id := getattr(record, "trace_id", None):
            entry["trace_id"] = trace_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if trace_id := getattr(record, "trace_id", None):
            line += f" trace_id={trace_id}"
        fields = getattr(record, "fields", {})
        return line + "".join(f" {k}={v}" for k, v in fields.items())


def configure_logging(json_logs: bool, level: int | str = logging.INFO) -> None:
    """Install one stderr handler on the root logger; calling it again replaces it.

    ``level`` is a number or a level name (``"INFO"``), as the services' ``log_level``.
    """
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
