"""``/api/v1/jobs``: start a training job for a round and follow it."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from fedmedclip.enums import JobState
from fedmedclip.ids import DbId
from services.hospital_node import job_requests
from services.hospital_node.api.deps import AdminOnly, ContextDep, SessionDep
from services.hospital_node.api.schemas import JobIn, JobOut

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=AdminOnly)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def create_job(ctx: ContextDep, body: JobIn | None = None) -> JobOut:
    """Record a job for the open round (or ``round_id``) and return at once."""
    round_id = body.round_id if body else None
    return JobOut.model_validate(
        job_requests.request_job(ctx.settings, ctx.db, ctx.runner, round_id)
    )


@router.get("", response_model=list[JobOut])
def list_jobs(
    session: SessionDep,
    limit: int = Query(100, ge=1, le=1000),
    state: JobState | None = None,
) -> list[JobOut]:
    """Jobs, newest first."""
    return [
        JobOut.model_validate(j) for j in job_requests.list_jobs(session, limit=limit, state=state)
    ]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: DbId, session: SessionDep) -> JobOut:
    return JobOut.model_validate(job_requests.get_job(session, job_id))
