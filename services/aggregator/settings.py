"""Aggregator settings, read from ``FEDMEDCLIP_AGG_*`` environment variables.

Field names are chosen so that the prefix plus the upper-cased field name gives exactly the
variables documented in ``docs/architecture.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.serving import ServerTls, server_tls
from services.common.settings import OptionalPath, ServiceSettings, reveal, sqlite_or_configured


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
    console_session_secret: SecretStr | None = Field(
        None,
        description="Key that signs console sessions; random per process when unset "
        "(sessions then end at restart and are not shared between replicas).",
    )
    max_upload_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Cap on an update body; a secure round's masked ViT-S-32 update with class "
        "statistics is about 4.7 MB (8 bytes per value).",
    )
    default_deadline_seconds: int = Field(
        600, ge=1, le=30 * 24 * 3600, description="Round deadline when none is given."
    )
    keep_update_versions: int = Field(
        10,
        ge=0,
        description="Keep update payloads behind the newest N global versions; older ones "
        "are emptied after each publish (metadata and sha256 stay, audited); 0 = keep all.",
    )
    auto_migrate: bool = Field(
        False, description="Migrate PostgreSQL at start (SQLite always migrates itself)."
    )
    client_ca: OptionalPath = Field(
        None,
        description="Mutual TLS: node requests must present a certificate from this CA whose "
        "common name is the node's name (needs SSL_CERTFILE/SSL_KEYFILE).",
    )

    def server_tls(self, **kwargs: Any) -> ServerTls | None:
        """HTTPS, asking clients for a certificate from ``client_ca`` when one is set.

        The handshake only asks (admins and probes come without one); the app refuses a
        node request without a valid certificate (``auth.authenticate``).
        """
        return server_tls(self.ssl_certfile, self.ssl_keyfile, self.client_ca, **kwargs)

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        return sqlite_or_configured(self.database_url, self.data_dir, "aggregator.db")

    def admin_token_value(self) -> str | None:
        """The admin token, treating an empty string as not configured."""
        return reveal(self.admin_token) or None
