"""Concurrent promote and rollback calls keep the production history one chain.

120 calls from 24 threads against a real uvicorn server, on SQLite and PostgreSQL. The
history is then replayed: every event must be what the same calls, run one after another,
would have written. Forked histories (two promotions replacing the same event) fail this.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from services.aggregator.app import create_app
from services.aggregator.db.models import ProductionEvent
from services.aggregator.settings import AggregatorSettings
from services.common.db import Database
from tests.support.hub import ADMIN, Hub, encoded
from tests.support.processes import ThreadedServer

pytestmark = pytest.mark.integration

CALLS = 120
VERSIONS = 4  # 0 (initial) and three published rounds


def _publish_versions(hub: Hub) -> None:
    token = hub.add_node("site")
    for version in range(1, VERSIONS):
        info = hub.open_round(base_version="latest")
        body = encoded(version, base_version=info["base_version"])
        assert hub.post_update(info["id"], token, body, key=str(version)).status_code == 201
        assert hub.close(info["id"]).json()["result_version"] == version


def _assert_one_chain(events: list[ProductionEvent]) -> None:
    by_id = {e.id: e for e in events}
    assert events[0].action == "initial" and events[0].previous_id is None
    for before, event in zip(events, events[1:], strict=False):
        if event.action == "promote":
            assert event.previous_id == before.id, f"event {event.id} forks the history"
        else:
            replaced = by_id[before.previous_id]
            assert (event.version, event.previous_id) == (replaced.version, replaced.previous_id)


@pytest.mark.slow
def test_concurrent_promotions_and_rollbacks_keep_one_chain(
    settings: AggregatorSettings,
) -> None:
    with (
        ThreadedServer(create_app(settings)) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        hub = Hub(http)
        assert hub.set_task().status_code == 200
        _publish_versions(hub)
        chooser = random.Random(7)
        calls = [
            "/api/v1/models/rollback"
            if chooser.random() < 0.4
            else f"/api/v1/models/{chooser.randrange(VERSIONS)}/promote"
            for _ in range(CALLS)
        ]
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(lambda path: http.post(path).status_code, calls))
        assert set(statuses) <= {200, 409}, statuses  # 409: nothing left to roll back to
        production = http.get("/api/v1/models/production").json()["version"]

    db = Database.connect(settings.resolved_database_url())
    try:
        with db.read() as session:
            events = list(session.scalars(select(ProductionEvent).order_by(ProductionEvent.id)))
    finally:
        db.dispose()
    assert len(events) > 1 + statuses.count(200) // 2  # plenty of changes really happened
    _assert_one_chain(events)
    assert events[-1].version == production
