"""The hub answers every failure as a problem with a stable code (SQLite, no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.aggregator.app import JSON_BODY_LIMIT, create_app
from services.aggregator.settings import AggregatorSettings
from tests.support.problems import assert_documents_problems, assert_problem, chunked

ADMIN = {"Authorization": "Bearer hub-admin"}
UPLOAD_LIMIT = 64 * 1024


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[TestClient]:
    settings = AggregatorSettings(
        data_dir=tmp_path, admin_token="hub-admin", max_upload_bytes=UPLOAD_LIMIT
    )
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.put(
            "/api/v1/task", json={"class_names": ["a", "b"]}, headers=ADMIN
        ).is_success
        yield client


def test_refusals_have_stable_codes(hub: TestClient) -> None:
    assert_problem(hub.get("/api/v1/task"), 401, "unauthenticated")
    assert_problem(
        hub.get("/api/v1/task", headers={"Authorization": "Bearer x"}), 401, "unauthenticated"
    )
    assert_problem(hub.get("/api/v1/rounds/999", headers=ADMIN), 404, "not_found")
    assert_problem(hub.get("/api/v1/nowhere", headers=ADMIN), 404, "not_found")
    assert_problem(hub.delete("/api/v1/task", headers=ADMIN), 405, "method_not_allowed")
    assert hub.post("/api/v1/nodes", json={"name": "alpha"}, headers=ADMIN).status_code == 201
    assert_problem(
        hub.post("/api/v1/nodes", json={"name": "alpha"}, headers=ADMIN), 409, "conflict"
    )
    invalid = assert_problem(
        hub.post("/api/v1/nodes", json={"name": "no spaces"}, headers=ADMIN), 422, "invalid_request"
    )
    assert invalid["errors"][0]["loc"] == ["body", "name"]
    crash = assert_problem(hub.get("/boom"), 500, "internal")
    assert "kaboom" not in crash["detail"]


def test_json_routes_and_uploads_have_their_own_cap(hub: TestClient) -> None:
    big = b'{"class_names": ["' + b"x" * JSON_BODY_LIMIT + b'"]}'
    for body in (big, chunked(JSON_BODY_LIMIT + 1)):
        refused = assert_problem(
            hub.put("/api/v1/task", content=body, headers=ADMIN), 413, "too_large"
        )
        assert (
            refused["detail"] == f"request body is larger than the limit of {JSON_BODY_LIMIT} bytes"
        )

    token = hub.post("/api/v1/nodes", json={"name": "alpha"}, headers=ADMIN).json()["token"]
    round_id = hub.post("/api/v1/rounds", json={}, headers=ADMIN).json()["id"]
    node = {"Authorization": f"Bearer {token}", "X-Sample-Count": "1", "Idempotency-Key": "k"}
    path = f"/api/v1/rounds/{round_id}/updates"
    for body in (b"\0" * (UPLOAD_LIMIT + 1), chunked(UPLOAD_LIMIT + 1)):
        refused = assert_problem(hub.post(path, content=body, headers=node), 413, "too_large")
        assert f"limit of {UPLOAD_LIMIT} bytes" in refused["detail"]
    # Under the upload cap but over the JSON cap's share: read, then judged by the codec.
    assert_problem(
        hub.post(path, content=chunked(UPLOAD_LIMIT - 1), headers=node), 400, "bad_request"
    )
    metrics = hub.get("/metrics").text
    assert 'fedmedclip_aggregator_updates_rejected_total{reason="too_large"} 2.0' in metrics
    audited = hub.get("/api/v1/audit", params={"action": "update.rejected"}, headers=ADMIN).json()
    assert [e["details"]["reason"] for e in audited] == ["invalid", "too_large", "too_large"]


def test_openapi_declares_the_scheme_and_the_problems(tmp_path: Path) -> None:
    schema = create_app(AggregatorSettings(data_dir=tmp_path, admin_token="x")).openapi()
    assert_documents_problems(schema, "/api/v1/rounds", "post", 401, 403, 409, 413, 422, 503)
    assert_documents_problems(
        schema, "/api/v1/rounds/{round_id}/updates", "post", 401, 403, 404, 409, 413
    )
