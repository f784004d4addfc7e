"""Secure-aggregation rounds at the hub: parameters, message intake, phases, the unmasked sum.

The protocol itself is :mod:`fedmedclip.secagg`; this module keeps its state in the
database, not in a process: the round row holds the public :class:`RoundParams` and the
current phase, and ``secagg_messages`` holds every message a site sent that the hub
accepted. :func:`rebuild` replays those rows, in arrival order, into a fresh
:class:`SecAggServer` closing each finished phase on the way, so the result is the same in
any hub replica and after a restart. Every intake and every phase change runs with the
round row locked, the way update intake does.

What the hub stores of a site's update is its masked vector, which is uniform in the ring
whatever the update; the only unmasked value it ever computes is the survivors' sum
(:func:`weighted_mean`), which becomes the new version and is never stored or logged alone.

Phases advance when every site expected in a phase has sent (the intake does it), or when
the phase's deadline passes or an admin closes the round: both go through
:meth:`~services.aggregator.closing.RoundCloser.close`, the one way to close a round now,
which ends the current phase early (:func:`end_phase_early`) and, after the unmask phase,
closes the round the usual way (claim, finite check, publish). The upload phase lasts until
the round's deadline, since sites train during it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from fedmedclip.enums import AggregationRule, RoundState
from fedmedclip.privacy import PrivacyAccountant, epsilon_per_round
from fedmedclip.schemas import DistributedDP, RoundCreate, SecAggStatus, TaskSpec
from fedmedclip.secagg import ProtocolViolation, RoundFailed, RoundParams, SecAggServer
from fedmedclip.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Phase,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmedclip.secagg.params import MIN_CLIENTS
from fedmedclip.secagg.vectors import dimension
from services.aggregator import audit, round_rows, tasks
from services.aggregator.db.models import Node, Round, SecAggMessage, utcnow
from services.common.problems import Conflict, Forbidden, Unprocessable

BITS = 64
FRAC_BITS = 24
"""Ring of 2^64 with 24 fractional bits: a weighted mean errs by at most 2^-25 per value,
and sample count times update value may reach 2^39 / n before the sum could wrap."""

PROTOCOL_PHASES = (Phase.advertise, Phase.share, Phase.upload, Phase.unmask)
SiteMessage = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse
MESSAGE_TYPES: dict[Phase, type[SiteMessage]] = {
    Phase.advertise: AdvertiseKeys,
    Phase.share: ShareKeys,
    Phase.upload: MaskedInput,
    Phase.unmask: UnmaskResponse,
}
FAILED_PREFIX = "secure aggregation failed: "


def masked_body_bytes(params: RoundParams) -> int:
    """About how large a masked upload's JSON is: base64 of the vector plus the envelope."""
    raw = params.length * params.fixed_point.bytes_per_value
    return 4 * ((raw + 2) // 3) + 512


def _unprocessable(detail: str) -> Unprocessable:
    return Unprocessable(detail, code="secagg_round_refused")


def _participants(session: Session, requested: list[str] | None) -> list[str]:
    active = set(session.scalars(select(Node.name).where(Node.revoked_at.is_(None))))
    if requested is None:
        return sorted(active)
    if len(set(requested)) != len(requested):
        raise _unprocessable("participants must not repeat a node")
    unknown = sorted(set(requested) - active)
    if unknown:
        raise _unprocessable(f"participants {unknown} are not registered active nodes")
    return sorted(requested)


MAX_SITE_WEIGHT = 1_000_000
"""The per-site weight cap of a secure round: a site counts at most this many samples, so the
hub can tell a total weight no honest sites give (see ``fedmedclip.secagg.bounds``)."""


def bound(request: RoundCreate) -> dict[str, float | int | None]:
    """The round-wide bounds each site clips to and the hub checks on the sum.

    The norm bound is the admin's ``clip_norm``; under distributed DP the sites add noise
    after clipping, so the sum's norm is not bounded by ``clip_norm`` and only the weight
    (1 per site, so the total is the survivors' count) is checked.
    """
    if request.dp is not None:
        return {"norm_bound": None, "max_weight": 1}
    return {"norm_bound": request.clip_norm, "max_weight": MAX_SITE_WEIGHT}


def plan(
    session: Session, request: RoundCreate, task: TaskSpec, *, max_upload_bytes: int
) -> RoundParams:
    """The public parameters of a secure round, or a 422 naming why it cannot run.

    The round id inside is a placeholder until :func:`attach` names the stored round.
    """
    if request.aggregation_rule is not AggregationRule.weighted_mean:
        raise _unprocessable(
            f"secure aggregation only computes a weighted mean, not {request.aggregation_rule}"
        )
    if request.max_update_norm is not None:
        raise _unprocessable(
            "max_update_norm needs the hub to see each update; secure rounds refuse it "
            "(clip_norm is applied by each site instead)"
        )
    clients = _participants(session, request.participants)
    if len(clients) < MIN_CLIENTS:
        raise _unprocessable(
            f"secure aggregation needs at least {MIN_CLIENTS} sites, got {len(clients)}"
        )
    try:
        params = RoundParams.create(
            "pending",
            clients,
            dimension(tasks.update_shapes(task)),
            threshold=request.secagg_threshold,
            bits=BITS,
            frac_bits=FRAC_BITS,
            **bound(request),
        )
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise _unprocessable(f"secure aggregation cannot run: {message}") from exc
    if masked_body_bytes(params) > max_upload_bytes:
        raise _unprocessable(
            f"a masked upload would be about {masked_body_bytes(params)} bytes, above "
            f"FEDMEDCLIP_AGG_MAX_UPLOAD_BYTES ({max_upload_bytes})"
        )
    return params


def attach(
    row: Round, params: RoundParams, phase_seconds: int, dp: DistributedDP | None = None
) -> None:
    """Store ``params`` under the round's own id (plus randomness: ids restart with a new
    database, and a message of an old round must never fit a new one) and start phase 1."""
    round_id = f"round-{row.id}-{secrets.token_hex(8)}"
    row.secure_aggregation = True
    row.secagg_params = params.model_copy(update={"round_id": round_id}).model_dump_json()
    row.secagg_phase = Phase.advertise.value
    row.secagg_phase_seconds = phase_seconds
    row.secagg_phase_until = utcnow() + timedelta(seconds=phase_seconds)
    row.dp = None if dp is None else dp.model_dump()


def params_of(row: Round) -> RoundParams:
    if not row.secure_aggregation or row.secagg_params is None:
        raise Conflict(f"round {row.id} does not use secure aggregation", code="secagg_not_enabled")
    return RoundParams.model_validate_json(row.secagg_params)


# -- the hub's state, rebuilt from the stored messages ----------------------------------


@dataclass
class HubState:
    """A round's protocol state as replayed, with what the hub published so far."""

    server: SecAggServer
    senders: dict[Phase, list[str]] = field(default_factory=dict)
    masked_hashes: list[str] = field(default_factory=list)
    directory: KeyDirectory | None = None
    inboxes: dict[str, ShareInbox] = field(default_factory=dict)
    request: UnmaskRequest | None = None

    def expected(self, phase: Phase) -> list[str]:
        """The sites that may send in ``phase``: those that took part in the one before."""
        if phase is Phase.advertise:
            return list(self.server.params.clients)
        previous = PROTOCOL_PHASES[PROTOCOL_PHASES.index(phase) - 1]
        return sorted(self.senders.get(previous, []))


def _parse(phase: Phase, body: bytes) -> SiteMessage:
    return MESSAGE_TYPES[phase].model_validate_json(body)


def _feed(server: SecAggServer, phase: Phase, message: SiteMessage) -> None:
    receive = {
        Phase.advertise: server.receive_advertise,
        Phase.share: server.receive_shares,
        Phase.upload: server.receive_masked,
        Phase.unmask: server.receive_unmask,
    }[phase]
    receive(message)  # type: ignore[operator]


def _close(state: HubState, phase: Phase) -> None:
    """End ``phase`` on the server, keeping what the hub publishes for the next one."""
    if phase is Phase.advertise:
        state.directory = state.server.close_advertise()
    elif phase is Phase.share:
        state.inboxes = state.server.close_shares()
    elif phase is Phase.upload:
        state.request = state.server.close_upload()


def rebuild(session: Session, row: Round, *, current_messages: bool = True) -> HubState:
    """Replay the stored messages of an active secure round up to its current phase.

    ``current_messages=False`` leaves the current phase's messages out of the replay (only
    their senders are listed): what the hub published so far depends on the closed phases
    alone, and a status poll during the upload phase then parses no masked vector.
    """
    params = params_of(row)
    current = Phase(row.secagg_phase)
    if current not in PROTOCOL_PHASES:
        raise Conflict(f"the secure protocol of round {row.id} ended ({current})")
    state = HubState(server=SecAggServer(params))
    stored = session.execute(
        select(SecAggMessage.id, SecAggMessage.phase, SecAggMessage.node_name)
        .where(SecAggMessage.round_id == row.id)
        .order_by(SecAggMessage.id)
    ).all()
    replayed = PROTOCOL_PHASES[: PROTOCOL_PHASES.index(current) + int(current_messages)]
    query = select(SecAggMessage.id, SecAggMessage.body).where(
        SecAggMessage.round_id == row.id,
        SecAggMessage.phase.in_([p.value for p in replayed]),
    )
    bodies = {message_id: body for message_id, body in session.execute(query)}
    for phase in PROTOCOL_PHASES:
        for message_id, stored_phase, node_name in stored:
            if stored_phase != phase.value:
                continue
            state.senders.setdefault(phase, []).append(node_name)
            if phase in replayed:
                body = bodies[message_id]
                _feed(state.server, phase, _parse(phase, body))
                if phase is Phase.upload:
                    state.masked_hashes.append(hashlib.sha256(body).hexdigest())
        if phase is current:
            break
        _close(state, phase)
    return state


# -- phase changes ----------------------------------------------------------------------


def _fail(session: Session, row: Round, reason: str, actor: str) -> None:
    """End the round as failed with the protocol's reason (the row is locked)."""
    row.state = RoundState.failed.value
    row.active = None
    row.reason = FAILED_PREFIX + reason
    row.closed_at = utcnow()
    row.secagg_phase = Phase.failed.value
    row.secagg_phase_until = None
    audit.record(session, actor, "round.failed", round_rows.target(row.id), reason=row.reason)


def _advance(session: Session, row: Round, state: HubState, actor: str, cause: str) -> None:
    """Close the current phase (advertise, share or upload) and open the next one."""
    phase = Phase(row.secagg_phase)
    try:
        _close(state, phase)
    except RoundFailed as exc:
        _fail(session, row, exc.reason, actor)
        return
    following = PROTOCOL_PHASES[PROTOCOL_PHASES.index(phase) + 1]
    now = utcnow()
    until = now + timedelta(seconds=row.secagg_phase_seconds or 0)
    if following is Phase.upload:  # the sites train now: they have until the round deadline
        until = max(until, row.deadline)
    row.secagg_phase, row.secagg_phase_until = following.value, until
    audit.record(
        session,
        actor,
        "round.secagg_phase",
        round_rows.target(row.id),
        phase=following.value,
        previous=phase.value,
        cause=cause,
        sites=len(state.senders.get(phase, [])),
    )


def _locked_secure_row(session: Session, round_id: int) -> Round:
    row = round_rows.get_row(session, round_id, lock=True)
    params_of(row)
    return row


def end_phase_early(
    session: Session, round_id: int, *, actor: str, cause: str
) -> RoundState | None:
    """End an open secure round's key, share or upload phase now, as its deadline would.

    Returns the round's state afterwards (open, or failed when too few sites are left), or
    None when there is no such phase to end (a plain round, a round that is not open, or a
    secure round in its unmask phase): then the round itself is to be closed.
    Part of :meth:`~services.aggregator.closing.RoundCloser.close`, the one way to close
    a round now; the row stays locked until the caller's transaction ends.
    """
    row = round_rows.get_row(session, round_id, lock=True)
    if not row.secure_aggregation or row.state != RoundState.open.value:
        return None
    if Phase(row.secagg_phase) is Phase.unmask:
        return None
    _advance(session, row, rebuild(session, row), actor, cause)
    return RoundState(row.state)


def due_rounds(session: Session, now: datetime) -> list[int]:
    """Open secure rounds whose current phase's deadline has passed."""
    stmt = select(Round.id).where(
        Round.state == RoundState.open.value,
        Round.secure_aggregation.is_(True),
        Round.secagg_phase_until <= now,
    )
    return list(session.scalars(stmt.order_by(Round.id)))


# -- intake -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Intake:
    """The phase after an accepted message; ``finish`` asks the caller to close the round."""

    phase: Phase
    finish: bool


def receive(session: Session, round_id: int, node_name: str, phase: Phase, body: bytes) -> Intake:
    """Check and store one site's message for ``phase``; advance when everyone has sent.

    Refusals: 422 ``secagg_malformed`` (not a valid message of this phase) or
    ``secagg_invalid`` (contradicts what the hub announced); 403 ``secagg_wrong_sender``
    (names another site) or ``secagg_not_participant``; 409 ``secagg_replay`` (a message
    of another round, or a second one for this phase), ``secagg_wrong_phase``,
    ``secagg_excluded`` (the site missed an earlier phase) or ``secagg_round_closed``.
    """
    row = _locked_secure_row(session, round_id)
    params = params_of(row)
    try:
        message = _parse(phase, body)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "body"
        raise Unprocessable(
            f"not a valid {phase} message: {where}: {problem['msg']}", code="secagg_malformed"
        ) from exc
    client_id = message.client_id
    if client_id != node_name:
        raise Forbidden(
            f"the message is from {client_id!r} but the caller is node {node_name!r}",
            code="secagg_wrong_sender",
        )
    if node_name not in params.clients:
        raise Forbidden(
            f"node {node_name!r} is not a participant of round {round_id}",
            code="secagg_not_participant",
        )
    if message.round_id != params.round_id:
        raise Conflict(
            f"the message is for protocol round {message.round_id!r}, not "
            f"{params.round_id!r} (round {round_id}): replayed or misrouted",
            code="secagg_replay",
        )
    already = session.scalar(
        select(SecAggMessage.id).where(
            SecAggMessage.round_id == row.id,
            SecAggMessage.phase == phase.value,
            SecAggMessage.node_name == node_name,
        )
    )
    if already is not None:
        raise Conflict(
            f"node {node_name!r} already sent its {phase} message for round {round_id}",
            code="secagg_replay",
        )
    if row.state != RoundState.open.value:
        raise Conflict(f"round {round_id} is {row.state}", code="secagg_round_closed")
    if row.secagg_phase != phase.value:
        raise Conflict(
            f"round {round_id} is in phase {row.secagg_phase}, not {phase}",
            code="secagg_wrong_phase",
        )
    state = rebuild(session, row)
    if node_name not in state.expected(phase):
        raise Conflict(
            f"node {node_name!r} missed an earlier phase of round {round_id}; it is out",
            code="secagg_excluded",
        )
    try:
        _feed(state.server, phase, message)
    except ProtocolViolation as exc:
        raise Unprocessable(str(exc), code="secagg_invalid") from exc
    session.add(SecAggMessage(round_id=row.id, phase=phase.value, node_name=node_name, body=body))
    session.flush()
    state.senders.setdefault(phase, []).append(node_name)
    if sorted(state.senders[phase]) != state.expected(phase):
        return Intake(phase, finish=False)
    if phase is Phase.unmask:
        return Intake(phase, finish=True)
    _advance(session, row, state, audit.SYSTEM, f"every expected site sent its {phase} message")
    return Intake(Phase(row.secagg_phase), finish=False)


def status(session: Session, round_id: int, node_name: str) -> SecAggStatus:
    """What ``node_name`` needs now; only messages addressed to it (and the public ones)."""
    row = round_rows.get_row(session, round_id)
    params = params_of(row)
    if node_name not in params.clients:
        raise Forbidden(
            f"node {node_name!r} is not a participant of round {round_id}",
            code="secagg_not_participant",
        )
    phase = Phase(row.secagg_phase)
    answer = SecAggStatus(
        round_id=row.id,
        client_id=node_name,
        phase=phase,
        phase_deadline=row.secagg_phase_until,
        params=params,
        reason=row.reason if phase is Phase.failed else None,
        sent=[],
    )
    if phase not in PROTOCOL_PHASES:
        return answer
    state = rebuild(session, row, current_messages=False)
    return answer.model_copy(
        update={
            "sent": [p for p in PROTOCOL_PHASES if node_name in state.senders.get(p, [])],
            "directory": state.directory,
            "inbox": state.inboxes.get(node_name),
            "unmask_request": state.request,
        }
    )


# -- the result -------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureResult:
    """The survivors' weighted mean update and who it came from (nothing per site)."""

    mean: np.ndarray
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    masked_hashes: list[str]


def weighted_mean(session: Session, row: Round) -> SecureResult:
    """Unmask the survivors' sum; raises :class:`RoundFailed` with the protocol's reason."""
    if row.secagg_phase != Phase.unmask.value:
        raise RoundFailed(
            f"the round ended in phase {row.secagg_phase}, before any site could be unmasked"
        )
    state = rebuild(session, row)
    aggregate = state.server.finish()
    if len(aggregate.survivors) < row.min_clients:
        raise RoundFailed(
            f"only {len(aggregate.survivors)} sites survived; min_clients is {row.min_clients}"
        )
    return SecureResult(
        aggregate.mean(), aggregate.survivors, aggregate.dropped, state.masked_hashes
    )


@dataclass(frozen=True)
class RoundPrivacy:
    """What a distributed-DP round spent, alone and composed with the earlier ones."""

    effective_noise: float
    epsilon: float
    epsilon_total: float


def account(session: Session, row: Round, survivors: int) -> RoundPrivacy | None:
    """Epsilon of a distributed-DP round about to publish, and the federation's total.

    Only the ``survivors`` sites' noise shares are in the sum, so the round is accounted
    with ``noise_multiplier * sqrt(survivors / participants)`` (``noise_share``). The total
    composes every published DP round of the federation (their effective noise is kept on
    their rows) with this one, at this round's delta.
    """
    if not row.dp:
        return None
    dp = DistributedDP.model_validate(row.dp)
    participants = len(params_of(row).clients)
    effective = dp.noise_multiplier * (survivors / participants) ** 0.5
    accountant = PrivacyAccountant()
    earlier = session.scalars(
        select(Round.dp_effective_noise)
        .where(
            Round.state == RoundState.published.value,
            Round.dp_effective_noise.is_not(None),
            Round.id != row.id,
        )
        .order_by(Round.id)
    )
    for noise in earlier:
        accountant.step(noise)
    accountant.step(effective)
    return RoundPrivacy(
        effective_noise=effective,
        epsilon=epsilon_per_round(effective, dp.delta),
        epsilon_total=accountant.epsilon(dp.delta),
    )
