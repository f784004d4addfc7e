"""Retention of update payloads: the bytes of old updates go, their record stays.

An update's payload is only needed to aggregate its round and, for a while, to re-check an
aggregation during an audit. After ``keep_versions`` newer global versions exist, the
payloads of the rounds behind them are emptied: the row keeps the node, sample count,
local metrics, size and sha256 (so the model versions' ``update_hashes`` still name what
went in), only the bytes are gone. Payload storage then stays bounded however long the
federation runs. Each pruning is recorded in the audit trail.

A pruned payload is stored as zero bytes rather than NULL: a real encoded update is never
empty (the codec writes a header), so the marker is unambiguous without a schema change.

The secure-aggregation messages of the same old rounds (masked vectors, sealed shares) are
deleted outright: they are only needed while their round runs, and the model version keeps
the sha256 of each masked upload.
"""

from __future__ import annotations

import logging

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from fedmedclip.enums import RoundState
from services.aggregator import audit
from services.aggregator.db.models import ModelVersion, Round, SecAggMessage, Update

log = logging.getLogger(__name__)

PRUNED = b""
_LIVE = (RoundState.open.value, RoundState.aggregating.value)


def _old_rounds(newest: int, keep_versions: int) -> Select:
    """Finished rounds based on a version older than the newest ``keep_versions`` bases."""
    return select(Round.id).where(
        Round.base_version < newest - keep_versions, Round.state.not_in(_LIVE)
    )


def prune_secagg_messages(session: Session, keep_versions: int) -> int:
    """Delete the secure-aggregation messages of the rounds whose payloads are pruned."""
    if keep_versions <= 0:
        return 0
    newest = session.scalar(select(func.max(ModelVersion.version)))
    if newest is None:
        return 0
    old = SecAggMessage.round_id.in_(_old_rounds(newest, keep_versions))
    rounds = sorted(set(session.scalars(select(SecAggMessage.round_id).where(old))))
    if not rounds:
        return 0
    deleted = session.execute(delete(SecAggMessage).where(old)).rowcount
    audit.record(
        session,
        audit.SYSTEM,
        "secagg.pruned",
        "retention",
        messages=deleted,
        rounds=rounds,
        newest_version=newest,
        keep_versions=keep_versions,
    )
    log.info("deleted %d secure-aggregation messages of rounds %s", deleted, rounds)
    return deleted


def prune_update_payloads(session: Session, keep_versions: int) -> int:
    """Empty the payloads of finished rounds based on a version older than the newest
    ``keep_versions`` versions' bases; return how many were pruned (0 = keep all).

    A round based on version ``b`` builds version ``b + 1``, so with ``keep_versions=N``
    and newest version ``V`` the rounds based on ``V - N`` and later keep their payloads:
    the updates behind the newest N versions remain checkable.
    """
    if keep_versions <= 0:
        return 0
    newest = session.scalar(select(func.max(ModelVersion.version)))
    if newest is None:
        return 0
    old_rounds = _old_rounds(newest, keep_versions)
    doomed = session.execute(
        select(Update.id, Update.round_id, Update.size_bytes).where(
            Update.round_id.in_(old_rounds), Update.payload != PRUNED
        )
    ).all()
    if not doomed:
        return 0
    ids = [row.id for row in doomed]
    session.execute(update(Update).where(Update.id.in_(ids)).values(payload=PRUNED))
    freed = sum(row.size_bytes for row in doomed)
    audit.record(
        session,
        audit.SYSTEM,
        "updates.pruned",
        "retention",
        updates=len(ids),
        rounds=sorted({row.round_id for row in doomed}),
        bytes=freed,
        newest_version=newest,
        keep_versions=keep_versions,
    )
    log.info(
        "pruned %d update payloads (%d bytes) older than %d versions",
        len(ids),
        freed,
        keep_versions,
        extra={"fields": {"updates": len(ids), "bytes": freed}},
    )
    return len(ids)
