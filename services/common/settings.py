"""Helpers for the services' pydantic-settings classes."""

from __future__ import annotations

from pydantic import BeforeValidator


def split_commas(value: object) -> object:
    """``"a, b,,c"`` as ``["a", "b", "c"]``; a value that is not a string passes unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaSeparated = BeforeValidator(split_commas)
"""Field metadata for a list read from one comma-separated variable (not JSON):
``Annotated[list[X], NoDecode, CommaSeparated]``."""
