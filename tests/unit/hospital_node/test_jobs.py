"""Job lifecycle in the node database: one live job per round, guarded transitions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from fedmedclip.enums import JobState
from services.hospital_node.db import Database, Job, open_database, utcnow
from services.hospital_node.jobs import (
    DatabaseProgress,
    EnqueueError,
    JobAborted,
    JobConflict,
    create_job,
    execute_job,
    fail_job,
    reap_stale_jobs,
    recover_embedded_jobs,
    start_job,
)
from services.hospital_node.settings import NodeSettings
from services.hospital_node.worker import CeleryRunner
from tests.support.processes import free_port


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        aggregator_url=f"http://127.0.0.1:{free_port()}",
        node_token="n",
        admin_token="a",
        data_dir=tmp_path,
        model_store_dir=tmp_path / "store",
        hub_retries=1,
        hub_backoff_seconds=0.01,
    )


@pytest.fixture
def db(settings: NodeSettings) -> Database:
    database = open_database(settings.resolved_database_url())
    yield database
    database.dispose()


def _job(db: Database, job_id: int) -> Job:
    with db.read() as session:
        return session.get_one(Job, job_id)


def _create(db: Database, round_id: int) -> Job:
    with db.write() as session:
        return create_job(session, round_id=round_id, trigger="api")


def _fail(db: Database, job_id: int, reason: str) -> bool:
    with db.write() as session:
        return fail_job(session, job_id, reason)


def _force(db: Database, job_id: int, **values) -> None:
    with db.write() as session:
        job = session.get_one(Job, job_id)
        for key, value in values.items():
            setattr(job, key, value)


def test_one_live_job_per_round_but_a_failed_one_can_be_retried(db: Database) -> None:
    first = _create(db, round_id=7)
    assert first.state == "queued" and first.idempotency_key == f"job-{first.id}-round-7"
    with pytest.raises(JobConflict, match="round 7 already has a job"), db.write() as session:
        create_job(session, round_id=7, trigger="agent")
    assert _fail(db, first.id, "boom")
    second = _create(db, round_id=7)
    assert second.id != first.id and second.idempotency_key != first.idempotency_key


def test_a_redelivered_job_that_already_ended_is_not_run_again(settings, db) -> None:
    job = _create(db, round_id=1)
    _fail(db, job.id, "worker lost")
    execute_job(settings, db, job.id)
    after = _job(db, job.id)
    assert after.state == "failed" and after.error == "worker lost" and after.started_at is None


def test_a_job_whose_hub_is_unreachable_fails_with_the_reason(settings, db) -> None:
    job = _create(db, round_id=1)
    execute_job(settings, db, job.id)
    after = _job(db, job.id)
    assert after.state == "failed"
    assert "unreachable for reading the task after 2 attempts" in after.error
    assert after.started_at is not None and after.finished_at is not None


def test_running_jobs_without_heartbeat_are_reaped(db: Database) -> None:
    stale = _create(db, round_id=1)
    fresh = _create(db, round_id=2)
    queued = _create(db, round_id=3)
    _force(db, stale.id, state="running", heartbeat_at=utcnow() - timedelta(seconds=120))
    _force(db, fresh.id, state="uploading", heartbeat_at=utcnow())
    with db.write() as session:
        assert reap_stale_jobs(session, stale_seconds=60) == [stale.id]
    assert "worker lost" in _job(db, stale.id).error
    assert _job(db, fresh.id).state == "uploading" and _job(db, queued.id).state == "queued"


def test_progress_stops_a_job_that_was_ended_elsewhere(db: Database) -> None:
    job = _create(db, round_id=1)
    _force(db, job.id, state="running")
    progress = DatabaseProgress(db, job.id)
    progress.epoch(1, 4, 0.7, 50.0)
    row = _job(db, job.id)
    assert (row.epoch, row.epochs, row.loss, row.percent) == (1, 4, 0.7, 50.0)
    _fail(db, job.id, "worker lost")
    with pytest.raises(JobAborted):
        progress.epoch(2, 4, 0.6, 60.0)
    assert _job(db, job.id).epoch == 1


def test_restart_of_an_embedded_node_resubmits_queued_and_fails_interrupted(db) -> None:
    queued = _create(db, round_id=1)
    running = _create(db, round_id=2)
    _force(db, running.id, state=JobState.running.value, heartbeat_at=utcnow())
    with db.write() as session:
        assert recover_embedded_jobs(session) == [queued.id]
    assert "node restarted" in _job(db, running.id).error


def test_a_job_that_cannot_be_enqueued_is_marked_failed(settings, db) -> None:
    settings.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    runner = CeleryRunner(settings)
    with pytest.raises(EnqueueError, match="could not enqueue"):
        start_job(db, runner, round_id=5, trigger="api")
    runner.close()
    with db.read() as session:
        (job,) = session.query(Job).all()
    assert job.state == "failed" and "could not enqueue" in job.error
    assert _create(db, round_id=5).state == "queued"
