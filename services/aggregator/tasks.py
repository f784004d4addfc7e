"""The federation's task: what is learnt. Fixed once the first round has started.

Setting the task (re)creates global model version 0 from the task's adapter settings, so
every site and the hub agree on the starting weights without exchanging them first.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from fedmedclip.model import AdapterConfig, expected_shapes
from fedmedclip.schemas import TaskSpec
from services.aggregator import audit, models_registry
from services.aggregator.db.models import Round, Task, utcnow
from services.common.problems import Conflict, NotFound

TASK_ID = 1


def get_task(session: Session) -> TaskSpec | None:
    row = session.get(Task, TASK_ID)
    return None if row is None else TaskSpec.model_validate(row.spec)


def require_task(session: Session) -> TaskSpec:
    task = get_task(session)
    if task is None:
        raise NotFound("no task is configured yet; PUT /api/v1/task first")
    return task


@lru_cache(maxsize=8)
def _shapes(config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    return expected_shapes(config)


def update_shapes(task: TaskSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes every update must have (cached: building them creates a model)."""
    return dict(_shapes(task.adapter_config()))


def set_task(session: Session, spec: TaskSpec, actor: str) -> TaskSpec:
    """Store ``spec`` and a fresh version 0; refused once any round exists."""
    if session.scalar(select(exists().where(Round.id.is_not(None)))):
        raise Conflict("the task cannot change after the first round has started")
    row = session.get(Task, TASK_ID)
    data = spec.model_dump(mode="json")
    if row is None:
        session.add(Task(id=TASK_ID, spec=data))
    else:
        row.spec, row.updated_at = data, utcnow()
    model = models_registry.reset_to_version_zero(session, spec)
    audit.record(session, actor, "task.set", "task", task=data, blob_sha256=model.blob_sha256)
    return spec
