"""What one app instance holds: settings, database, metrics, round closer, authenticator."""

from __future__ import annotations

from dataclasses import dataclass

from services.aggregator.auth import hub_authenticator
from services.aggregator.closing import RoundCloser
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.settings import AggregatorSettings
from services.common.auth import Authenticator
from services.common.db import Database


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
        closer = RoundCloser(db, on_aggregated=metrics.aggregation_seconds.observe)
        auth = hub_authenticator(settings)
        return cls(settings=settings, db=db, metrics=metrics, closer=closer, auth=auth)
