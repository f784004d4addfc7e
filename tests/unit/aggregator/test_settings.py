"""Aggregator settings come from the documented FEDMEDCLIP_AGG_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.aggregator.settings import AggregatorSettings

DOCUMENTED = {
    "FEDMEDCLIP_AGG_DATA_DIR": "/srv/hub",
    "FEDMEDCLIP_AGG_DATABASE_URL": "postgresql+psycopg://hub@db/hub",
    "FEDMEDCLIP_AGG_ADMIN_TOKEN": "s3cret",
    "FEDMEDCLIP_AGG_MAX_UPLOAD_BYTES": "2048",
    "FEDMEDCLIP_AGG_DEFAULT_DEADLINE_SECONDS": "30",
    "FEDMEDCLIP_AGG_AUTO_MIGRATE": "true",
    "FEDMEDCLIP_AGG_LOG_JSON": "true",
}


def test_every_documented_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DOCUMENTED.items():
        monkeypatch.setenv(name, value)
    settings = AggregatorSettings()
    assert settings.data_dir == Path("/srv/hub")
    assert settings.resolved_database_url() == "postgresql+psycopg://hub@db/hub"
    assert settings.admin_token_value() == "s3cret"
    assert settings.max_upload_bytes == 2048
    assert settings.default_deadline_seconds == 30
    assert settings.auto_migrate is True and settings.log_json is True
    assert "s3cret" not in repr(settings)


def test_defaults_give_an_embedded_sqlite_hub(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in DOCUMENTED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = AggregatorSettings()
    expected = tmp_path.resolve() / "var" / "aggregator" / "aggregator.db"
    assert settings.resolved_database_url() == f"sqlite:///{expected}"
    assert settings.admin_token_value() is None
    assert settings.max_upload_bytes == 8388608 and settings.default_deadline_seconds == 600
    assert settings.auto_migrate is False and settings.log_json is False


def test_empty_admin_token_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMEDCLIP_AGG_ADMIN_TOKEN", "")
    assert AggregatorSettings().admin_token_value() is None


def test_nonsense_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMEDCLIP_AGG_MAX_UPLOAD_BYTES", "-5")
    with pytest.raises(ValidationError, match="max_upload_bytes"):
        AggregatorSettings()
