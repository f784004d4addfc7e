"""``/api/v1/rounds``: open, list, read, close and cancel rounds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedmedclip.ids import DbId
from fedmedclip.schemas import RoundCreate, RoundInfo, RoundState
from services.aggregator import rounds
from services.aggregator.api.deps import AdminDep, CallerDep, ContextDep, SessionDep
from services.aggregator.closing import CLOSED_BY_ADMIN

router = APIRouter(prefix="/api/v1/rounds", tags=["rounds"])


@router.post("", status_code=201, response_model=RoundInfo, summary="Open a round")
def open_round(
    body: RoundCreate, admin: AdminDep, context: ContextDep, session: SessionDep
) -> RoundInfo:
    """Open a round on the newest version (or ``base_version``); 409 while one is active."""
    return rounds.open_round(
        session,
        body,
        default_deadline_seconds=context.settings.default_deadline_seconds,
        max_upload_bytes=context.settings.max_upload_bytes,
        actor=admin.actor,
    )


@router.get("", response_model=list[RoundInfo], summary="Rounds, newest first")
def list_rounds(
    _: CallerDep,
    session: SessionDep,
    state: RoundState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RoundInfo]:
    return rounds.list_infos(session, state, limit)


@router.get("/{round_id}", response_model=RoundInfo, summary="One round")
def get_round(round_id: DbId, _: CallerDep, session: SessionDep) -> RoundInfo:
    return rounds.get_info(session, round_id)


@router.post("/{round_id}/close", response_model=RoundInfo, summary="Aggregate now")
def close_round(
    round_id: DbId, admin: AdminDep, context: ContextDep, session: SessionDep
) -> RoundInfo:
    """Publish a new version if ``min_clients`` updates arrived, else fail the round.

    For a secure round this ends its current phase now, as its deadline would: after the
    unmask phase the round is published (or failed); before, the next phase starts.
    """
    context.closer.close(round_id, actor=admin.actor, cause=CLOSED_BY_ADMIN)
    return rounds.get_info(session, round_id)


@router.post("/{round_id}/cancel", response_model=RoundInfo, summary="Cancel an open round")
def cancel_round(round_id: DbId, admin: AdminDep, session: SessionDep) -> RoundInfo:
    return rounds.cancel_round(session, round_id, admin.actor)


@router.post(
    "/{round_id}/recover",
    response_model=RoundInfo,
    summary="Take over an interrupted aggregation now",
)
def recover_round(
    round_id: DbId, admin: AdminDep, context: ContextDep, session: SessionDep
) -> RoundInfo:
    """Aggregate a round left ``aggregating`` by a dead hub without waiting for its lease.

    For an owner on another host, which the hub cannot check itself (a dead process of
    the same host is taken over at once anyway). Audited as ``round.recover``; 409 unless
    the round is aggregating.
    """
    context.closer.recover(round_id, actor=admin.actor)
    return rounds.get_info(session, round_id)
