"""The settings base: secrets from ``<VARIABLE>_FILE``, hidden secrets, renamed variables."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.aggregator.settings import AggregatorSettings
from services.hospital_node.settings import NodeSettings
from services.inference_api.settings import InferenceSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FEDMEDCLIP_* variable of the test runner's environment leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("FEDMEDCLIP_"):
            monkeypatch.delenv(name)


def _secret_file(tmp_path: Path, content: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(monkeypatch, tmp_path):
    path = _secret_file(tmp_path, "admin-from-file\n")
    monkeypatch.setenv("FEDMEDCLIP_NODE_ADMIN_TOKEN_FILE", str(path))
    assert NodeSettings().admin_token.get_secret_value() == "admin-from-file"


def test_every_secret_of_every_service_can_come_from_a_file(monkeypatch, tmp_path):
    url = _secret_file(tmp_path, "postgresql+psycopg://hub:pw@db/hub\n", "url")
    monkeypatch.setenv("FEDMEDCLIP_AGG_DATABASE_URL_FILE", str(url))
    monkeypatch.setenv("FEDMEDCLIP_AGG_ADMIN_TOKEN_FILE", str(_secret_file(tmp_path, "a", "a")))
    hub = AggregatorSettings()
    assert hub.resolved_database_url() == "postgresql+psycopg://hub:pw@db/hub"
    assert hub.admin_token_value() == "a"
    # A list of secrets: the file holds the comma-separated value.
    tokens = _secret_file(tmp_path, "c1, c2\n", "clinicians")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS_FILE", str(tokens))
    inference = InferenceSettings()
    assert [t.get_secret_value() for t in inference.clinician_tokens] == ["c1", "c2"]
    assert AggregatorSettings.secret_variable_names() == {
        "FEDMEDCLIP_AGG_ADMIN_TOKEN",
        "FEDMEDCLIP_AGG_DATABASE_URL",
        "FEDMEDCLIP_AGG_CONSOLE_SESSION_SECRET",
    }
    assert NodeSettings.secret_variable_names() == {
        "FEDMEDCLIP_NODE_NODE_TOKEN",
        "FEDMEDCLIP_NODE_ADMIN_TOKEN",
        "FEDMEDCLIP_NODE_DATABASE_URL",
        "FEDMEDCLIP_NODE_CONSOLE_SESSION_SECRET",
    }
    console_key = _secret_file(tmp_path, "console-key\n", "console")
    monkeypatch.setenv("FEDMEDCLIP_NODE_CONSOLE_SESSION_SECRET_FILE", str(console_key))
    assert NodeSettings().console_session_secret.get_secret_value() == "console-key"
    assert InferenceSettings.secret_variable_names() == {
        "FEDMEDCLIP_INFERENCE_NODE_TOKEN",
        "FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS",
        "FEDMEDCLIP_INFERENCE_ADMIN_TOKEN",
        "FEDMEDCLIP_INFERENCE_DICOMWEB_PASSWORD",
        "FEDMEDCLIP_INFERENCE_DICOMWEB_TOKEN",
    }


def test_a_variable_and_its_file_together_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMEDCLIP_NODE_ADMIN_TOKEN", "direct")
    monkeypatch.setenv("FEDMEDCLIP_NODE_ADMIN_TOKEN_FILE", str(_secret_file(tmp_path, "file")))
    with pytest.raises(SettingsError, match="both FEDMEDCLIP_NODE_ADMIN_TOKEN and .*_FILE"):
        NodeSettings()


def test_an_empty_variable_next_to_its_file_counts_as_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMEDCLIP_NODE_ADMIN_TOKEN", "")
    monkeypatch.setenv("FEDMEDCLIP_NODE_ADMIN_TOKEN_FILE", str(_secret_file(tmp_path, "file")))
    assert NodeSettings().admin_token.get_secret_value() == "file"


def test_an_unreadable_secret_file_is_named_in_the_error(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("FEDMEDCLIP_NODE_NODE_TOKEN_FILE", str(missing))
    with pytest.raises(SettingsError) as refused:
        NodeSettings()
    message = str(refused.value)
    assert "FEDMEDCLIP_NODE_NODE_TOKEN_FILE" in message and str(missing) in message
    assert "No such file" in message
    monkeypatch.setenv("FEDMEDCLIP_NODE_NODE_TOKEN_FILE", str(tmp_path))  # a folder
    with pytest.raises(SettingsError, match="NODE_TOKEN_FILE .* cannot be read"):
        NodeSettings()


def test_a_file_variable_of_a_setting_that_is_not_secret_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMEDCLIP_NODE_DEVICE_FILE", str(_secret_file(tmp_path, "cuda")))
    assert NodeSettings().device == "auto"


def test_secrets_never_show_in_reprs(monkeypatch):
    monkeypatch.setenv("FEDMEDCLIP_NODE_DATABASE_URL", "postgresql+psycopg://n:db-pass@db/n")
    settings = NodeSettings(node_token="node-secret", admin_token="admin-secret")
    shown = repr(settings) + str(settings) + repr(settings.model_dump())
    for secret in ("node-secret", "admin-secret", "db-pass"):
        assert secret not in shown


def test_the_inference_node_token_keeps_its_old_name_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS", "c")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_AGGREGATOR_TOKEN", "old-name")
    with caplog.at_level(logging.WARNING, logger="services.common.settings"):
        assert InferenceSettings().node_token.get_secret_value() == "old-name"
    assert "FEDMEDCLIP_INFERENCE_AGGREGATOR_TOKEN is deprecated" in caplog.text
    assert "FEDMEDCLIP_INFERENCE_NODE_TOKEN" in caplog.text
    # The current name wins when both are set.
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_NODE_TOKEN", "new-name")
    assert InferenceSettings().node_token.get_secret_value() == "new-name"
    # In code the field is given by its name.
    assert InferenceSettings(node_token="given").node_token.get_secret_value() == "given"


def test_the_old_inference_token_name_also_reads_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS", "c")
    path = _secret_file(tmp_path, "from-old-file\n")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_AGGREGATOR_TOKEN_FILE", str(path))
    assert InferenceSettings().node_token.get_secret_value() == "from-old-file"


def test_log_level_is_shared_and_checked(monkeypatch):
    monkeypatch.setenv("FEDMEDCLIP_AGG_LOG_LEVEL", "debug")
    assert AggregatorSettings().log_level == "DEBUG"
    assert NodeSettings().log_level == "INFO"
    monkeypatch.setenv("FEDMEDCLIP_NODE_LOG_LEVEL", "chatty")
    with pytest.raises(ValidationError, match="log_level"):
        NodeSettings()


def test_an_empty_database_url_means_the_sqlite_file_in_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMEDCLIP_NODE_DATABASE_URL", "")
    settings = NodeSettings(data_dir=tmp_path)
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path.resolve() / 'node.db'}"
    hub = AggregatorSettings(data_dir=tmp_path)
    assert hub.resolved_database_url() == f"sqlite:///{tmp_path.resolve() / 'aggregator.db'}"


def test_the_environment_of_a_settings_object_gives_the_same_settings(monkeypatch, tmp_path):
    settings = NodeSettings(
        node_token="n-secret",
        admin_token="a-secret",
        data_roots=[tmp_path / "a", tmp_path / "b"],
        data_dir=tmp_path,
        dp_clip_norm=0.5,
        dp_noise_multiplier=2,
        log_level="WARNING",
    )
    env = settings.environment()
    assert env["FEDMEDCLIP_NODE_NODE_TOKEN"] == "n-secret"  # revealed for the child process
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert NodeSettings() == settings


def test_a_secret_from_a_file_is_live_and_one_from_code_is_fixed(monkeypatch, tmp_path):
    tokens = _secret_file(tmp_path, "c1,c2\n", "clinicians")
    admin = _secret_file(tmp_path, "ops-1\n", "admin")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS_FILE", str(tokens))
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_ADMIN_TOKEN_FILE", str(admin))
    settings = InferenceSettings()
    clinicians, ops = settings.live_secret("clinician_tokens"), settings.live_token("admin_token")
    assert [t.get_secret_value() for t in clinicians()] == ["c1", "c2"]
    assert ops() == "ops-1"
    tokens.write_text("c3\n")
    admin.write_text("ops-2, with a comma\n")
    time.sleep(1.05)  # files are looked at once a second at most
    assert [t.get_secret_value() for t in clinicians()] == ["c3"]  # parsed as at start
    assert ops() == "ops-2, with a comma"
    assert settings.live_token("node_token")() == ""  # not from a file: its value at start
    # A worker started from these settings reads the same files, and so follows them too.
    env = settings.environment()
    assert env["FEDMEDCLIP_INFERENCE_ADMIN_TOKEN_FILE"] == str(admin)
    assert env["FEDMEDCLIP_INFERENCE_ADMIN_TOKEN"] == ""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = InferenceSettings()
    assert worker.live_token("admin_token")() == "ops-2, with a comma"
    assert [t.get_secret_value() for t in worker.clinician_tokens] == ["c3"]
    assert worker == InferenceSettings()  # two reads of the same files are equal settings
    # A value given in code beats the file, and stays as given.
    fixed = InferenceSettings(admin_token="from-code")
    admin.write_text("ops-3\n")
    assert fixed.live_token("admin_token")() == "from-code"
    with pytest.raises(KeyError):
        settings.live_secret("no_such_setting")


def test_a_live_secret_file_emptied_keeps_its_value(monkeypatch, tmp_path):
    """CLINICIAN_TOKENS needs one token: an empty file is refused, the old tokens stay."""
    tokens = _secret_file(tmp_path, "c1\n", "clinicians")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS_FILE", str(tokens))
    clinicians = InferenceSettings().live_secret("clinician_tokens")
    tokens.write_text("\n")
    time.sleep(1.05)
    assert [t.get_secret_value() for t in clinicians()] == ["c1"]
