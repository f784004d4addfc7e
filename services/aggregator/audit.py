"""The audit trail: append-only events for admin actions, uploads, aggregations, promotions.

Events are written in the caller's transaction, so an action and its audit record commit
(or roll back) together. Rejected uploads are the exception: the request's transaction is
rolled back, so :func:`record_rejection` writes in a transaction of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedmedclip.schemas import AuditEntry
from services.aggregator.db.models import AuditEvent
from services.common.db import Database

SYSTEM = "system"
ADMIN = "admin"


def node_actor(name: str) -> str:
    return f"node:{name}"


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    **details: Any,
) -> None:
    session.add(AuditEvent(actor=actor, action=action, target=target, details=details))


def record_rejection(db: Database, actor: str, target: str, **details: Any) -> None:
    """Record a refused upload even though the request's own transaction rolled back (so
    it takes the ``Database`` and commits in a writing scope of its own)."""
    with db.write() as session:
        record(session, actor, "update.rejected", target, **details)


def query(
    session: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest events first, filtered by exact action, exact actor and a start time.

    A ``since`` without a time zone is read as UTC, the zone every stored time is in.
    ``before`` (an event id) pages backwards: the next page starts below the last id seen,
    which stays correct while new events arrive, unlike an offset.
    """
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if since:
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        stmt = stmt.where(AuditEvent.at >= since)
    return [AuditEntry.model_validate(e) for e in session.scalars(stmt)]
