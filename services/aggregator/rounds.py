"""Rounds: opening, reading, cancelling.

A round moves open -> aggregating -> published | failed, or open -> cancelled, and every
transition is one conditional UPDATE (``WHERE state = ...``) whose row count says whether
this caller made it; that keeps transitions safe with several hub instances on one
database. Closing and aggregating live in :mod:`services.aggregator.closing`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedmedclip.enums import RoundState
from fedmedclip.schemas import RoundCreate, RoundInfo
from fedmedclip.secagg.messages import Phase
from services.aggregator import audit, models_registry, secure, tasks
from services.aggregator.db.models import Round, Update, utcnow
from services.aggregator.round_rows import ACTIVE_STATES, describe_state, get_row, target
from services.common.problems import Conflict, Unprocessable


def _counts(session: Session, round_ids: list[int]) -> dict[int, int]:
    if not round_ids:
        return {}
    stmt = (
        select(Update.round_id, func.count())
        .where(Update.round_id.in_(round_ids))
        .group_by(Update.round_id)
    )
    return {rid: n for rid, n in session.execute(stmt)}


def to_info(row: Round, updates_received: int) -> RoundInfo:
    """The row as RoundInfo reads it, with what the row does not hold under that name: the
    count of updates and, for a secure round, its phase deadline and participants."""
    derived: dict[str, object] = {"updates_received": updates_received}
    if row.secure_aggregation:
        derived |= {
            "secagg_phase_deadline": row.secagg_phase_until,
            "participants": list(secure.params_of(row).clients),
        }
    return RoundInfo.model_validate(row).model_copy(update=derived)


def lease_report(session: Session) -> str:
    """``none``, or which rounds are being aggregated, by whom and until when."""
    stmt = select(Round).where(Round.state == RoundState.aggregating.value).order_by(Round.id)
    held = [
        f"round {r.id} leased by {r.lease_owner or 'an unknown instance'} "
        f"until {r.lease_until.isoformat() if r.lease_until else '?'}"
        for r in session.scalars(stmt)
    ]
    return "; ".join(held) or "none"


def get_info(session: Session, round_id: int) -> RoundInfo:
    row = get_row(session, round_id)
    return to_info(row, _counts(session, [row.id]).get(row.id, 0))


def list_infos(session: Session, state: RoundState | None, limit: int) -> list[RoundInfo]:
    stmt = select(Round).order_by(Round.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(Round.state == state.value)
    rows = list(session.scalars(stmt))
    counts = _counts(session, [r.id for r in rows])
    return [to_info(r, counts.get(r.id, 0)) for r in rows]


def _active_round(session: Session) -> Round | None:
    return session.scalars(select(Round).where(Round.state.in_(ACTIVE_STATES)).limit(1)).first()


def choose_base(session: Session, requested: int | str) -> tuple[int, str]:
    """The version a new round trains from, and why (shown as ``base_reason``).

    Production by default: a published but unpromoted version (which nobody has vetted)
    is built on only when the admin asks for it by number or as ``latest``.
    """
    if isinstance(requested, int):
        models_registry.get_info(session, requested)  # 404 for an unknown version
        return requested, f"version {requested}, as requested"
    latest = models_registry.latest_version(session)
    if latest is None:
        raise Conflict("no model version yet: PUT /api/v1/task creates version 0")
    if requested == "latest":
        return latest, "latest version, as requested"
    production = models_registry.production_version(session)
    if production is None:
        return latest, "no production version yet: latest"
    return production, "production version"


def open_round(
    session: Session,
    request: RoundCreate,
    *,
    default_deadline_seconds: int,
    max_upload_bytes: int,
    actor: str,
) -> RoundInfo:
    """Open a round against ``base_version`` (default: production); one active round at a time.

    A secure round (``secure_aggregation``) is checked first and refused with a 422 naming
    the problem; its protocol parameters are stored with it (:mod:`secure`).
    """
    task = tasks.require_task(session)
    params = None
    if request.dp is not None and not request.secure_aggregation:
        raise Unprocessable(
            "distributed DP (dp) needs secure_aggregation: without it the hub sees each "
            "site's update with only its share of the noise",
            code="dp_needs_secure_aggregation",
        )
    if request.secure_aggregation:
        params = secure.plan(session, request, task, max_upload_bytes=max_upload_bytes)
    if (active := _active_round(session)) is not None:
        raise Conflict(
            f"round {active.id} is {describe_state(active)}; "
            "only one round may be open or aggregating"
        )
    base, base_reason = choose_base(session, request.base_version)
    seconds = request.deadline_seconds or default_deadline_seconds
    now = utcnow()
    row = Round(
        state=RoundState.open.value,
        active=True,
        base_version=base,
        min_clients=request.min_clients,
        deadline=now + timedelta(seconds=seconds),
        hints=request.hints.model_dump(mode="json"),
        aggregation_rule=request.aggregation_rule.value,
        clip_norm=request.clip_norm,
        max_update_norm=request.max_update_norm,
        # The hub never sees one update of a secure round, so it cannot bound their norms.
        norm_bound_factor=None if params is not None else request.norm_bound_factor,
        base_reason=base_reason,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:  # another instance opened one in the meantime
        raise Conflict("another round was opened at the same time") from exc
    if params is not None:
        secure.attach(row, params, request.secagg_phase_seconds, request.dp)
    audit.record(
        session,
        actor,
        "round.open",
        target(row.id),
        base_version=base,
        base_reason=base_reason,
        min_clients=row.min_clients,
        deadline_seconds=seconds,
        rule=row.aggregation_rule,
        norm_bound_factor=row.norm_bound_factor,
        backbone=task.backbone,
        secure_aggregation=row.secure_aggregation,
    )
    return to_info(row, 0)


def cancel_round(session: Session, round_id: int, actor: str) -> RoundInfo:
    """Cancel an open round; its updates stay stored but are never aggregated."""
    row = get_row(session, round_id)
    result = session.execute(
        update(Round)
        .where(Round.id == round_id, Round.state == RoundState.open.value)
        .values(
            state=RoundState.cancelled.value,
            active=None,
            closed_at=utcnow(),
            reason=f"cancelled by {actor}",
            # A secure round's protocol ends with it (plain rounds have no phase).
            secagg_phase=case((Round.secure_aggregation, Phase.failed.value), else_=None),
            secagg_phase_until=None,
        )
    )
    if result.rowcount != 1:
        session.refresh(row)
        raise Conflict(
            f"round {round_id} is {describe_state(row)}; only an open round can be cancelled"
        )
    audit.record(session, actor, "round.cancel", target(round_id))
    session.refresh(row)
    return get_info(session, round_id)
