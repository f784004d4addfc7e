"""``/api/v1/jobs``: start a training job for a round and follow it."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from fedmedclip.enums import JobState
from fedmedclip.ids import DbId
from services.hospital_node import job_requests
from services.hospital_node.api.deps import AdminOnly, ContextDep, SessionDep
from services.hospital_node.api.schemas import JobIn, JobOut, JobProgressOut
from services.hospital_node.db import Job

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


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def create_job(ctx: ContextDep, body: JobIn | None = None) -> JobOut:
    """Record a job for the open round (or ``round_id``) and return at once."""
    round_id = body.round_id if body else None
    return job_out(job_requests.request_job(ctx.settings, ctx.db, ctx.runner, round_id))


@router.get("", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    limit: int = Query(100, ge=1, le=1000),
    state: JobState | None = None,
) -> list[JobOut]:
    """Jobs, newest first."""
    return [job_out(j) for j in job_requests.list_jobs(session, limit=limit, state=state)]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: DbId, session: SessionDep) -> JobOut:
    return job_out(job_requests.get_job(session, job_id))
