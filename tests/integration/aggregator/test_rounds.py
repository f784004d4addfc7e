"""Rounds end to end: publication with the weighted mean, deadlines, cancel, concurrency."""

from __future__ import annotations

import hashlib
import threading

import pytest
import torch

from fedmedclip.codec import decode_update
from fedmedclip.enums import TERMINAL_ROUND_STATES
from tests.support.hub import ADMIN, SHAPES, TASK, Hub, encoded, running_hub
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("quantization", ["fp16", "int8"])
def test_full_round_publishes_the_sample_weighted_mean(hub: Hub, quantization: str) -> None:
    tokens = {name: hub.add_node(name) for name in ("alpha", "beta", "gamma")}
    round_info = hub.open_round(min_clients=3, deadline_seconds=300)
    assert round_info["state"] == "open" and round_info["base_version"] == 0

    samples = {"alpha": 10, "beta": 30, "gamma": 60}
    local = {"alpha": {"acc": 0.5, "f1": 0.4}, "beta": {"acc": 0.7}, "gamma": {"acc": 0.9}}
    bodies = {}
    for seed, (name, token) in enumerate(tokens.items()):
        bodies[name] = encoded(seed, quantization=quantization)
        response = hub.post_update(
            round_info["id"],
            token,
            bodies[name],
            samples=samples[name],
            key=f"{name}-1",
            metrics=local[name],
        )
        assert response.status_code == 201, response.text
        assert response.json()["sha256"] == hashlib.sha256(bodies[name]).hexdigest()

    closed = hub.close(round_info["id"])
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "published"
    assert closed.json()["result_version"] == 1
    assert closed.json()["updates_received"] == 3

    base, _, _ = hub.weights(0)
    published, meta, blob_response = hub.weights(1)
    total = sum(samples.values())
    for name in SHAPES:
        mean = sum(
            decode_update(bodies[n], expected_shapes=SHAPES).delta[name] * samples[n] / total
            for n in tokens
        )
        torch.testing.assert_close(published[name], base[name] + mean, atol=1e-6, rtol=1e-5)

    info = hub.client.get("/api/v1/models/1", headers=ADMIN).json()
    assert info["parent_version"] == 0 and info["round_id"] == round_info["id"]
    assert info["contributors"] == ["alpha", "beta", "gamma"]
    assert info["update_hashes"] == [hashlib.sha256(bodies[n]).hexdigest() for n in tokens]
    assert info["metrics"]["acc"] == pytest.approx((0.5 * 10 + 0.7 * 30 + 0.9 * 60) / 100)
    assert info["metrics"]["f1"] == pytest.approx(0.4)  # only alpha reported it
    assert info["blob_sha256"] == hashlib.sha256(blob_response.content).hexdigest()
    assert blob_response.headers["X-Model-SHA256"] == info["blob_sha256"]
    assert meta["version"] == 1 and meta["parent_version"] == 0
    assert meta["task"] == TASK.model_dump(mode="json")
    assert [e["action"] for e in hub.audit(action="round.published")] == ["round.published"]
    assert hub.metric("fedmedclip_aggregator_aggregation_seconds_count") == 1
    assert hub.metric('fedmedclip_aggregator_rounds{state="published"}') == 1


def test_next_round_builds_on_production_unless_asked_for_latest(hub: Hub) -> None:
    token = hub.add_node("alpha")
    first = hub.open_round()
    assert first["base_reason"] == "production version"
    assert hub.post_update(first["id"], token, encoded(1)).status_code == 201
    assert hub.close(first["id"]).json()["state"] == "published"

    # Version 1 is published but not promoted: the next round still trains from 0.
    second = hub.open_round()
    assert (second["base_version"], second["base_reason"]) == (0, "production version")
    assert hub.client.post(f"/api/v1/rounds/{second['id']}/cancel", headers=ADMIN).is_success

    latest = hub.open_round(base_version="latest")
    assert (latest["base_version"], latest["base_reason"]) == (1, "latest version, as requested")
    stale = hub.post_update(latest["id"], token, encoded(2, base_version=0))
    assert stale.status_code == 400 and "base version 0, expected 1" in stale.json()["detail"]
    assert hub.client.post(f"/api/v1/rounds/{latest['id']}/cancel", headers=ADMIN).is_success

    assert hub.client.post("/api/v1/models/1/promote", headers=ADMIN).status_code == 200
    promoted = hub.open_round()
    assert (promoted["base_version"], promoted["base_reason"]) == (1, "production version")
    assert hub.client.post(f"/api/v1/rounds/{promoted['id']}/cancel", headers=ADMIN).is_success
    pinned = hub.open_round(base_version=0)
    assert pinned["base_reason"] == "version 0, as requested"


@pytest.mark.slow
def test_deadline_with_too_few_updates_fails_the_round(hub: Hub) -> None:
    token = hub.add_node("alpha")
    round_info = hub.open_round(min_clients=2, deadline_seconds=4)
    assert hub.post_update(round_info["id"], token, encoded(1)).status_code == 201
    final = wait_until(
        lambda: (r := hub.round(round_info["id"]))["state"] in TERMINAL_ROUND_STATES and r,
        timeout=40,
        what="round closed by its deadline",
    )
    assert final["state"] == "failed"
    assert final["reason"] == "deadline passed with 1 of 2 required updates"
    assert final["result_version"] is None and final["closed_at"] is not None
    assert [m["version"] for m in hub.client.get("/api/v1/models", headers=ADMIN).json()] == [0]
    late = hub.post_update(round_info["id"], hub.add_node("beta"), encoded(2))
    assert late.status_code == 409 and "no longer accepts updates" in late.json()["detail"]


