"""Prometheus metrics of one app instance, in a registry of its own.

A per-app :class:`CollectorRegistry` lets several apps live in one process (tests) without
clashing names. Rounds by state are read from the database at scrape time, so every
instance reports the same truth instead of a per-process guess.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from fedmedclip.schemas import RoundState
from services.aggregator.db.models import Round
from services.common.db import Database

log = logging.getLogger(__name__)


class _RoundStates(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fedmedclip_aggregator_rounds", "Rounds by state.", labels=["state"]
        )
        try:
            with self.db.read() as session:
                stmt = select(Round.state, func.count()).group_by(Round.state)
                counts = dict(session.execute(stmt).all())
        except SQLAlchemyError:
            log.warning("rounds by state not collected: database unavailable")
            return
        for state in RoundState:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


class AggregatorMetrics:
    """The counters and histograms the aggregator updates."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.updates_accepted = Counter(
            "fedmedclip_aggregator_updates_accepted",
            "Updates stored (replays not counted).",
            registry=self.registry,
        )
        self.updates_rejected = Counter(
            "fedmedclip_aggregator_updates_rejected",
            "Updates refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.bytes_received = Counter(
            "fedmedclip_aggregator_update_bytes_received",
            "Bytes of update bodies read.",
            registry=self.registry,
        )
        self.aggregation_seconds = Histogram(
            "fedmedclip_aggregator_aggregation_seconds",
            "Time to aggregate a round and publish its version.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.registry.register(_RoundStates(db))
