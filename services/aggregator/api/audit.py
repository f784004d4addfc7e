"""``/api/v1/audit``: the append-only trail, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fedmedclip.schemas import AuditEntry
from services.aggregator import audit
from services.aggregator.api.deps import AdminDep, SessionDep

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntry], summary="Audit events, newest first")
def list_events(
    _: AdminDep,
    session: SessionDep,
    action: Annotated[str | None, Query(max_length=40, description="e.g. update.rejected")] = None,
    actor: Annotated[str | None, Query(max_length=120, description="node:<name>")] = None,
    since: Annotated[datetime | None, Query(description="ISO time; UTC when no zone")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    return audit.query(session, action=action, actor=actor, since=since, limit=limit)
