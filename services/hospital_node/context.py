"""What one running node API holds: settings, database, job runner, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fedmedclip.model_store import ModelStore
from services.common.auth import Authenticator, StaticToken
from services.hospital_node.db import Database
from services.hospital_node.jobs import JobRunner
from services.hospital_node.metrics import NodeMetrics
from services.hospital_node.settings import NodeSettings

ADMIN = "admin"
"""The one role of the node API: the site admin."""


def node_authenticator(settings: NodeSettings) -> Authenticator:
    """The static site admin token (read live) and, with single sign-on, the IdP."""
    admin = StaticToken(ADMIN, settings.live_secret("admin_token"), lambda _: ADMIN)
    return Authenticator.from_settings(settings, admin)


@dataclass
class NodeContext:
    settings: NodeSettings
    db: Database
    runner: JobRunner
    metrics: NodeMetrics
    auth: Authenticator

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.settings.model_store_dir)
