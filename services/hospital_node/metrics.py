"""Prometheus metrics of one node API instance (its own registry, so apps do not clash).

Job counts are read from the node database at scrape time rather than counted in this
process: jobs finish in the Celery worker, a different process.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from fedmedclip.enums import JobState
from services.common.metrics import RequestMetrics
from services.hospital_node.db import Database, Dataset, Job


class _DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "fedmedclip_node_jobs", "Training jobs by state.", labels=["state"]
        )
        datasets = GaugeMetricFamily("fedmedclip_node_datasets", "Registered datasets.")
        with self.db.read_session() as session:
            counts = dict(
                session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
            n_datasets = session.scalar(select(func.count()).select_from(Dataset)) or 0
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        datasets.add_metric([], n_datasets)
        yield jobs
        yield datasets


class NodeMetrics:
    """The registry and the metrics the API and the agent update."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.http = RequestMetrics(
            self.registry,
            requests=(
                "fedmedclip_node_http_requests",
                "HTTP requests by route template, method and status.",
            ),
            latency=(
                "fedmedclip_node_http_request_seconds",
                "HTTP request latency by route template.",
            ),
        )
        self.agent_polls = Counter(
            "fedmedclip_node_agent_polls",
            "Agent polls of the aggregator by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(db))
