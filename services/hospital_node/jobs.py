"""Training job lifecycle in the node database: create, claim, report, finish, reap.

A job row is committed before anything is enqueued, so a job never exists only in a
queue. Every state change after that is a guarded ``UPDATE ... WHERE state IN (...)``:
a redelivered Celery message finds its job no longer ``queued`` and does nothing, and a
worker whose job was already declared lost stops instead of overwriting the verdict.

A running job writes a heartbeat every few seconds from a side thread; a job whose
heartbeat stops (its worker was killed) is marked failed by :func:`reap_stale_jobs`,
which the API's monitor runs periodically.

The functions over one job take the caller's ``Session``; three take the ``Database``
because they need transactions of their own: :func:`start_job` (the job commits before it
is enqueued), :class:`DatabaseProgress` and :func:`execute_job` (a job writes progress
while it runs, each report committed at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedmedclip.backbone import BackboneError
from fedmedclip.codec import CodecError
from fedmedclip.data.datasets import DatasetError
from fedmedclip.data.images import ImageDecodeError
from fedmedclip.enums import ACTIVE_JOB_STATES, JobState
from fedmedclip.model_store import ModelBlobError
from services.common.hub_client import HubError
from services.common.tracing import current_traceparent, parse_traceparent, traced
from services.hospital_node.datasets import DatasetRejected, DatasetSource
from services.hospital_node.db import Database, Dataset, Job, utcnow
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.privacy import PrivacyBudgetExhausted, PrivacyLedger
from services.hospital_node.settings import NodeSettings
from services.hospital_node.training import JobFailure, JobOutcome, run_training

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL = 0.5
"""Seconds between two progress writes of the same phase (embedding reports per image)."""

EXPECTED_FAILURES = (
    JobFailure,
    HubError,
    DatasetRejected,
    DatasetError,
    ImageDecodeError,
    BackboneError,
    CodecError,
    ModelBlobError,
    OSError,
    PrivacyBudgetExhausted,
)
_RUNNING = (JobState.running, JobState.uploading)


class JobConflict(RuntimeError):
    """A live (not failed) job already exists for the round."""


class JobAborted(RuntimeError):
    """The job was ended elsewhere (declared lost, or the node is shutting down)."""


def create_job(session: Session, round_id: int, trigger: str) -> Job:
    """Record a queued job; raise :class:`JobConflict` if the round already has a live one."""
    job = Job(round_id=round_id, trigger=trigger, state=JobState.queued.value)
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:
        raise JobConflict(f"round {round_id} already has a job that is not failed") from exc
    return job


def round_has_job(session: Session, round_id: int) -> bool:
    return session.scalar(select(Job.id).where(Job.round_id == round_id).limit(1)) is not None


def _set(
    session: Session,
    job_id: int,
    states: Iterable[JobState],
    *conditions: ColumnElement[bool],
    **values: Any,
) -> bool:
    """Update a job only while it is in one of ``states``; report whether it was."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_([s.value for s in states]), *conditions)
        .values(**values)
    )
    return result.rowcount == 1


def fail_job(
    session: Session,
    job_id: int,
    reason: str,
    states: Iterable[JobState] = ACTIVE_JOB_STATES,
    *conditions: ColumnElement[bool],
) -> bool:
    """Mark a job failed with ``reason`` if it is still in ``states``; report whether it was."""
    failed = _set(
        session,
        job_id,
        states,
        *conditions,
        state=JobState.failed.value,
        error=reason,
        finished_at=utcnow(),
    )
    if failed:
        log.warning("job %d failed: %s", job_id, reason)
    return failed


def reap_stale_jobs(session: Session, stale_seconds: float) -> list[int]:
    """Fail running jobs whose heartbeat stopped: their worker process is gone."""
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    stale = session.scalars(
        select(Job.id).where(Job.state.in_([s.value for s in _RUNNING]), Job.heartbeat_at < cutoff)
    ).all()
    reason = (
        f"worker lost: no heartbeat for more than {stale_seconds:g} s (worker killed or crashed)"
    )
    still_stale = Job.heartbeat_at < cutoff  # a beat may have come in since the query
    return [job_id for job_id in stale if fail_job(session, job_id, reason, _RUNNING, still_stale)]


