"""Node settings come from the documented FEDMEDCLIP_NODE_* variables."""

from __future__ import annotations

from pathlib import Path

from services.hospital_node.settings import NodeSettings

DOCUMENTED = {
    "AGGREGATOR_URL",
    "NODE_TOKEN",
    "ADMIN_TOKEN",
    "BROKER_URL",
    "DATA_ROOTS",
    "DATA_DIR",
    "MODEL_STORE_DIR",
    "DEVICE",
    "BACKBONE_WEIGHTS",
    "AUTO_JOIN",
    "POLL_SECONDS",
    "LOG_JSON",
}


def test_every_documented_variable_is_a_setting() -> None:
    assert {name.upper() for name in NodeSettings.model_fields} >= DOCUMENTED


def test_defaults_match_the_documentation(monkeypatch) -> None:
    for name in NodeSettings.model_fields:
        monkeypatch.delenv(f"FEDMEDCLIP_NODE_{name.upper()}", raising=False)
    s = NodeSettings()
    assert s.aggregator_url == "http://127.0.0.1:8100"
    assert s.broker_url == "" and s.data_roots == []
    assert s.data_dir == Path("./var/node") and s.model_store_dir == Path("./var/node/model_store")
    assert (s.device, s.backbone_weights, s.auto_join, s.poll_seconds, s.log_json) == (
        "auto",
        "none",
        False,
        5.0,
        False,
    )
    assert s.resolved_database_url() == f"sqlite:///{Path('./var/node').resolve() / 'node.db'}"


def test_environment_is_read_with_comma_separated_roots(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FEDMEDCLIP_NODE_DATA_ROOTS", f"{tmp_path}/a, {tmp_path}/b ,")
    monkeypatch.setenv("FEDMEDCLIP_NODE_AGGREGATOR_URL", "http://hub:8100/")
    monkeypatch.setenv("FEDMEDCLIP_NODE_AUTO_JOIN", "true")
    monkeypatch.setenv("FEDMEDCLIP_NODE_POLL_SECONDS", "0.5")
    s = NodeSettings()
    assert s.data_roots == [tmp_path / "a", tmp_path / "b"]
    assert s.aggregator_url == "http://hub:8100"
    assert s.auto_join is True and s.poll_seconds == 0.5
