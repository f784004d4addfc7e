"""The node's own refusals (what every service answers alike is in
``tests/unit/test_problem_details.py``); no hub needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.hospital_node.app import create_app
from tests.support.problems import NODE_ADMIN, assert_problem, chunked, node_settings, serve


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    with serve(create_app(node_settings(tmp_path))) as client:
        yield client


def test_refusals_have_stable_codes(node: TestClient) -> None:
    assert_problem(node.get("/api/v1/jobs/999", headers=NODE_ADMIN), 404, "not_found")
    assert_problem(node.post("/api/v1/jobs", json={}, headers=NODE_ADMIN), 409, "no_dataset")


def test_a_rejected_dataset_keeps_its_problems_as_extension_members(node: TestClient) -> None:
    body = assert_problem(
        node.post("/api/v1/datasets", json={"path": "absent"}, headers=NODE_ADMIN),
        422,
        "dataset_rejected",
    )
    assert body["problems"] == ["absent does not exist."] and body["report"] is None
    assert body["detail"] == "the dataset cannot be used: absent does not exist."


def test_a_small_chunked_body_is_accepted(node: TestClient) -> None:
    small = chunked(0, head=b'{"path": "absent"}')
    json = NODE_ADMIN | {"Content-Type": "application/json"}
    refused = node.post("/api/v1/datasets", content=small, headers=json)
    assert "content-length" not in refused.request.headers  # sent chunked, parsed all the same
    assert assert_problem(refused, 422, "dataset_rejected")["problems"] == [
        "absent does not exist."
    ]


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
    response = node.request(method, path, json=body, headers=NODE_ADMIN)
    assert_problem(response, 422, "invalid_request")
    assert "round_id" in response.json()["detail"] or "job_id" in response.json()["detail"]
