"""Request validation errors: one readable sentence, the field list, and their OpenAPI entry.

FastAPI's default 422 body is a nested list that clients have to walk to learn what was
wrong. Our services answer ``{"detail": "<sentence naming every problem>", "errors":
[{"loc", "msg", "type"}, ...]}`` instead, and document exactly that body for every 422
(:data:`VALIDATION_RESPONSES`), so the OpenAPI schema and the answers agree. The input
values themselves are not echoed back: they may be large or sensitive.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field


class FieldError(BaseModel):
    """One problem with the request: where it is, what is wrong, and its pydantic type."""

    loc: list[str | int] = Field(description="Path to the value, e.g. ['body', 'min_clients'].")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """The body of every 422 answer of the aggregator, the node and the inference API."""

    detail: str = Field(description="One sentence naming every problem.")
    errors: list[FieldError]


VALIDATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ValidationErrorBody,
        "description": "The request does not match its schema; `detail` names every problem.",
    }
}
"""``responses=`` entry for routers: replaces FastAPI's default ``HTTPValidationError``."""


def _describe(error: dict[str, Any]) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid":
        return f"body: invalid JSON ({cause})" if cause else "body: invalid JSON"
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    message = error.get("msg", "invalid value")
    if cause:
        message = f"{message} ({cause})"
    return f"{where}: {message}" if where else message


def validation_message(exc: RequestValidationError) -> str:
    """``invalid request: body.field: message; ...`` naming every problem."""
    return "invalid request: " + ("; ".join(_describe(e) for e in exc.errors()) or "unknown")


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """The :class:`ValidationErrorBody` of ``exc`` as JSON-ready data."""
    errors = [
        FieldError(
            loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            msg=str(e.get("msg", "invalid value")),
            type=str(e.get("type", "value_error")),
        )
        for e in exc.errors()
    ]
    return ValidationErrorBody(detail=validation_message(exc), errors=errors).model_dump()
