"""What one running node API holds: settings, database, job runner, metrics, authenticator."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fedmedclip.model_store import ModelStore
from services.common.auth import Authenticator, StaticToken
from services.hospital_node.db import Database, open_database
from services.hospital_node.jobs import JobRunner, ThreadRunner, execute_job
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

    @classmethod
    def build(cls, settings: NodeSettings) -> NodeContext:
        db = open_database(settings.resolved_database_url())
        return cls(
            settings=settings,
            db=db,
            runner=_runner(settings, db),
            metrics=NodeMetrics(db),
            auth=node_authenticator(settings),
        )

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.settings.model_store_dir)


def _runner(settings: NodeSettings, db: Database) -> JobRunner:
    """A Celery worker when a broker is configured, else a thread of this process."""
    if settings.broker_url:
        from services.hospital_node.worker import CeleryRunner

        return CeleryRunner(settings)

    def run(job_id: int, cancel: threading.Event, traceparent: str | None) -> None:
        execute_job(settings, db, job_id, cancel, traceparent=traceparent)

    return ThreadRunner(run)
