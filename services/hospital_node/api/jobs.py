"""``/api/v1/jobs``: start a training job for a round and follow it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import func, select

from fedmedclip.enums import JobState, RoundState
from services.common.hub_client import HubRejected, HubUnavailable
from services.hospital_node.api.deps import AdminOnly, Context
from services.hospital_node.api.schemas import JobIn, JobOut, JobProgressOut
from services.hospital_node.db import Dataset, Job
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.jobs import EnqueueError, JobConflict, start_job

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=AdminOnly)


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        round_id=job.round_id,
        trigger=job.trigger,
        state=job.state,
        progress=JobProgressOut(
            phase=job.phase, epoch=job.epoch, epochs=job.epochs, percent=job.percent, loss=job.loss
        ),
        base_version=job.base_version,
        head_version=job.head_version,
        sample_count=job.sample_count,
        update_bytes=job.update_bytes,
        update_sha256=job.update_sha256,
        metrics=job.metrics,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        heartbeat_at=job.heartbeat_at,
        finished_at=job.finished_at,
    )


def _round_to_join(ctx: Context, round_id: int | None) -> int:
    """The round the job is for, checked with the hub where the hub can answer.

    With an explicit round id and an unreachable hub the job is still accepted: it
    retries the hub itself and ends failed with the reason if the hub stays away.
    """
    try:
        with connect_hub(ctx.settings, interactive=True) as hub:
            if round_id is None:
                rounds = hub.open_rounds()
                if not rounds:
                    raise HTTPException(status.HTTP_409_CONFLICT, "no round is open at the hub")
                return rounds[0].id
            state = hub.get_round(round_id).state
    except HubRejected as exc:
        code = status.HTTP_404_NOT_FOUND if exc.status_code == 404 else status.HTTP_502_BAD_GATEWAY
        raise HTTPException(code, str(exc)) from exc
    except HubUnavailable as exc:
        if round_id is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return round_id
    if state != RoundState.open:
        raise HTTPException(status.HTTP_409_CONFLICT, f"round {round_id} is {state}, not open")
    return round_id


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def create_job(ctx: Context, body: JobIn | None = None) -> JobOut:
    """Record a job for the open round (or ``round_id``) and return at once."""
    with ctx.db.session() as session:
        if not session.scalar(select(func.count()).select_from(Dataset)):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "no dataset is registered; register one with POST /api/v1/datasets first",
            )
    round_id = _round_to_join(ctx, body.round_id if body else None)
    try:
        job = start_job(ctx.db, ctx.runner, round_id, "api")
    except JobConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except EnqueueError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return job_out(job)


@router.get("", response_model=list[JobOut])
def list_jobs(
    ctx: Context,
    limit: int = Query(100, ge=1, le=1000),
    state: JobState | None = None,
) -> list[JobOut]:
    """Jobs, newest first."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state:
        query = query.where(Job.state == state.value)
    with ctx.db.session() as session:
        return [job_out(j) for j in session.scalars(query).all()]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: int, ctx: Context) -> JobOut:
    with ctx.db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} does not exist")
        return job_out(job)
