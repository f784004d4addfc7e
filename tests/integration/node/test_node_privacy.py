"""A node with differential privacy on: noised update sent, budget recorded, cap enforced."""

from __future__ import annotations

import pytest

from fedmedclip.privacy import epsilon_after, epsilon_per_round

pytestmark = pytest.mark.integration

Z, DELTA = 4.0, 1e-5


@pytest.mark.slow
def test_dp_node_reports_its_budget_and_stops_at_its_cap(
    hub, federation, make_settings, run_node
) -> None:
    cap = epsilon_after(1, Z, DELTA) + 0.01  # room for exactly one noised update
    node = run_node(
        make_settings("hospital-a", dp_clip_norm=0.5, dp_noise_multiplier=Z, dp_max_epsilon=cap)
    )
    assert node.register(federation.hospital_dirs[0]).status_code == 201

    first_round = hub.open_round(min_clients=1)
    job = node.wait_terminal(node.start_job()["id"], timeout=180)
    assert job["state"] == "done", job
    assert job["metrics"]["dp_epsilon_update"] == pytest.approx(epsilon_per_round(Z, DELTA))
    assert job["metrics"]["dp_epsilon_total"] == pytest.approx(epsilon_after(1, Z, DELTA))
    assert hub.round(first_round["id"])["updates_received"] == 1
    closed = hub.call("POST", f"/api/v1/rounds/{first_round['id']}/close")
    assert closed["state"] == "published", closed

    budget = node.http.get("/api/v1/privacy").json()
    assert budget["enabled"] and budget["releases"] == 1
    assert budget["epsilon_after_next"] > cap

    second_round = hub.open_round(min_clients=1)
    refused = node.wait_terminal(node.start_job()["id"], timeout=60)
    assert refused["state"] == "failed"
    assert "privacy budget exhausted" in refused["error"], refused
    assert refused["progress"]["epoch"] == 0, "the job stopped before training"
    assert hub.round(second_round["id"])["updates_received"] == 0
    assert node.http.get("/api/v1/privacy").json()["releases"] == 1
