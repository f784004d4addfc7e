"""Celery app of the node: the API enqueues job ids, ``fedmedclip node worker`` runs them.

Messages carry only a job id (and the ``traceparent`` the job continues, checked like any
incoming header); the job itself lives in the node database, committed before
the message is sent. The worker acknowledges a message only after the job ended
(``acks_late``), and a message whose worker died is rejected back to the queue
(``reject_on_worker_lost``), so the broker never silently drops a job. A redelivered
message is harmless: :func:`~services.hospital_node.jobs.execute_job` runs a job only while
it is still ``queued``, and a job whose worker died is failed by the API's heartbeat monitor.

The worker runs the solo pool with concurrency 1: one training at a time per GPU, and the
task runs in the worker's main process, so the backbone is loaded once per worker process
and killing the worker really stops the job.
"""

from __future__ import annotations

from functools import cache

from celery import Celery

from services.common.db import Database
from services.hospital_node.jobs import execute_job
from services.hospital_node.settings import NodeSettings

TASK_NAME = "fedmedclip.node.run_job"


@cache
def _database(url: str) -> Database:
    """One engine per worker process and database (the node API migrates it, not workers)."""
    return Database.connect(url)


def create_celery(settings: NodeSettings) -> Celery:
    """A Celery app bound to ``settings.broker_url`` with the training task registered."""
    app = Celery("fedmedclip-node", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",  # job ids only; never pickle what comes off the broker
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # Fail fast when the broker is down: the API then marks the job failed.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        broker_transport_options={"visibility_timeout": 6 * 3600},
        worker_hijack_root_logger=False,
    )

    @app.task(name=TASK_NAME)
    def run_job(job_id: int, traceparent: str | None = None) -> None:
        db = _database(settings.resolved_database_url())
        execute_job(settings, db, int(job_id), traceparent=traceparent)

    return app


class CeleryRunner:
    """Sends recorded jobs to the Celery workers through the broker."""

    kind = "broker"

    def __init__(self, settings: NodeSettings) -> None:
        self.app = create_celery(settings)

    def submit(self, job_id: int, traceparent: str | None = None) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], kwargs={"traceparent": traceparent})

    def check(self) -> None:
        """Raise when the broker cannot be reached."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def close(self) -> None:
        self.app.close()


def run_worker(settings: NodeSettings, *, loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process (blocks until it is stopped)."""
    from services.common.structured_logging import configure_logging

    configure_logging(settings.log_json, settings.log_level)
    app = create_celery(settings)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
