"""A job never disappears: every fault ends in a failed state with a reason."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _training(job: dict) -> bool:
    return job["progress"]["phase"] == "training" and job["progress"]["epoch"] >= 1


@pytest.mark.slow
def test_aggregator_down_fails_the_job_with_a_reason(hub, federation, make_settings, run_node):
    node = run_node(make_settings("hospital-a"))
    assert node.register(federation.hospital_dirs[0]).status_code == 201
    round_id = hub.open_round()["id"]
    hub.stop()

    no_round = node.http.post("/api/v1/jobs", json={})
    assert no_round.status_code == 503
    assert "unreachable" in no_round.json()["detail"]

    job = node.wait_terminal(node.start_job(round_id)["id"])
    assert job["state"] == "failed"
    assert "unreachable" in job["error"] and "3 attempts" in job["error"]
    assert node.http.get("/api/v1/jobs", params={"state": "failed"}).json()[0]["id"] == job["id"]


@pytest.mark.slow
def test_round_closed_during_training_fails_the_job(hub, federation, make_settings, run_node):
    node = run_node(make_settings("hospital-a"))
    assert node.register(federation.hospital_dirs[0]).status_code == 201
    round_id = hub.open_round(hints={"local_epochs": 200, "batch_size": 2})["id"]
    job_id = node.start_job()["id"]
    node.wait_job(job_id, _training)
    assert hub.call("POST", f"/api/v1/rounds/{round_id}/cancel")["state"] == "cancelled"

    job = node.wait_terminal(job_id)
    assert job["state"] == "failed"
    assert f"round {round_id} is cancelled" in job["error"]
    assert node.http.get("/api/v1/model").json()["head_version"] is None, "no head saved"
    assert hub.round(round_id)["updates_received"] == 0

    closed = node.http.post("/api/v1/jobs", json={"round_id": round_id})
    assert closed.status_code == 409 and "cancelled" in closed.json()["detail"]


@pytest.mark.slow
def test_killed_worker_fails_the_job_visibly(
    hub, federation, make_settings, run_node, broker_url, start_worker
):
    settings = make_settings("hospital-a", broker_url=broker_url, job_stale_seconds=5)
    node = run_node(settings)
    assert node.http.get("/ready").json()["checks"]["broker"] == "ok"
    assert node.register(federation.hospital_dirs[0]).status_code == 201
    round_id = hub.open_round(hints={"local_epochs": 200, "batch_size": 2})["id"]
    worker = start_worker(settings)
    job_id = node.start_job()["id"]
    node.wait_job(job_id, _training, timeout=180)

    worker.kill()
    job = node.wait_terminal(job_id, timeout=30)
    assert job["state"] == "failed"
    assert "worker lost" in job["error"]
    assert hub.round(round_id)["updates_received"] == 0

    # A new job for the round may be started once the old one has failed.
    retry = node.start_job(round_id)
    assert retry["id"] != job_id and retry["state"] == "queued"
