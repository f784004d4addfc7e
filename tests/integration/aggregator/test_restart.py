"""A new app instance on the same database loses nothing and enforces old deadlines."""

from __future__ import annotations

import time

import pytest

from tests.support.hub import ADMIN, encoded, running_hub

pytestmark = pytest.mark.integration


def test_restart_mid_round_keeps_updates_and_finishes_the_round(settings) -> None:
    with running_hub(settings) as first:
        assert first.set_task().status_code == 200
        tokens = {n: first.add_node(n) for n in ("alpha", "beta", "gamma")}
        round_id = first.open_round(min_clients=3, deadline_seconds=300)["id"]
        receipts = {}
        for seed, name in enumerate(("alpha", "beta")):
            response = first.post_update(round_id, tokens[name], encoded(seed), key=name)
            assert response.status_code == 201
            receipts[name] = response.json()

    with running_hub(settings) as second:
        assert second.round(round_id)["updates_received"] == 2
        replay = second.post_update(round_id, tokens["alpha"], encoded(0), key="alpha")
        assert replay.status_code == 200 and replay.json() == receipts["alpha"]
        assert second.post_update(round_id, tokens["gamma"], encoded(2), key="g").status_code == 201
        closed = second.close(round_id).json()
        assert closed["state"] == "published" and closed["updates_received"] == 3
        info = second.client.get("/api/v1/models/1", headers=ADMIN).json()
        assert info["contributors"] == ["alpha", "beta", "gamma"]


@pytest.mark.slow
def test_deadline_that_passed_while_down_is_enforced_at_start(settings) -> None:
    with running_hub(settings) as first:
        assert first.set_task().status_code == 200
        token = first.add_node("alpha")
        round_id = first.open_round(min_clients=2, deadline_seconds=2)["id"]
        assert first.post_update(round_id, token, encoded(1)).status_code == 201
        assert first.round(round_id)["state"] == "open"
    time.sleep(2.2)
    with running_hub(settings) as second:
        final = second.round(round_id)  # no waiting: the start-up sweep already ran
        assert final["state"] == "failed"
        assert final["reason"] == "deadline passed with 1 of 2 required updates"


def test_models_and_production_survive_a_restart(settings) -> None:
    with running_hub(settings) as first:
        assert first.set_task().status_code == 200
        token = first.add_node("alpha")
        round_id = first.open_round()["id"]
        assert first.post_update(round_id, token, encoded(1)).status_code == 201
        assert first.close(round_id).json()["state"] == "published"
        assert first.client.post("/api/v1/models/1/promote", headers=ADMIN).status_code == 200
        _, _, blob = first.weights(1)
    with running_hub(settings) as second:
        production = second.client.get("/api/v1/models/production", headers=ADMIN).json()
        assert production["version"] == 1 and production["is_production"]
        _, _, again = second.weights(1)
        assert again.content == blob.content
