"""The node API's own behaviour (no hub needed): auth, validation, health, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.hospital_node.app import SettingsError, create_app
from services.hospital_node.settings import NodeSettings
from tests.support.offline_docs import assert_docs_work_offline
from tests.support.processes import free_port

ADMIN = {"Authorization": "Bearer site-admin"}


def _settings(tmp_path: Path, **extra) -> NodeSettings:
    values = {
        "aggregator_url": f"http://127.0.0.1:{free_port()}",  # no hub: it is unreachable
        "node_token": "node",
        "admin_token": "site-admin",
        "data_roots": [tmp_path],
        "data_dir": tmp_path / "node",
        "model_store_dir": tmp_path / "store",
        "hub_retries": 0,
        "poll_seconds": 60,
    }
    return NodeSettings(**(values | extra))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path))) as c:
        yield c


def test_the_api_does_not_start_without_its_tokens(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="FEDMEDCLIP_NODE_ADMIN_TOKEN and FEDMEDCLIP_NODE_NODE"):
        create_app(_settings(tmp_path, admin_token="", node_token=""))


def test_health_routes_are_open_and_report_their_checks(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "embedded": "ok"}


@pytest.mark.slow
def test_ready_fails_when_the_broker_is_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as c:
        ready = c.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["broker"].startswith("error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/1"),
        ("GET", "/api/v1/datasets"),
        ("POST", "/api/v1/datasets"),
        ("GET", "/api/v1/model"),
        ("GET", "/api/v1/privacy"),
    ],
)
def test_every_api_route_needs_the_site_admin_token(client: TestClient, method, path) -> None:
    missing = client.request(method, path)
    assert missing.status_code == 401 and "missing Authorization header" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.request(method, path, headers={"Authorization": "Bearer node"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid token for the node API"


def test_malformed_requests_get_a_4xx_naming_the_problem(client: TestClient) -> None:
    bad_type = client.post("/api/v1/jobs", json={"round_id": "seven"}, headers=ADMIN)
    assert bad_type.status_code == 422
    assert bad_type.json()["detail"].startswith("invalid request: body.round_id:")
    assert bad_type.json()["errors"][0]["loc"] == ["body", "round_id"]
    extra = client.post("/api/v1/datasets", json={"path": "/x", "evil": 1}, headers=ADMIN)
    assert extra.status_code == 422 and "evil: Extra inputs" in extra.json()["detail"]
    broken = client.post(
        "/api/v1/datasets", content=b"{nope", headers=ADMIN | {"Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and "JSON" in broken.json()["detail"]
    huge = client.post("/api/v1/datasets", json={"path": "x" * 70_000}, headers=ADMIN)
    assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
    bad_state = client.get("/api/v1/jobs", params={"state": "sleeping"}, headers=ADMIN)
    assert bad_state.status_code == 422 and "query.state" in bad_state.json()["detail"]
    missing = client.get("/api/v1/jobs/999", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["detail"] == "job 999 does not exist"


def test_jobs_need_a_dataset_and_datasets_need_the_hub(client: TestClient, tmp_path: Path) -> None:
    no_data = client.post("/api/v1/jobs", json={}, headers=ADMIN)
    assert no_data.status_code == 409 and "no dataset is registered" in no_data.json()["detail"]
    (tmp_path / "site").mkdir()
    no_hub = client.post("/api/v1/datasets", json={"path": "site"}, headers=ADMIN)
    assert no_hub.status_code == 503 and "unreachable" in no_hub.json()["detail"]


def test_model_is_empty_before_the_first_job(client: TestClient) -> None:
    body = client.get("/api/v1/model", headers=ADMIN).json()
    assert body == {"global_version": None, "head_version": None, "head": None}


def test_metrics_and_request_ids(client: TestClient) -> None:
    echoed = client.get("/health", headers={"X-Request-ID": "abc123"})
    assert echoed.headers["x-request-id"] == "abc123"
    assert len(client.get("/health").headers["x-request-id"]) == 32
    client.get("/api/v1/jobs/5", headers=ADMIN)
    text = client.get("/metrics").text
    assert (
        'fedmedclip_node_http_requests_total{method="GET",route="/api/v1/jobs/{job_id}",'
        'status="404"} 1.0' in text
    )
    assert 'fedmedclip_node_jobs{state="queued"} 0.0' in text
    assert "fedmedclip_node_datasets 0.0" in text


def test_api_docs_work_offline(client: TestClient) -> None:
    assert_docs_work_offline(client)


def test_job_seconds_histogram_comes_from_the_jobs_in_the_database(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from services.hospital_node.db import Job, open_database

    settings = _settings(tmp_path)
    db = open_database(settings.resolved_database_url())
    start = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
    with db.write() as session:  # as a worker in another process would leave them
        for round_id, (state, seconds) in enumerate([("done", 45), ("done", 700), ("failed", 5)]):
            end = start + timedelta(seconds=seconds) if seconds is not None else None
            session.add(
                Job(
                    round_id=round_id,
                    trigger="admin",
                    state=state,
                    started_at=start,
                    finished_at=end,
                )
            )
        session.add(Job(round_id=9, trigger="admin", state="failed"))  # never started
    db.dispose()
    with TestClient(create_app(settings)) as c:
        text = c.get("/metrics").text
    assert 'fedmedclip_node_job_seconds_bucket{le="30.0",state="done"} 0.0' in text
    assert 'fedmedclip_node_job_seconds_bucket{le="60.0",state="done"} 1.0' in text
    assert 'fedmedclip_node_job_seconds_bucket{le="+Inf",state="done"} 2.0' in text
    assert 'fedmedclip_node_job_seconds_sum{state="done"} 745.0' in text
    assert 'fedmedclip_node_job_seconds_count{state="failed"} 1.0' in text
    assert 'fedmedclip_node_job_seconds_bucket{le="10.0",state="failed"} 1.0' in text
