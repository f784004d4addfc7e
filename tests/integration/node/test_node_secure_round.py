"""Three hospital nodes (jobs run in-process) complete a secure-aggregation round."""

from __future__ import annotations

import pytest

from tests.integration.node.conftest import FAST_HINTS

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_three_nodes_complete_a_secure_round(hub, federation, make_settings, run_node):
    nodes = [run_node(make_settings(f"hospital-{c}")) for c in "abc"]
    # A fourth site follows rounds by itself but is not one of this round's sites.
    bystander = run_node(make_settings("hospital-d", auto_join=True))
    assert bystander.register(federation.hospital_dirs[1]).status_code == 201
    folders = [*federation.hospital_dirs, federation.hospital_dirs[0]]
    for node, folder in zip(nodes, folders, strict=True):
        assert node.register(folder).status_code == 201
    body = {
        "min_clients": 3,
        "deadline_seconds": 600,
        "hints": FAST_HINTS,
        "secure_aggregation": True,
        "secagg_phase_seconds": 60,
        "participants": ["hospital-a", "hospital-b", "hospital-c"],
    }
    round_info = hub.call("POST", "/api/v1/rounds", json=body)
    assert round_info["secure_aggregation"] and round_info["secagg_phase"] == "advertise"
    jobs = [node.start_job(round_info["id"]) for node in nodes]
    done = [
        node.wait_terminal(job["id"], timeout=240) for node, job in zip(nodes, jobs, strict=True)
    ]
    for job in done:
        assert job["state"] == "done", job
        assert job["update_bytes"] > 8 * 296_448  # a whole masked 64-bit vector
    closed = hub.round(round_info["id"])
    assert closed["state"] == "published", closed
    assert closed["secagg_phase"] == "done" and closed["updates_received"] == 0
    model = hub.call("GET", f"/api/v1/models/{closed['result_version']}")
    assert sorted(model["contributors"]) == ["hospital-a", "hospital-b", "hospital-c"]
    assert model["metrics"]["secagg_survivors"] == 3.0
    # The bystander's agent polled the open round all along and never started a job for it.
    assert bystander.http.get("/api/v1/jobs").json() == []
