"""The node's DP ledger: epsilon recomputed from recorded releases, the cap, and its route."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedmedclip.privacy import DPConfig, epsilon_after, epsilon_per_round
from services.hospital_node import privacy
from services.hospital_node.app import create_app
from services.hospital_node.db import open_database
from services.hospital_node.privacy import PrivacyBudgetExhausted, PrivacyLedger
from services.hospital_node.settings import NodeSettings

CONFIG = DPConfig(clip_norm=0.5, noise_multiplier=4.0)
ADMIN = {"Authorization": "Bearer site-admin"}


def test_settings_need_both_dp_values() -> None:
    with pytest.raises(ValueError, match="DP_NOISE_MULTIPLIER"):
        NodeSettings(dp_clip_norm=0.5)
    assert NodeSettings().dp_config() is None
    assert NodeSettings(dp_clip_norm=0.5, dp_noise_multiplier=4).dp_config() == CONFIG


def test_cumulative_epsilon_comes_from_the_ledger_and_survives_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    ledger = PrivacyLedger(open_database(url))
    first = ledger.charge(job_id=1, round_id=1, config=CONFIG, max_epsilon=0)
    second = ledger.charge(job_id=2, round_id=2, config=CONFIG, max_epsilon=0)
    assert first["dp_epsilon_update"] == pytest.approx(epsilon_per_round(4.0, 1e-5))
    assert first["dp_epsilon_total"] == pytest.approx(epsilon_after(1, 4.0, 1e-5))
    assert second["dp_epsilon_total"] == pytest.approx(epsilon_after(2, 4.0, 1e-5))
    with open_database(url).read() as session:
        reopened = privacy.status(session, CONFIG, 1e-5)
    assert reopened.releases == 2
    assert reopened.epsilon_spent == pytest.approx(second["dp_epsilon_total"])
    assert reopened.epsilon_after_next == pytest.approx(epsilon_after(3, 4.0, 1e-5))


def test_the_cap_refuses_an_update_and_records_nothing(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'node.db'}")
    ledger = PrivacyLedger(db)
    cap = epsilon_after(2, 4.0, 1e-5) + 0.01  # room for two updates, not three
    for round_id in (1, 2):
        ledger.charge(job_id=round_id, round_id=round_id, config=CONFIG, max_epsilon=cap)
    with pytest.raises(PrivacyBudgetExhausted, match="DP_MAX_EPSILON"):
        ledger.charge(job_id=3, round_id=3, config=CONFIG, max_epsilon=cap)
    with db.read() as session:
        assert privacy.history(session) == [4.0, 4.0]


def test_privacy_route_reports_settings_and_spend(tmp_path: Path) -> None:
    settings = NodeSettings(
        node_token="node",
        admin_token="site-admin",
        data_dir=tmp_path / "node",
        model_store_dir=tmp_path / "store",
        poll_seconds=60,
        dp_clip_norm=0.5,
        dp_noise_multiplier=4.0,
        dp_max_epsilon=20.0,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/privacy").status_code == 401
        before = client.get("/api/v1/privacy", headers=ADMIN).json()
        PrivacyLedger(client.app.state.context.db).charge(
            job_id=1, round_id=1, config=CONFIG, max_epsilon=20.0
        )
        after = client.get("/api/v1/privacy", headers=ADMIN).json()
    assert before["enabled"] and before["releases"] == 0 and before["epsilon_spent"] == 0
    assert before["epsilon_after_next"] == pytest.approx(epsilon_after(1, 4.0, 1e-5))
    assert after["releases"] == 1 and after["max_epsilon"] == 20.0
    assert after["epsilon_spent"] == pytest.approx(epsilon_after(1, 4.0, 1e-5))
