"""Aggregator settings, read from ``FEDMEDCLIP_AGG_*`` environment variables.

Field names are chosen so that the prefix plus the upper-cased field name gives exactly the
variables documented in ``docs/architecture.md``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings, reveal, sqlite_or_configured


class AggregatorSettings(ServiceSettings):
    """Everything an operator can set; defaults give a working embedded (SQLite) hub."""

    model_config = SettingsConfigDict(env_prefix="FEDMEDCLIP_AGG_")

    data_dir: Path = Field(Path("./var/aggregator"), description="Where the SQLite file lives.")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; defaults to sqlite:///<data_dir>/aggregator.db."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the federation admin; admin routes answer 503 without."
    )
    max_upload_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Cap on an update body.")
    default_deadline_seconds: int = Field(
        600, ge=1, le=30 * 24 * 3600, description="Round deadline when none is given."
    )
    auto_migrate: bool = Field(
        False, description="Migrate PostgreSQL at start (SQLite always migrates itself)."
    )

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        return sqlite_or_configured(self.database_url, self.data_dir, "aggregator.db")

    def admin_token_value(self) -> str | None:
        """The admin token, treating an empty string as not configured."""
        return reveal(self.admin_token) or None
