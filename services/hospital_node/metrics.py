"""Prometheus metrics of one node API instance (its own registry, so apps do not clash).

Job counts and job durations are read from the node database at scrape time rather than
counted in this process: jobs finish in the Celery worker, a different process without a
``/metrics``. The duration histogram is derived from each ended job's ``started_at`` and
``finished_at``, so it covers every job the database remembers, survives restarts, and
counts each job once however many API replicas are scraped (jobs are never deleted, so its
counts only grow, as a histogram's must).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from fedmedclip.enums import TERMINAL_JOB_STATES, JobState
from services.common.metrics import RequestMetrics
from services.hospital_node.db import Database, Dataset, Job

JOB_SECONDS_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
"""Upper bounds of the job duration buckets: from a small CPU job to a long GPU round."""
_ENDED = tuple(state.value for state in TERMINAL_JOB_STATES)


def job_seconds_histogram(durations: dict[str, list[float]]) -> HistogramMetricFamily:
    """``fedmedclip_node_job_seconds`` by final state from the jobs' durations."""
    family = HistogramMetricFamily(
        "fedmedclip_node_job_seconds",
        "Duration of ended training jobs (started to done or failed), by final state.",
        labels=["state"],
    )
    for state in _ENDED:
        values = durations.get(state, [])
        counts = [0] * (len(JOB_SECONDS_BUCKETS) + 1)
        for value in values:
            counts[bisect_left(JOB_SECONDS_BUCKETS, value)] += 1
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, JOB_SECONDS_BUCKETS), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([state], buckets, sum(values))
    return family


class _DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "fedmedclip_node_jobs", "Training jobs by state.", labels=["state"]
        )
        datasets = GaugeMetricFamily("fedmedclip_node_datasets", "Registered datasets.")
        with self.db.read() as session:
            counts = dict(
                session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
            n_datasets = session.scalar(select(func.count()).select_from(Dataset)) or 0
            ended = session.execute(
                select(Job.state, Job.started_at, Job.finished_at).where(
                    Job.state.in_(_ENDED),
                    Job.started_at.is_not(None),
                    Job.finished_at.is_not(None),
                )
            ).all()
        durations: dict[str, list[float]] = {}
        for state, started, finished in ended:
            durations.setdefault(state, []).append(max(0.0, (finished - started).total_seconds()))
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        datasets.add_metric([], n_datasets)
        yield jobs
        yield datasets
        yield job_seconds_histogram(durations)


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
