"""A round left aggregating by an instance on another host: 409s that say why, /ready says
which lease it waits for, and the admin's recover finishes the round without waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from services.aggregator.db.models import Round, utcnow
from services.aggregator.settings import AggregatorSettings
from services.common.db import Database
from tests.support.hub import ADMIN, Hub, encoded

pytestmark = pytest.mark.integration

FOREIGN = "other-host/4242/boot-x/12345"


def _leave_aggregating(settings: AggregatorSettings, round_id: int) -> None:
    """What a hub on another host leaves behind when it dies mid-aggregation."""
    db = Database.connect(settings.resolved_database_url())
    try:
        with db.write() as session:
            session.execute(
                update(Round)
                .where(Round.id == round_id)
                .values(
                    state="aggregating",
                    claim_token="f" * 32,
                    lease_owner=FOREIGN,
                    lease_until=utcnow() + timedelta(minutes=5),
                )
            )
    finally:
        db.dispose()


def test_admin_recovers_a_round_leased_by_a_dead_foreign_instance(
    hub: Hub, settings: AggregatorSettings
) -> None:
    token = hub.add_node("alpha")
    round_id = hub.open_round(min_clients=1)["id"]
    assert hub.post_update(round_id, token, encoded(1)).status_code == 201
    _leave_aggregating(settings, round_id)

    for refused in (
        hub.close(round_id),
        hub.client.post(f"/api/v1/rounds/{round_id}/cancel", headers=ADMIN),
        hub.client.post("/api/v1/rounds", json={}, headers=ADMIN),
    ):
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert FOREIGN in detail and f"/api/v1/rounds/{round_id}/recover" in detail

    ready = hub.client.get("/ready")
    assert ready.status_code == 200  # informational: the hub serves everything else
    leases = ready.json()["checks"]["aggregation_leases"]
    assert leases.startswith(f"round {round_id} leased by {FOREIGN} until ")
    assert hub.round(round_id)["lease_owner"] == FOREIGN

    as_node = hub.client.post(
        f"/api/v1/rounds/{round_id}/recover", headers={"Authorization": f"Bearer {token}"}
    )
    assert as_node.status_code == 403
    recovered = hub.client.post(f"/api/v1/rounds/{round_id}/recover", headers=ADMIN)
    assert recovered.status_code == 200, recovered.text
    info = recovered.json()
    assert info["state"] == "published" and info["lease_owner"] is None
    (event,) = hub.audit(action="round.recover")
    assert event["actor"] == "admin" and event["details"]["previous_owner"] == FOREIGN
    assert hub.client.get("/ready").json()["checks"]["aggregation_leases"] == "none"

    again = hub.client.post(f"/api/v1/rounds/{round_id}/recover", headers=ADMIN)
    assert again.status_code == 409
    assert "only an aggregating round can be recovered" in again.json()["detail"]