def long_queued_jobs(session: Session, older_than_seconds: float) -> list[int]:
    """Jobs still queued after ``older_than_seconds``: their broker message may be lost.

    Re-sending one is safe: a worker claims a job only while it is still queued, so a
    duplicate message does nothing.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    return list(
        session.scalars(
            select(Job.id).where(Job.state == JobState.queued, Job.created_at < cutoff)
        ).all()
    )


def recover_embedded_jobs(session: Session) -> list[int]:
    """After an embedded node restarts: fail interrupted jobs, return queued ones to resubmit
    (once the caller's scope has committed)."""
    jobs = session.scalars(
        select(Job).where(Job.state.in_([s.value for s in ACTIVE_JOB_STATES]))
    ).all()
    queued = []
    for job in jobs:
        if job.state == JobState.queued:
            queued.append(job.id)
        else:
            fail_job(session, job.id, "interrupted: the node restarted while the job ran", _RUNNING)
    return queued


class DatabaseProgress:
    """Writes a job's progress and heartbeat to its row; aborts once the job is ended.

    Holds the ``Database``: each report is a writing scope of its own, committed at once,
    so the API sees the progress and the reaper the heartbeat while the job runs.
    """

    def __init__(self, db: Database, job_id: int, cancel: threading.Event | None = None) -> None:
        self.db = db
        self.job_id = job_id
        self.cancel = cancel or threading.Event()
        self._last: tuple[str, float] = ("", 0.0)

    def _write(self, states: Iterable[JobState] = _RUNNING, **values: Any) -> None:
        if self.cancel.is_set():
            raise JobAborted("the node is shutting down")
        with self.db.write() as session:
            running = _set(session, self.job_id, states, heartbeat_at=utcnow(), **values)
        if not running:
            raise JobAborted("the job was ended while it ran")

    def phase(self, name: str, percent: float) -> None:
        now = time.monotonic()
        if name == self._last[0] and now - self._last[1] < PROGRESS_MIN_INTERVAL:
            return
        self._last = (name, now)
        self._write(phase=name, percent=round(percent, 1))

    def epoch(self, epoch: int, epochs: int, loss: float, percent: float) -> None:
        self._write(epoch=epoch, epochs=epochs, loss=loss, percent=round(percent, 1))

    def uploading(self) -> None:
        self._write(state=JobState.uploading.value, phase="uploading", percent=95.0)

    def heartbeat(self) -> None:
        with self.db.write() as session:
            _set(session, self.job_id, _RUNNING, heartbeat_at=utcnow())


def _heartbeat_loop(progress: DatabaseProgress, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            progress.heartbeat()
        except Exception:  # a missed beat is harmless; the next one may succeed
            log.exception("heartbeat of job %d failed", progress.job_id)


def _datasets(session: Session) -> list[DatasetSource]:
    rows = session.scalars(select(Dataset).order_by(Dataset.id)).all()
    return [DatasetSource(r.id, r.name, Path(r.path)) for r in rows]


def _finish(session: Session, job_id: int, outcome: JobOutcome) -> None:
    _set(
        session,
        job_id,
        _RUNNING,
        state=JobState.done.value,
        phase="done",
        percent=100.0,
        base_version=outcome.base_version,
        head_version=outcome.head_version,
        sample_count=outcome.sample_count,
        update_bytes=outcome.update_bytes,
        update_sha256=outcome.update_sha256,
        metrics=outcome.metrics,
        finished_at=utcnow(),
    )


def execute_job(
    settings: NodeSettings,
    db: Database,
    job_id: int,
    cancel: threading.Event | None = None,
    *,
    traceparent: str | None = None,
) -> None:
    """Run a queued job to a terminal state in this thread; never raises for job faults.

    The job is one trace: its log lines and every hub request it makes (each a new span)
    carry one trace id, which the hub logs too, so a round can be followed across sites.
    ``traceparent`` continues the trace of the request that started the job (an admin's
    ``POST /api/v1/jobs``); a job the agent started begins a trace of its own. Takes the
    ``Database``: the job runs for minutes to hours in short transactions of its own.
    """
    parent = parse_traceparent(traceparent)
    with traced(parent.child() if parent else None):
        _run_job(settings, db, job_id, cancel)


def _run_job(
    settings: NodeSettings, db: Database, job_id: int, cancel: threading.Event | None
) -> None:
    now = utcnow()
    with db.write() as session:
        claimed = _set(
            session,
            job_id,
            [JobState.queued],
            state=JobState.running.value,
            phase="starting",
            started_at=now,
            heartbeat_at=now,
        )
    if not claimed:
        log.info("job %d is not queued any more; nothing to do", job_id)
        return
    with db.read() as session:
        job = session.get_one(Job, job_id)
        round_id, key = job.round_id, job.idempotency_key
    log.info("job %d started for round %d", job_id, round_id)
    progress = DatabaseProgress(db, job_id, cancel)
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat_loop,
        args=(progress, stop, max(0.2, min(5.0, settings.job_stale_seconds / 4))),
        name=f"job-{job_id}-heartbeat",
        daemon=True,
    )
    beat.start()
    hub = connect_hub(settings)
    try:
        with db.read() as session:
            datasets = _datasets(session)
        outcome = run_training(
            job_id=job_id,
            round_id=round_id,
            idempotency_key=key,
            datasets=datasets,
            settings=settings,
            hub=hub,
            progress=progress,
            ledger=PrivacyLedger(db),
        )
        with db.write() as session:
            _finish(session, job_id, outcome)
    except JobAborted as exc:
        reason = f"aborted: {exc}"
    except EXPECTED_FAILURES as exc:
        reason = str(exc)
    except Exception as exc:  # a bug must still end the job visibly, never leave it running
        log.exception("job %d crashed", job_id)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    else:
        log.info("job %d done: round %d, head v%d", job_id, round_id, outcome.head_version)
        return
    finally:
        stop.set()
        hub.close()
    with db.write() as session:
        fail_job(session, job_id, reason, _RUNNING)


class JobRunner(Protocol):
    """Starts a recorded job somewhere: a local thread or a Celery worker."""

    kind: str
    """What runs the jobs, as named in ``/ready``: ``broker`` or ``embedded``."""

    def submit(self, job_id: int, traceparent: str | None = None) -> None:
        """Hand the job over; ``traceparent`` is the trace the job continues."""

    def check(self) -> None:
        """Raise when jobs cannot be started now."""

    def close(self) -> None: ...


class ThreadRunner:
    """The embedded default: jobs run one at a time in a background thread of the API."""

    kind = "embedded"

    def __init__(self, run: Callable[[int, threading.Event, str | None], None]) -> None:
        self._run = run
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-job")

    def submit(self, job_id: int, traceparent: str | None = None) -> None:
        self._pool.submit(self._run, job_id, self._cancel, traceparent)

    def check(self) -> None:
        if self._cancel.is_set():
            raise RuntimeError("the job thread is shut down")

    def close(self) -> None:
        """Stop at the next progress report; queued jobs stay queued for the next start."""
        self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class EnqueueError(RuntimeError):
    """The job was recorded but could not be handed to a worker (it is marked failed)."""


def start_job(db: Database, runner: JobRunner, round_id: int, trigger: str) -> Job:
    """Record a job, then hand it to the runner; the commit always comes first (so this
    takes the ``Database``: a worker must find the job it is handed)."""
    with db.write() as session:
        job = create_job(session, round_id, trigger)
    try:
        runner.submit(job.id, current_traceparent())
    except Exception as exc:  # broker down or refusing: the job must not stay queued forever
        reason = f"could not enqueue the job: {type(exc).__name__}: {exc}"
        with db.write() as session:
            fail_job(session, job.id, reason, [JobState.queued])
        raise EnqueueError(reason) from exc
    return job
