"""Jobs as the site admin asks for them: start one for a round, list them, read one.

What ``/api/v1/jobs`` does, apart from HTTP: the checks before a job is recorded (a dataset
is registered, the round exists and is open at the hub) and the lookups. Refusals are the
service errors of :mod:`services.common.problems`, so the router only shapes answers.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedmedclip.enums import JobState, RoundState
from services.common.hub_client import HubRejected, HubUnavailable
from services.common.problems import BadGateway, Conflict, NotFound, Unavailable
from services.hospital_node.datasets import has_datasets
from services.hospital_node.db import Database, Job
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.jobs import EnqueueError, JobConflict, JobRunner, start_job
from services.hospital_node.settings import NodeSettings


def _round_to_join(settings: NodeSettings, round_id: int | None) -> int:
    """The round the job is for, checked with the hub where the hub can answer.

    With an explicit round id and an unreachable hub the job is still accepted: it
    retries the hub itself and ends failed with the reason if the hub stays away.
    """
    try:
        with connect_hub(settings, interactive=True) as hub:
            if round_id is None:
                rounds = hub.open_rounds()
                if not rounds:
                    raise Conflict("no round is open at the hub", code="no_open_round")
                return rounds[0].id
            state = hub.get_round(round_id).state
    except HubRejected as exc:
        if exc.status_code == 404:
            raise NotFound(str(exc), code="unknown_round") from exc
        raise BadGateway(str(exc), code="hub_rejected") from exc
    except HubUnavailable as exc:
        if round_id is None:
            raise Unavailable(str(exc), code="hub_unavailable") from exc
        return round_id
    if state != RoundState.open:
        raise Conflict(f"round {round_id} is {state}, not open", code="round_not_open")
    return round_id


def request_job(
    settings: NodeSettings, db: Database, runner: JobRunner, round_id: int | None
) -> Job:
    """Record a job for ``round_id`` (default: the hub's open round) and hand it to a worker.

    409 without a registered dataset, for a round that is not open or already has a live
    job; 404 for a round the hub does not know; 503 when no worker can take the job. Takes
    the ``Database``: the hub is asked outside any transaction, and the job is committed
    before a worker is handed it (:func:`~services.hospital_node.jobs.start_job`).
    """
    with db.read() as session:
        if not has_datasets(session):
            raise Conflict(
                "no dataset is registered; register one with POST /api/v1/datasets first",
                code="no_dataset",
            )
    round_id = _round_to_join(settings, round_id)
    try:
        return start_job(db, runner, round_id, "api")
    except JobConflict as exc:
        raise Conflict(str(exc), code="job_exists") from exc
    except EnqueueError as exc:
        raise Unavailable(str(exc), code="enqueue_failed") from exc


def list_jobs(session: Session, *, limit: int, state: JobState | None) -> list[Job]:
    """Jobs, newest first, optionally only those in ``state``."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state:
        query = query.where(Job.state == state.value)
    return list(session.scalars(query))


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job
