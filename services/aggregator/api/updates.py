"""``POST /api/v1/rounds/{id}/updates``: a node's encoded FAM delta.

The body cap is the app's ``max_body_size`` for this router (``MAX_UPLOAD_BYTES``, set where
the router is included); the route only counts what arrives and records a refusal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fedmedclip.ids import DbId
from fedmedclip.schemas import UpdateReceipt
from services.aggregator import audit, round_rows, updates
from services.aggregator.api.deps import ContextDep, NodeDep, SessionDep
from services.aggregator.context import AppContext
from services.aggregator.metrics import AggregatorMetrics
from services.common.problems import ServiceError

router = APIRouter(prefix="/api/v1/rounds", tags=["updates"])

_BODY_DOC = {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "The bytes of fedmedclip.codec.encode_update(...).",
    "required": True,
}


async def _receive(request: Request, metrics: AggregatorMetrics) -> bytes:
    """The body, counted as it arrives (the body limiter stops it past the cap with a 413)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        metrics.bytes_received.inc(len(chunk))
    return bytes(body)


async def _record_rejection(
    context: AppContext, session: Session, actor: str, round_id: int, reason: str, detail: str
) -> None:
    context.metrics.updates_rejected.labels(reason).inc()
    await run_in_threadpool(session.rollback)  # release the write lock before auditing
    await run_in_threadpool(
        audit.record_rejection,
        context.db,
        actor,
        round_rows.target(round_id),
        reason=reason,
        detail=detail,
    )


@router.post(
    "/{round_id}/updates",
    status_code=201,
    response_model=UpdateReceipt,
    summary="Send this node's update for a round",
    openapi_extra={"requestBody": _BODY_DOC},
    responses={200: {"description": "A replay of an accepted update: the original receipt."}},
)
async def post_update(
    round_id: DbId,
    request: Request,
    response: Response,
    node: NodeDep,
    context: ContextDep,
    session: SessionDep,
    sample_count: Annotated[int, Header(alias="X-Sample-Count", ge=1, le=1_000_000_000)],
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
    local_metrics: Annotated[str | None, Header(alias="X-Local-Metrics")] = None,
) -> UpdateReceipt:
    """Validate the update with the shared codec and store it before answering.

    201 with a receipt when stored; 200 with the same receipt for a replay (same
    ``Idempotency-Key``, same bytes); 409 for a different second update from this node.
    """
    assert node.node_id is not None and node.node_name is not None  # node role
    cap = context.settings.max_upload_bytes
    try:
        body = await _receive(request, context.metrics)
    except HTTPException as exc:
        if exc.status_code == 413:  # over MAX_UPLOAD_BYTES: a refused update, on the record
            detail = f"update is larger than the limit of {cap} bytes"
            await _record_rejection(context, session, node.actor, round_id, "too_large", detail)
        raise
    try:
        submission = updates.Submission(
            round_id=round_id,
            node_id=node.node_id,
            node_name=node.node_name,
            body=body,
            sample_count=sample_count,
            local_metrics=updates.parse_local_metrics(local_metrics),
            idempotency_key=idempotency_key,
        )
        result = await run_in_threadpool(
            updates.receive_update, session, submission, max_upload_bytes=cap
        )
    except ServiceError as exc:
        reason = updates.rejection_reason(exc)
        await _record_rejection(context, session, node.actor, round_id, reason, exc.detail)
        raise
    if result.replayed:
        response.status_code = 200
    else:
        context.metrics.updates_accepted.inc()
    return result.receipt
