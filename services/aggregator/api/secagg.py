"""``/api/v1/rounds/{id}/secagg``: the secure-aggregation protocol of a round, for its sites.

``GET`` tells a site the phase and the hub's messages addressed to it; ``POST .../{phase}``
takes the site's message of that phase (JSON of the :mod:`fedmedclip.secagg.messages`
models). The body cap is ``MAX_UPLOAD_BYTES`` (a masked upload is a whole vector), set
where the router is included. Refusals are problem+json with the ``secagg_*`` codes listed
in :func:`services.aggregator.secure.receive`.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fedmedclip.ids import DbId
from fedmedclip.schemas import SecAggStatus
from fedmedclip.secagg.messages import Phase
from services.aggregator import audit, secure
from services.aggregator.api.deps import ContextDep, NodeDep, SessionDep
from services.aggregator.context import AppContext
from services.common.problems import NotFound, ServiceError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/rounds", tags=["secure aggregation"])

SECAGG_COMPLETE = "secure aggregation: every survivor answered the unmask phase"


@router.get(
    "/{round_id}/secagg", response_model=SecAggStatus, summary="This site's view of the protocol"
)
def get_status(round_id: DbId, node: NodeDep, session: SessionDep) -> SecAggStatus:
    assert node.node_name is not None  # node role
    return secure.status(session, round_id, node.node_name)


@router.post(
    "/{round_id}/secagg/{phase}",
    response_model=SecAggStatus,
    summary="Send this site's message of a phase",
    openapi_extra={"requestBody": {"content": {"application/json": {}}, "required": True}},
)
async def post_message(
    round_id: DbId,
    phase: str,
    request: Request,
    node: NodeDep,
    context: ContextDep,
) -> SecAggStatus:
    """Check and store the message; the phase advances once every expected site sent."""
    assert node.node_name is not None  # node role
    if phase not in {p.value for p in secure.PROTOCOL_PHASES}:
        raise NotFound(
            f"no secure-aggregation phase {phase!r}; one of advertise, share, upload, unmask"
        )
    body = await request.body()
    # Own transactions, not the request's session: the message is committed before the
    # round may be closed (which locks it in sessions of its own).
    intake = await run_in_threadpool(_receive, context, round_id, node.node_name, phase, body)
    if intake.finish:
        try:
            await run_in_threadpool(
                context.closer.close, round_id, actor=audit.SYSTEM, cause=SECAGG_COMPLETE
            )
        except ServiceError as exc:  # another instance (or the deadline watcher) closed it
            log.info("secure round %s not closed here: %s", round_id, exc.detail)
    return await run_in_threadpool(_status, context, round_id, node.node_name)


def _receive(
    context: AppContext, round_id: int, node_name: str, phase: str, body: bytes
) -> secure.Intake:
    with context.db.write() as session:
        return secure.receive(session, round_id, node_name, Phase(phase), body)


def _status(context: AppContext, round_id: int, node_name: str) -> SecAggStatus:
    with context.db.read() as session:
        return secure.status(session, round_id, node_name)
