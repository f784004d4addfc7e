"""Turns FastAPI's request validation errors into one readable sentence."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError


def validation_message(exc: RequestValidationError) -> str:
    """``invalid request: field.path: message; ...`` naming every problem."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "invalid request: " + "; ".join(parts)
