"""Update intake: validate a node's encoded FAM delta and store it durably.

The round row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite) for the whole intake, so an update is either stored before the round is claimed for
aggregation or refused because the round is no longer open: an accepted update is never
left out of the aggregate it was accepted for.

Idempotency: one update per (round, node), stored with the client's ``Idempotency-Key`` and
the payload's sha256. The same key with the same bytes gets the original receipt again; any
other second update is a conflict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fedmedclip.bounded_json import JsonLimitError, loads_bounded
from fedmedclip.codec import CodecError, decode_update, payload_sha256
from fedmedclip.schemas import RoundState, UpdateReceipt
from services.aggregator import audit, round_rows, tasks
from services.aggregator.db.models import Node, Update, utcnow
from services.common.problems import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
)

MAX_METRICS = 64
MAX_METRICS_HEADER_CHARS = 8 * 1024
"""64 names of up to 64 characters with their numbers fit easily."""


@dataclass(frozen=True)
class Submission:
    """One upload as received: who sent it, for which round, and what."""

    round_id: int
    node_id: int
    node_name: str
    body: bytes
    sample_count: int
    local_metrics: dict[str, float]
    idempotency_key: str


@dataclass(frozen=True)
class IntakeResult:
    receipt: UpdateReceipt
    replayed: bool


def parse_local_metrics(header: str | None) -> dict[str, float]:
    """Parse ``X-Local-Metrics``: a flat JSON object of metric name -> finite number.

    Parsed with limits (size, nesting, integer digits), so a hostile header is a 400 that
    is audited and counted like any other refused update, never a parser crash.
    """
    if header is None or not header.strip():
        return {}
    try:
        data = loads_bounded(header, max_bytes=MAX_METRICS_HEADER_CHARS, max_depth=1)
    except JsonLimitError as exc:
        raise InvalidRequest(f"X-Local-Metrics is refused: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("X-Local-Metrics must be a JSON object of name -> number")
    if len(data) > MAX_METRICS:
        raise InvalidRequest(f"X-Local-Metrics has {len(data)} entries; at most {MAX_METRICS}")
    metrics: dict[str, float] = {}
    for name, value in data.items():
        if not 0 < len(name) <= 64:
            raise InvalidRequest("X-Local-Metrics names must be 1 to 64 characters")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidRequest(f"X-Local-Metrics value of {name!r} must be a finite number")
        metrics[name] = float(value)
    return metrics


def rejection_reason(error: ServiceError) -> str:
    """A small, fixed label for the rejected-updates metric."""
    if isinstance(error, PayloadTooLarge):
        return "too_large"
    if isinstance(error, NotFound):
        return "unknown_round"
    if isinstance(error, Conflict):
        return "conflict"
    return "invalid"


def receive_update(session: Session, sub: Submission, *, max_upload_bytes: int) -> IntakeResult:
    """Validate and store ``sub``, or raise a :class:`ServiceError` naming the problem."""
    if len(sub.body) > max_upload_bytes:
        raise PayloadTooLarge(f"update is larger than the cap of {max_upload_bytes} bytes")
    row = round_rows.get_row(session, sub.round_id, lock=True)
    digest = payload_sha256(sub.body)
    previous = session.scalars(
        select(Update).where(Update.round_id == row.id, Update.node_id == sub.node_id)
    ).first()
    if previous is not None:
        if previous.idempotency_key == sub.idempotency_key and previous.sha256 == digest:
            return IntakeResult(UpdateReceipt.model_validate(previous), replayed=True)
        raise Conflict(
            f"node {sub.node_name!r} already sent a different update for round {row.id} "
            f"(sha256 {previous.sha256[:12]}...); one update per node and round"
        )
    if row.secure_aggregation:  # the hub must never hold one of its updates in the clear
        raise Conflict(
            f"round {row.id} uses secure aggregation: send masked messages to "
            f"/api/v1/rounds/{row.id}/secagg, never a plain update",
            code="secure_round",
        )
    if row.state != RoundState.open.value:
        raise Conflict(f"round {row.id} is {row.state}, it no longer accepts updates")
    if utcnow() >= row.deadline:
        raise Conflict(f"the deadline of round {row.id} passed at {row.deadline.isoformat()}")
    task = tasks.require_task(session)
    try:
        decoded = decode_update(
            sub.body,
            expected_shapes=tasks.update_shapes(task),
            base_version=row.base_version,
            max_bytes=max_upload_bytes,
            max_norm=row.max_update_norm,
        )
    except CodecError as exc:
        raise InvalidRequest(f"invalid update: {exc}") from exc
    stored = Update(
        round_id=row.id,
        node_id=sub.node_id,
        idempotency_key=sub.idempotency_key,
        sha256=decoded.sha256,
        sample_count=sub.sample_count,
        local_metrics=sub.local_metrics,
        size_bytes=len(sub.body),
        payload=sub.body,
    )
    session.add(stored)
    session.flush()
    audit.record(
        session,
        audit.node_actor(sub.node_name),
        "update.accepted",
        round_rows.target(row.id),
        sha256=decoded.sha256,
        bytes=len(sub.body),
        sample_count=sub.sample_count,
        quantization=decoded.quantization,
    )
    return IntakeResult(UpdateReceipt.model_validate(stored), replayed=False)


@dataclass(frozen=True)
class UpdateSummary:
    """What an operator sees of one stored update: who, how much, how it did locally."""

    node_name: str
    sample_count: int
    size_bytes: int
    local_metrics: dict[str, float]
    sha256: str
    received_at: datetime


def summaries(session: Session, round_id: int) -> list[UpdateSummary]:
    """The updates stored for ``round_id``, in arrival order (payloads are not loaded)."""
    stmt = (
        select(
            Node.name,
            Update.sample_count,
            Update.size_bytes,
            Update.local_metrics,
            Update.sha256,
            Update.received_at,
        )
        .join(Node, Node.id == Update.node_id)
        .where(Update.round_id == round_id)
        .order_by(Update.id)
    )
    return [UpdateSummary(*row) for row in session.execute(stmt)]


def bytes_by_round(session: Session, round_ids: list[int]) -> dict[int, int]:
    """Total update bytes received per round, for the rounds in ``round_ids``."""
    if not round_ids:
        return {}
    stmt = (
        select(Update.round_id, func.sum(Update.size_bytes))
        .where(Update.round_id.in_(round_ids))
        .group_by(Update.round_id)
    )
    return {round_id: int(total or 0) for round_id, total in session.execute(stmt)}
