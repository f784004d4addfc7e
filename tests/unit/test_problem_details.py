"""Every service answers a failure as a problem with a stable code, the same way.

One test per behaviour, run over the three apps (SQLite, no hub, no model loaded); what
only one app does (its own codes, its upload caps, counted errors) is tested in that app's
``test_problems.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from services.aggregator.app import JSON_BODY_LIMIT as HUB_JSON_LIMIT
from services.aggregator.app import create_app as create_hub
from services.hospital_node.app import MAX_BODY_BYTES as NODE_JSON_LIMIT
from services.hospital_node.app import create_app as create_node
from services.inference_api.app import JSON_BODY_LIMIT as INFERENCE_JSON_LIMIT
from services.inference_api.app import create_app as create_inference
from tests.support.problems import (
    CLINICIAN,
    HUB_ADMIN,
    NODE_ADMIN,
    NODE_TOKEN,
    assert_documents_problems,
    assert_problem,
    chunked,
    hub_settings,
    inference_settings,
    node_settings,
    serve,
)

FEEDBACK = f"/predictions/{'0' * 32}/feedback"


@dataclass(frozen=True)
class Service:
    """One app and the requests that show each shared behaviour on it."""

    build: Callable[[Path], FastAPI]
    caller: dict[str, str]
    """Headers of a caller the routes below admit."""
    protected: str
    """A GET route that needs a token."""
    wrong_token: str
    wrong_token_detail: str
    not_allowed: tuple[str, str]
    """A method and a path that does not take it."""
    invalid: tuple[str, str, dict[str, Any], list[str]]
    """Method, path, JSON body that fails validation, and the location named."""
    capped: tuple[str, str, int, bytes]
    """Method, path, the JSON body cap, and how a body over it starts."""
    documented: list[tuple[str, str, tuple[int, ...]]]
    """Operations whose OpenAPI entry lists these problem statuses."""


SERVICES = {
    "hub": Service(
        build=lambda tmp_path: create_hub(hub_settings(tmp_path)),
        caller=HUB_ADMIN,
        protected="/api/v1/task",
        wrong_token="x",
        wrong_token_detail="invalid token",
        not_allowed=("DELETE", "/api/v1/task"),
        invalid=("POST", "/api/v1/nodes", {"name": "no spaces"}, ["body", "name"]),
        capped=("PUT", "/api/v1/task", HUB_JSON_LIMIT, b'{"class_names": ["'),
        documented=[
            ("/api/v1/rounds", "post", (401, 403, 409, 413, 422, 503)),
            ("/api/v1/rounds/{round_id}/updates", "post", (401, 403, 404, 409, 413)),
        ],
    ),
    "node": Service(
        build=lambda tmp_path: create_node(node_settings(tmp_path)),
        caller=NODE_ADMIN,
        protected="/api/v1/jobs",
        wrong_token=NODE_TOKEN,  # the node's token for the hub is no admin token here
        wrong_token_detail="invalid token for the node API",
        not_allowed=("DELETE", "/api/v1/jobs"),
        invalid=("POST", "/api/v1/jobs", {"round_id": 0}, ["body", "round_id"]),
        capped=("POST", "/api/v1/datasets", NODE_JSON_LIMIT, b'{"path": "'),
        documented=[
            ("/api/v1/jobs", "post", (401, 404, 409, 413, 422, 503)),
            ("/api/v1/datasets", "post", (401, 409, 413, 422, 502, 503)),
        ],
    ),
    "inference": Service(
        build=lambda tmp_path: create_inference(inference_settings(tmp_path)),
        caller=CLINICIAN,
        protected="/model",
        wrong_token="x",
        wrong_token_detail="unknown bearer token",
        not_allowed=("GET", "/predict"),
        invalid=("POST", FEEDBACK, {"label": ""}, ["body", "label"]),
        capped=("POST", FEEDBACK, INFERENCE_JSON_LIMIT, b'{"label": "'),
        documented=[
            ("/predict", "post", (401, 403, 413, 415, 422, 503)),
            ("/model/reload", "post", (401, 403, 503)),
        ],
    ),
}

each_service = pytest.mark.parametrize("service", SERVICES.values(), ids=SERVICES.keys())


@each_service
def test_refusals_have_stable_codes(service: Service, tmp_path: Path) -> None:
    with serve(service.build(tmp_path)) as client:
        missing = assert_problem(client.get(service.protected), 401, "unauthenticated")
        assert missing["detail"] == "missing Authorization header (expected 'Bearer <token>')"
        wrong = client.get(
            service.protected, headers={"Authorization": f"Bearer {service.wrong_token}"}
        )
        assert assert_problem(wrong, 401, "unauthenticated")["detail"] == (
            service.wrong_token_detail
        )
        for headers in ({}, service.caller):  # no route: the same with or without a token
            assert_problem(client.get("/api/v1/nowhere", headers=headers), 404, "not_found")
        method, path = service.not_allowed
        refused = client.request(method, path, headers=service.caller)
        assert_problem(refused, 405, "method_not_allowed")
        method, path, body, loc = service.invalid
        refused = client.request(method, path, json=body, headers=service.caller)
        assert assert_problem(refused, 422, "invalid_request")["errors"][0]["loc"] == loc
        crash = assert_problem(client.get("/boom"), 500, "internal")
        assert "kaboom" not in crash["detail"]


@each_service
def test_json_bodies_are_capped_declared_or_chunked(service: Service, tmp_path: Path) -> None:
    method, path, limit, head = service.capped
    json = service.caller | {"Content-Type": "application/json"}
    with serve(service.build(tmp_path)) as client:
        for body in (head + b"x" * limit + b'"}', chunked(limit + 1, size=4096, head=head)):
            refused = client.request(method, path, content=body, headers=json)
            detail = assert_problem(refused, 413, "too_large")["detail"]
            assert detail == f"request body is larger than the limit of {limit} bytes"


@each_service
def test_openapi_declares_the_scheme_and_the_problems(service: Service, tmp_path: Path) -> None:
    schema = service.build(tmp_path).openapi()
    for path, method, statuses in service.documented:
        assert_documents_problems(schema, path, method, *statuses)
