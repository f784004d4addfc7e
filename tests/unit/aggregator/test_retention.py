"""Update payload retention: old payloads are emptied after a publish, their records stay."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from services.aggregator.db.models import Update
from services.aggregator.settings import AggregatorSettings
from services.common.db import Database
from tests.support.hub import ADMIN, ADMIN_TOKEN, Hub, encoded, running_hub


def _settings(tmp_path: Path, keep: int) -> AggregatorSettings:
    return AggregatorSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN, keep_update_versions=keep)


def _publish_rounds(hub: Hub, count: int) -> None:
    assert hub.set_task().status_code == 200
    token = hub.add_node("alpha")
    for version in range(count):
        round_id = hub.open_round(base_version=version)["id"]
        body = encoded(version, base_version=version)
        assert hub.post_update(round_id, token, body, key=f"k{version}").status_code == 201
        assert hub.close(round_id).json()["state"] == "published"


def _payloads(settings: AggregatorSettings) -> dict[int, tuple[int, str, int, int]]:
    """round id -> (payload length, sha256, recorded size, sample count)."""
    db = Database.connect(settings.resolved_database_url())
    with db.write() as session:
        rows = session.execute(
            select(
                Update.round_id,
                Update.payload,
                Update.sha256,
                Update.size_bytes,
                Update.sample_count,
            )
        ).all()
    db.dispose()
    return {r[0]: (len(r[1]), r[2], r[3], r[4]) for r in rows}


def test_payloads_behind_the_newest_versions_are_emptied_and_audited(tmp_path: Path) -> None:
    settings = _settings(tmp_path, keep=1)
    with running_hub(settings) as hub:
        _publish_rounds(hub, 3)  # rounds 1..3 build versions 1..3
        events = hub.audit(action="updates.pruned")
        models = hub.client.get("/api/v1/models", headers=ADMIN).json()
    payloads = _payloads(settings)
    # Version 3 was built by round 3: only its payload is kept.
    assert payloads[1][0] == 0 and payloads[2][0] == 0 and payloads[3][0] > 0
    for round_id in (1, 2):
        length, sha256, size, samples = payloads[round_id]
        assert len(sha256) == 64 and size > 0 and samples == 10  # the record stays
        assert models[round_id]["update_hashes"] == [sha256]
    # One event per publish that pruned something, newest first.
    assert [e["details"]["rounds"] for e in events] == [[2], [1]]
    assert events[0]["actor"] == "system" and events[0]["details"]["keep_versions"] == 1
    assert events[0]["details"]["bytes"] == payloads[2][2]


@pytest.mark.slow
def test_zero_keeps_every_payload(tmp_path: Path) -> None:
    settings = _settings(tmp_path, keep=0)
    with running_hub(settings) as hub:
        _publish_rounds(hub, 3)
        assert hub.audit(action="updates.pruned") == []
    assert all(length > 0 for length, *_ in _payloads(settings).values())
