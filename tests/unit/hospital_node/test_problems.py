"""The node answers every failure as a problem with a stable code (no hub needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.hospital_node.app import MAX_BODY_BYTES, create_app
from services.hospital_node.settings import NodeSettings
from tests.support.problems import assert_documents_problems, assert_problem, chunked
from tests.support.processes import free_port

ADMIN = {"Authorization": "Bearer site-admin"}


def _settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        aggregator_url=f"http://127.0.0.1:{free_port()}",  # no hub: it is unreachable
        node_token="node",
        admin_token="site-admin",
        data_roots=[tmp_path],
        data_dir=tmp_path / "node",
        model_store_dir=tmp_path / "store",
        hub_retries=0,
        poll_seconds=60,
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(_settings(tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_refusals_have_stable_codes(node: TestClient) -> None:
    assert_problem(node.get("/api/v1/jobs"), 401, "unauthenticated")
    wrong = node.get("/api/v1/jobs", headers={"Authorization": "Bearer node"})
    assert (
        assert_problem(wrong, 401, "unauthenticated")["detail"] == "invalid token for the node API"
    )
    assert_problem(node.get("/api/v1/jobs/999", headers=ADMIN), 404, "not_found")
    assert_problem(node.get("/api/v1/nowhere", headers=ADMIN), 404, "not_found")
    assert_problem(node.delete("/api/v1/jobs", headers=ADMIN), 405, "method_not_allowed")
    assert_problem(node.post("/api/v1/jobs", json={}, headers=ADMIN), 409, "no_dataset")
    assert_problem(
        node.post("/api/v1/jobs", json={"round_id": 0}, headers=ADMIN), 422, "invalid_request"
    )
    assert "kaboom" not in assert_problem(node.get("/boom"), 500, "internal")["detail"]


def test_a_rejected_dataset_keeps_its_problems_as_extension_members(node: TestClient) -> None:
    body = assert_problem(
        node.post("/api/v1/datasets", json={"path": "absent"}, headers=ADMIN),
        422,
        "dataset_rejected",
    )
    assert body["problems"] == ["absent does not exist."] and body["report"] is None
    assert body["detail"] == "the dataset cannot be used: absent does not exist."


def test_bodies_are_capped_declared_or_chunked(node: TestClient) -> None:
    big = b'{"path": "' + b"x" * MAX_BODY_BYTES + b'"}'
    for body in (big, chunked(MAX_BODY_BYTES + 1, size=4096)):
        refused = node.post("/api/v1/datasets", content=body, headers=ADMIN)
        detail = assert_problem(refused, 413, "too_large")["detail"]
        assert detail == f"request body is larger than the limit of {MAX_BODY_BYTES} bytes"


def test_a_small_chunked_body_is_accepted(node: TestClient) -> None:
    small = chunked(0, head=b'{"path": "absent"}')
    json = ADMIN | {"Content-Type": "application/json"}
    refused = node.post("/api/v1/datasets", content=small, headers=json)
    assert "content-length" not in refused.request.headers  # sent chunked, parsed all the same
    assert assert_problem(refused, 422, "dataset_rejected")["problems"] == [
        "absent does not exist."
    ]


def test_openapi_declares_the_scheme_and_the_problems(tmp_path: Path) -> None:
    schema = create_app(_settings(tmp_path)).openapi()
    assert_documents_problems(schema, "/api/v1/jobs", "post", 401, 404, 409, 413, 422, 503)
    assert_documents_problems(schema, "/api/v1/datasets", "post", 401, 409, 413, 422, 502, 503)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/jobs", {"round_id": 1e30}),
        ("POST", "/api/v1/jobs", {"round_id": 2**63}),
        ("POST", "/api/v1/jobs", {"round_id": 3.0}),
        ("GET", "/api/v1/jobs/9223372036854775808", None),
    ],
)
def test_ids_beyond_the_database_are_a_422(node: TestClient, method, path, body) -> None:
    response = node.request(method, path, json=body, headers=ADMIN)
    assert_problem(response, 422, "invalid_request")
    assert "round_id" in response.json()["detail"] or "job_id" in response.json()["detail"]
