"""What one app instance holds: settings, database, metrics, round closer, authenticator."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.aggregator.auth import hub_authenticator
from services.aggregator.closing import RoundCloser
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.retention import prune_secagg_messages, prune_update_payloads
from services.aggregator.settings import AggregatorSettings
from services.common.auth import Authenticator
from services.common.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppContext:
    settings: AggregatorSettings
    db: Database
    metrics: AggregatorMetrics
    closer: RoundCloser
    auth: Authenticator

    @classmethod
    def build(cls, settings: AggregatorSettings) -> AppContext:
        db = Database.connect(settings.resolved_database_url())
        metrics = AggregatorMetrics(db)

        def after_publish(seconds: float) -> None:
            """Runs once a round is published: time it, then apply payload retention.

            Retention is housekeeping, in one transaction of its own: a failure is logged
            and retried after the next publish, never turned into a failed close (the
            version is already stored).
            """
            metrics.aggregation_seconds.observe(seconds)
            try:
                with db.write() as session:
                    prune_update_payloads(session, settings.keep_update_versions)
                    prune_secagg_messages(session, settings.keep_update_versions)
            except Exception:
                log.exception("pruning old update payloads failed; retried after the next publish")

        closer = RoundCloser(db, on_aggregated=after_publish)
        auth = hub_authenticator(settings)
        return cls(settings=settings, db=db, metrics=metrics, closer=closer, auth=auth)