@pytest.mark.slow
def test_deadline_with_enough_updates_publishes(hub: Hub) -> None:
    token = hub.add_node("alpha")
    round_info = hub.open_round(min_clients=1, deadline_seconds=4)
    assert hub.post_update(round_info["id"], token, encoded(1)).status_code == 201
    final = wait_until(
        lambda: (r := hub.round(round_info["id"]))["state"] in TERMINAL_ROUND_STATES and r,
        timeout=40,
        what="round closed by its deadline",
    )
    assert final["state"] == "published" and final["result_version"] == 1


def test_admin_close_below_quorum_fails_and_cancel_ends_open_round(hub: Hub) -> None:
    first = hub.open_round(min_clients=2)
    closed = hub.close(first["id"])
    assert closed.json()["state"] == "failed"
    assert closed.json()["reason"] == "closed by admin with 0 of 2 required updates"
    again = hub.close(first["id"])
    assert again.status_code == 409 and "is failed" in again.json()["detail"]

    second = hub.open_round()
    cancelled = hub.client.post(f"/api/v1/rounds/{second['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    twice = hub.client.post(f"/api/v1/rounds/{second['id']}/cancel", headers=ADMIN)
    assert twice.status_code == 409
    assert hub.client.post("/api/v1/rounds/999/close", headers=ADMIN).status_code == 404


def test_only_one_active_round_and_listing_by_state(hub: Hub) -> None:
    first = hub.open_round()
    conflict = hub.client.post("/api/v1/rounds", json={}, headers=ADMIN)
    assert conflict.status_code == 409 and f"round {first['id']}" in conflict.json()["detail"]
    listed = hub.client.get("/api/v1/rounds", params={"state": "open"}, headers=ADMIN).json()
    assert [r["id"] for r in listed] == [first["id"]]
    bad = hub.client.get("/api/v1/rounds", params={"state": "bogus"}, headers=ADMIN)
    assert bad.status_code == 422 and "state" in bad.json()["detail"]


def test_before_a_task_there_is_nothing_to_train(settings) -> None:
    with running_hub(settings) as bare:
        for method, path in [
            ("get", "/api/v1/task"),
            ("get", "/api/v1/models/production"),
            ("post", "/api/v1/rounds"),
        ]:
            response = bare.client.request(method, path, headers=ADMIN, json={})
            assert response.status_code == 404, path
            assert "PUT /api/v1/task" in response.json()["detail"]


def test_task_is_frozen_once_a_round_started(hub: Hub) -> None:
    first_sha = hub.client.get("/api/v1/models/0", headers=ADMIN).json()["blob_sha256"]
    reseeded = TASK.model_copy(update={"fam": TASK.fam.model_copy(update={"seed": 7})})
    assert hub.set_task(reseeded).status_code == 200
    models = hub.client.get("/api/v1/models", headers=ADMIN).json()
    assert len(models) == 1 and models[0]["blob_sha256"] != first_sha
    _, meta, _ = hub.weights(0)
    assert meta["task"]["fam"]["seed"] == 7
    hub.open_round()
    changed = hub.set_task()
    assert changed.status_code == 409
    assert "after the first round" in changed.json()["detail"]


def test_two_instances_closing_at_once_publish_exactly_once(hub: Hub, settings) -> None:
    tokens = [hub.add_node(n) for n in ("alpha", "beta")]
    round_info = hub.open_round(min_clients=2)
    for seed, token in enumerate(tokens):
        assert hub.post_update(round_info["id"], token, encoded(seed)).status_code == 201
    with running_hub(settings) as other:
        statuses: list[int] = []
        barrier = threading.Barrier(2)

        def close(instance: Hub) -> None:
            barrier.wait()
            statuses.append(instance.close(round_info["id"]).status_code)

        threads = [threading.Thread(target=close, args=(h,)) for h in (hub, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert sorted(statuses) == [200, 409]
    versions = [m["version"] for m in hub.client.get("/api/v1/models", headers=ADMIN).json()]
    assert versions == [0, 1]
    assert len(hub.audit(action="round.published")) == 1


def test_a_round_left_aggregating_by_a_crash_is_finished_after_its_lease(
    hub: Hub, settings
) -> None:
    from sqlalchemy import update

    from services.aggregator.db.models import Round, utcnow
    from services.common.db import Database

    token = hub.add_node("alpha")
    round_info = hub.open_round()
    assert hub.post_update(round_info["id"], token, encoded(1)).status_code == 201
    db = Database.connect(settings.resolved_database_url())
    with db.write() as session:  # what an instance that died mid-aggregation leaves
        session.execute(
            update(Round).values(state="aggregating", claim_token="dead", lease_until=utcnow())
        )
    db.dispose()
    final = wait_until(
        lambda: (r := hub.round(round_info["id"]))["state"] == "published" and r,
        timeout=15,
        what="interrupted aggregation resumed",
    )
    assert final["result_version"] == 1
    assert hub.audit(action="round.close")[0]["details"]["cause"] == (
        "resumed after an interrupted aggregation"
    )
