"""Checks shared by the tests of the error model in each service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from services.common.problems import PROBLEM_MEDIA_TYPE


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is an ``application/problem+json`` answer with ``status`` and ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.text
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert body["type"] == f"urn:fedmedclip:problem:{code}"
    assert body["detail"] and body["title"] and body["request_id"]
    return body


def chunked(total: int, size: int = 64 * 1024, head: bytes = b"") -> Iterator[bytes]:
    """``head`` then ``total`` bytes, sent without a Content-Length (chunked)."""
    yield head
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


def assert_documents_problems(schema: dict[str, Any], path: str, method: str, *statuses: int):
    """The operation lists each status with the Problem body, and the bearer scheme."""
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    operation = schema["paths"][path][method]
    assert {"HTTPBearer": []} in operation["security"], path
    for status in statuses:
        content = operation["responses"][str(status)]["content"]
        assert content == {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "Problem" in schema["components"]["schemas"]
