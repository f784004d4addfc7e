"""``/api/v1/task``: what the federation learns."""

from __future__ import annotations

from fastapi import APIRouter

from fedmedclip.schemas import TaskSpec
from services.aggregator import tasks
from services.aggregator.api.deps import AdminDep, CallerDep, SessionDep

router = APIRouter(prefix="/api/v1/task", tags=["task"])


@router.put("", response_model=TaskSpec, summary="Set the task (before the first round)")
def put_task(spec: TaskSpec, admin: AdminDep, session: SessionDep) -> TaskSpec:
    """Store the task and create global model version 0; 409 once a round has started."""
    return tasks.set_task(session, spec, admin.actor)


@router.get("", response_model=TaskSpec, summary="The task")
def get_task(_: CallerDep, session: SessionDep) -> TaskSpec:
    return tasks.require_task(session)
