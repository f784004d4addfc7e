"""The hub's own refusals and its upload cap (what every service answers alike is in
``tests/unit/test_problem_details.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.aggregator.app import create_app
from tests.support.problems import (
    HUB_ADMIN,
    HUB_UPLOAD_LIMIT,
    assert_problem,
    chunked,
    hub_settings,
    serve,
)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[TestClient]:
    with serve(create_app(hub_settings(tmp_path))) as client:
        assert client.put(
            "/api/v1/task", json={"class_names": ["a", "b"]}, headers=HUB_ADMIN
        ).is_success
        yield client


def test_refusals_have_stable_codes(hub: TestClient) -> None:
    assert_problem(hub.get("/api/v1/rounds/999", headers=HUB_ADMIN), 404, "not_found")
    assert hub.post("/api/v1/nodes", json={"name": "alpha"}, headers=HUB_ADMIN).status_code == 201
    assert_problem(
        hub.post("/api/v1/nodes", json={"name": "alpha"}, headers=HUB_ADMIN), 409, "conflict"
    )


def test_uploads_have_their_own_cap(hub: TestClient) -> None:
    token = hub.post("/api/v1/nodes", json={"name": "alpha"}, headers=HUB_ADMIN).json()["token"]
    round_id = hub.post("/api/v1/rounds", json={}, headers=HUB_ADMIN).json()["id"]
    node = {"Authorization": f"Bearer {token}", "X-Sample-Count": "1", "Idempotency-Key": "k"}
    path = f"/api/v1/rounds/{round_id}/updates"
    for body in (b"\0" * (HUB_UPLOAD_LIMIT + 1), chunked(HUB_UPLOAD_LIMIT + 1)):
        refused = assert_problem(hub.post(path, content=body, headers=node), 413, "too_large")
        assert f"limit of {HUB_UPLOAD_LIMIT} bytes" in refused["detail"]
    # Under the upload cap but over the JSON cap's share: read, then judged by the codec.
    assert_problem(
        hub.post(path, content=chunked(HUB_UPLOAD_LIMIT - 1), headers=node), 400, "bad_request"
    )
    metrics = hub.get("/metrics").text
    assert 'fedmedclip_aggregator_updates_rejected_total{reason="too_large"} 2.0' in metrics
    audited = hub.get(
        "/api/v1/audit", params={"action": "update.rejected"}, headers=HUB_ADMIN
    ).json()
    assert [e["details"]["reason"] for e in audited] == ["invalid", "too_large", "too_large"]
