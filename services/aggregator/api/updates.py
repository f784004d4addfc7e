"""``POST /api/v1/rounds/{id}/updates``: a node's encoded FAM delta."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from fedmedclip.schemas import UpdateReceipt
from services.aggregator import audit, rounds, updates
from services.aggregator.api.deps import ContextDep, NodeDep, SessionDep
from services.aggregator.errors import PayloadTooLarge, ServiceError
from services.aggregator.metrics import AggregatorMetrics
from services.common.ids import DbId

router = APIRouter(prefix="/api/v1/rounds", tags=["updates"])

_BODY_DOC = {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "The bytes of fedmedclip.codec.encode_update(...).",
    "required": True,
}


async def read_capped_body(request: Request, cap: int, metrics: AggregatorMetrics) -> bytes:
    """Read the body, refusing it as soon as it grows past ``cap`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"update of {declared} bytes is larger than the cap of {cap} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        metrics.bytes_received.inc(len(chunk))
        if len(body) > cap:
            raise PayloadTooLarge(f"update is larger than the cap of {cap} bytes")
    return bytes(body)


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
        submission = updates.Submission(
            round_id=round_id,
            node_id=node.node_id,
            node_name=node.node_name,
            body=await read_capped_body(request, cap, context.metrics),
            sample_count=sample_count,
            local_metrics=updates.parse_local_metrics(local_metrics),
            idempotency_key=idempotency_key,
        )
        result = await run_in_threadpool(
            updates.receive_update, session, submission, max_upload_bytes=cap
        )
    except ServiceError as exc:
        reason = updates.rejection_reason(exc)
        context.metrics.updates_rejected.labels(reason).inc()
        await run_in_threadpool(session.rollback)  # release the write lock before auditing
        await run_in_threadpool(
            audit.record_rejection,
            context.db.sessions,
            node.actor,
            rounds.target(round_id),
            reason=reason,
            detail=exc.detail,
        )
        raise
    if result.replayed:
        response.status_code = 200
    else:
        context.metrics.updates_accepted.inc()
    return result.receipt
