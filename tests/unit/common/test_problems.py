"""The one error model: every failure becomes an ``application/problem+json`` answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.common.problems import (
    COMMON_RESPONSES,
    PROBLEM_MEDIA_TYPE,
    Conflict,
    Unavailable,
    install_problem_handlers,
)

LIMIT = 100
RAW_LIMIT = 1000


class Item(BaseModel):
    name: str


def _app(observed: list[str]) -> FastAPI:
    app = FastAPI(max_body_size=LIMIT)
    install_problem_handlers(app, observe=observed.append)

    @app.post("/items", responses=COMMON_RESPONSES)
    def create(item: Item) -> Item:
        if item.name == "taken":
            raise Conflict("item 'taken' exists", code="item_exists")
        if item.name == "later":
            raise Unavailable("not now", headers={"Retry-After": "3"}, extra={"eta": 3})
        return item

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    raw = APIRouter()

    @raw.post("/raw")
    async def count(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.include_router(raw, max_body_size=RAW_LIMIT)
    return app


@pytest.fixture
def observed() -> list[str]:
    return []


@pytest.fixture
def client(observed: list[str]) -> Iterator[TestClient]:
    with TestClient(_app(observed), raise_server_exceptions=False) as c:
        yield c


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:fedmedclip:problem:{code}"
    assert body["detail"] and body["title"]
    return body


def _chunks(total: int, size: int = 32) -> Iterator[bytes]:
    """``total`` bytes sent chunked (no Content-Length), as a streaming client does."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


def test_service_errors_carry_code_headers_and_extension_members(client, observed) -> None:
    conflict = _problem(client.post("/items", json={"name": "taken"}), 409, "item_exists")
    assert conflict["detail"] == "item 'taken' exists"
    later = client.post("/items", json={"name": "later"})
    assert _problem(later, 503, "unavailable")["eta"] == 3
    assert later.headers["retry-after"] == "3"
    assert observed == ["item_exists", "unavailable"]


def test_validation_names_every_field(client) -> None:
    body = _problem(client.post("/items", json={"nom": 1}), 422, "invalid_request")
    assert body["detail"].startswith("invalid request: body.name: Field required")
    assert body["errors"] == [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]


def test_unknown_route_and_wrong_method(client) -> None:
    assert "'/nowhere'" in _problem(client.get("/nowhere"), 404, "not_found")["detail"]
    assert (
        "GET is not allowed" in _problem(client.get("/items"), 405, "method_not_allowed")["detail"]
    )


@pytest.mark.parametrize(("path", "limit"), [("/items", LIMIT), ("/raw", RAW_LIMIT)])
def test_bodies_over_the_cap_are_413_naming_the_limit(client, observed, path, limit) -> None:
    declared = client.post(path, content=b" " * (limit + 1))
    streamed = client.post(path, content=_chunks(limit + 64))
    for response in (declared, streamed):
        body = _problem(response, 413, "too_large")
        assert body["detail"] == f"request body is larger than the limit of {limit} bytes"
    assert observed == ["too_large", "too_large"]
    under = client.post("/raw", content=_chunks(RAW_LIMIT - 10))  # over the app's cap only
    assert under.json() == {"bytes": RAW_LIMIT - 10}


def test_a_crash_is_500_without_internals(client, observed) -> None:
    body = _problem(client.get("/boom", headers={"X-Request-ID": "r1"}), 500, "internal")
    assert "secret" not in body["detail"]
    assert observed == ["internal"]


def test_openapi_documents_problems_as_problem_json_only() -> None:
    schema = _app([]).openapi()
    responses = schema["paths"]["/items"]["post"]["responses"]
    for status in ("401", "403", "404", "409", "413", "422", "503"):
        assert responses[status]["content"] == {
            PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
        }, status
    components = schema["components"]["schemas"]
    assert {"type", "title", "status", "detail", "code"} <= set(components["Problem"]["required"])
    assert components["Problem"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }
    assert "FieldError" in components and "HTTPValidationError" not in components
