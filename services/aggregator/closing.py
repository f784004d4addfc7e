"""Closing a round: claim it, aggregate its updates, publish a new version or fail.

This is the one aggregation path: the close route, the console, the deadline watcher, the
secure protocol's last message and the benchmark all call :meth:`RoundCloser.close`.
Three short transactions, so no lock is held while updates are decoded:

1. claim: ``UPDATE rounds SET state='aggregating' ... WHERE state='open'`` (or an
   aggregating round whose lease ran out, whose owner is a dead process of this host, or
   that an admin recovers); only the caller whose UPDATE changed the row goes on, and the
   claim records its owner (``host/pid/boot/start``, see :mod:`lease_owner`);
2. aggregate: a read-only session streams the stored payloads through the shared codec,
   once to measure their norms (the round's default clip is ``norm_bound_factor`` times
   their median) and once into :func:`fedmedclip.aggregation.aggregate` (memory does not
   grow with the number of updates for the weighted mean);
3. publish: check that the new model is finite, store version ``newest + 1`` and mark the
   round published, guarded by the claim token, in one transaction; any exception on the
   way (a non-finite model included) marks the round failed with the reason instead and
   publishes nothing, so a round always ends in a terminal state.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from fedmedclip.aggregation import aggregate, norm_bound, require_finite
from fedmedclip.codec import apply_delta, decode_update, update_norm
from fedmedclip.schemas import RoundState
from fedmedclip.secagg import RoundFailed
from fedmedclip.secagg.messages import Phase
from fedmedclip.secagg.vectors import unflatten_delta
from services.aggregator import audit, lease_owner, models_registry, round_rows, secure, tasks
from services.aggregator.db.models import Node, Round, Update, utcnow
from services.common.db import Database
from services.common.problems import Conflict

log = logging.getLogger(__name__)

STREAM_BATCH = 4
"""Stored payloads fetched per database round trip while aggregating."""

LEASE = timedelta(minutes=5)
"""How long a claim protects an aggregation; after it another instance may take over."""

CLOSED_BY_ADMIN = "closed by admin"
DEADLINE_PASSED = "deadline passed"
RESUMED = "resumed after an interrupted aggregation"
OWNER_DEAD = "resumed at once: the aggregating process of this host is dead"
RECOVERED_BY_ADMIN = "recovered by admin"


def _secure_end(state: RoundState, secure_round: bool) -> dict:
    """The final protocol phase of a secure round ending in ``state``."""
    if not secure_round:
        return {}
    phase = Phase.done if state is RoundState.published else Phase.failed
    return {"secagg_phase": phase.value, "secagg_phase_until": None}


class AggregationError(RuntimeError):
    """The stored updates of a round cannot be aggregated (the message says why)."""


@dataclass(frozen=True)
class StoredUpdate:
    """Metadata of one stored update; the payload is fetched only when it is aggregated."""

    id: int
    node_name: str
    sha256: str
    sample_count: int
    local_metrics: dict[str, float]


@dataclass(frozen=True)
class Aggregate:
    """A computed global state with what the model version records about it."""

    state: dict[str, torch.Tensor]
    contributors: list[str]
    update_hashes: list[str]
    metrics: dict[str, float]
    clip_norm: float | None
    round_values: dict[str, Any] = field(default_factory=dict)
    """Columns of the round row the publish sets as well (a secure round's DP figures)."""


PRIVACY_METRIC_PREFIX = "dp_"
"""Differential-privacy figures of the nodes (epsilon, delta, noise settings)."""


def metrics_summary(updates: Sequence[StoredUpdate]) -> dict[str, float]:
    """Sample-weighted mean of each local metric over the nodes that reported it.

    Privacy figures are not averaged: a budget is only as good as its worst site, so the
    summary keeps their maximum (the largest epsilon spent by any contributor).
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    worst: dict[str, float] = {}
    for u in updates:
        for name, value in u.local_metrics.items():
            if name.startswith(PRIVACY_METRIC_PREFIX):
                worst[name] = max(worst.get(name, value), value)
                continue
            sums[name] = sums.get(name, 0.0) + value * u.sample_count
            weights[name] = weights.get(name, 0.0) + u.sample_count
    means = {name: sums[name] / weights[name] for name in sums}
    return dict(sorted((means | worst).items()))


def _stored_updates(session: Session, round_id: int) -> list[StoredUpdate]:
    stmt = (
        select(Update.id, Node.name, Update.sha256, Update.sample_count, Update.local_metrics)
        .join(Node, Node.id == Update.node_id)
        .where(Update.round_id == round_id)
        .order_by(Update.id)
    )
    return [StoredUpdate(*row) for row in session.execute(stmt)]


def _stream_deltas(
    session: Session, row: Round, updates: Sequence[StoredUpdate], shapes: dict
) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
    """Decode the stored payloads one at a time, re-checking each against its recorded hash.

    One query whose rows are fetched a few at a time (a server-side cursor on PostgreSQL),
    so memory stays flat however many updates the round has.
    """
    stmt = (
        select(Update.id, Update.payload)
        .where(Update.round_id == row.id)
        .order_by(Update.id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    rows = session.execute(stmt)
    for stored, (update_id, payload) in zip(updates, rows, strict=True):
        if stored.id != update_id:  # the round is claimed, so its updates cannot change
            raise AggregationError(f"update {stored.id} changed while aggregating")
        decoded = decode_update(
            payload,
            expected_shapes=shapes,
            base_version=row.base_version,
            max_bytes=len(payload),
        )
        if decoded.sha256 != stored.sha256:
            raise AggregationError(f"stored update {stored.id} does not match its sha256")
        yield decoded.delta, float(stored.sample_count)


def effective_clip_norm(row: Round, norms: Sequence[float]) -> float | None:
    """The tighter of the admin's ``clip_norm`` and the round's default norm bound."""
    bounds = [row.clip_norm] if row.clip_norm is not None else []
    if row.norm_bound_factor is not None and norms:
        bounds.append(norm_bound(norms, row.norm_bound_factor))
    return min(bounds) if bounds else None


def _compute(db: Database, row: Round, updates: Sequence[StoredUpdate]) -> Aggregate:
    with db.read() as session:
        task = tasks.require_task(session)
        shapes = tasks.update_shapes(task)
        base_state = models_registry.load_state(session, row.base_version)
        clip_norm = row.clip_norm
        if row.norm_bound_factor is not None:
            norms = [update_norm(d) for d, _ in _stream_deltas(session, row, updates, shapes)]
            clip_norm = effective_clip_norm(row, norms)
        deltas = _stream_deltas(session, row, updates, shapes)
        aggregated = aggregate(deltas, rule=row.aggregation_rule, clip_norm=clip_norm)
    state = apply_delta(base_state, aggregated)
    require_finite(state, f"the model round {row.id} would publish")
    return Aggregate(
        state=state,
        contributors=[u.node_name for u in updates],
        update_hashes=[u.sha256 for u in updates],
        metrics=metrics_summary(updates),
        clip_norm=clip_norm,
    )


def _compute_secure(db: Database, row: Round) -> Aggregate:
    """The new state of a secure round: base plus the survivors' unmasked weighted mean.

    Only the sum is ever unmasked (see :mod:`services.aggregator.secure`); the sites
    clipped their own updates, so ``clip_norm`` is reported as applied by them.
    """
    with db.read() as session:
        result = secure.weighted_mean(session, row)
        task = tasks.require_task(session)
        base_state = models_registry.load_state(session, row.base_version)
        privacy = secure.account(session, row, len(result.survivors))
    delta = unflatten_delta(result.mean, tasks.update_shapes(task))
    state = apply_delta(base_state, delta)
    require_finite(state, f"the model round {row.id} would publish")
    metrics = {
        "secagg_survivors": float(len(result.survivors)),
        "secagg_dropped": float(len(result.dropped)),
    }
    round_values: dict[str, Any] = {}
    if privacy is not None:
        metrics |= {"dp_epsilon": privacy.epsilon, "dp_epsilon_total": privacy.epsilon_total}
        round_values = {
            "dp_effective_noise": privacy.effective_noise,
            "dp_epsilon": privacy.epsilon,
            "dp_epsilon_total": privacy.epsilon_total,
        }
    return Aggregate(
        state=state,
        contributors=list(result.survivors),
        update_hashes=result.masked_hashes,
        metrics=metrics,
        clip_norm=row.dp["clip_norm"] if row.dp else row.clip_norm,
        round_values=round_values,
    )


class RoundCloser:
    """Closes rounds on one database; ``on_aggregated`` receives aggregation seconds.

    Holds the ``Database``, not a session: a close is the three transactions of the module
    docstring, and the long middle one is a reading scope, so no write lock is held while
    the updates are decoded.
    """

    def __init__(self, db: Database, on_aggregated: Callable[[float], None] | None = None) -> None:
        self.db = db
        self.on_aggregated = on_aggregated

    def _claim(
        self,
        round_id: int,
        actor: str,
        cause: str,
        *,
        dead_owner: str | None = None,
        recover: bool = False,
    ) -> tuple[str, Round] | None:
        """Claim the round; ``dead_owner`` takes over that owner's lease, ``recover`` any."""
        token, now = secrets.token_hex(16), utcnow()
        aggregating = Round.state == RoundState.aggregating.value
        if recover:
            claimable = aggregating
        elif dead_owner is not None:
            claimable = and_(aggregating, Round.lease_owner == dead_owner)
        else:
            claimable = or_(
                Round.state == RoundState.open.value, and_(aggregating, Round.lease_until < now)
            )
        with self.db.write() as session:
            before = session.execute(
                select(Round.state, Round.lease_owner, Round.lease_until).where(
                    Round.id == round_id
                )
            ).first()
            result = session.execute(
                update(Round)
                .where(Round.id == round_id, claimable)
                .values(
                    state=RoundState.aggregating.value,
                    claim_token=token,
                    lease_until=now + LEASE,
                    lease_owner=str(lease_owner.current()),
                )
            )
            if result.rowcount != 1:
                return None
            action = "round.recover" if recover else "round.close"
            details: dict = {"cause": cause}
            if before is not None and before.state == RoundState.aggregating.value:
                details["previous_owner"] = before.lease_owner
                details["previous_lease_until"] = str(before.lease_until)
            audit.record(session, actor, action, round_rows.target(round_id), **details)
            row = round_rows.get_row(session, round_id)
            session.expunge(row)
        return token, row

    def _finish(
        self,
        round_id: int,
        token: str,
        state: RoundState,
        *,
        reason: str | None = None,
        result: Aggregate | None = None,
        secure_round: bool = False,
    ) -> bool:
        """Move a claimed round to ``state`` (storing ``result`` as a new version)."""
        with self.db.write() as session:
            version = None
            if result is not None:
                version = (models_registry.latest_version(session) or 0) + 1
            moved = session.execute(
                update(Round)
                .where(
                    Round.id == round_id,
                    Round.state == RoundState.aggregating.value,
                    Round.claim_token == token,
                )
                .values(
                    state=state.value,
                    active=None,
                    result_version=version,
                    reason=reason,
                    closed_at=utcnow(),
                    claim_token=None,
                    lease_until=None,
                    lease_owner=None,
                    applied_clip_norm=None if result is None else result.clip_norm,
                    **_secure_end(state, secure_round),
                    **(result.round_values if result is not None else {}),
                )
            )
            if moved.rowcount != 1:  # the lease ran out and another instance took over
                log.warning("round %s was taken over by another instance", round_id)
                return False
            details: dict = {"reason": reason}
            if result is not None:
                model = models_registry.store_version(
                    session,
                    result.state,
                    version=version,
                    parent_version=round_rows.get_row(session, round_id).base_version,
                    task=tasks.require_task(session),
                    round_id=round_id,
                    contributors=result.contributors,
                    update_hashes=result.update_hashes,
                    metrics=result.metrics,
                )
                details = {
                    "version": version,
                    "blob_sha256": model.blob_sha256,
                    "contributors": result.contributors,
                    "applied_clip_norm": result.clip_norm,
                }
            audit.record(
                session,
                audit.SYSTEM,
                f"round.{state.value}",
                round_rows.target(round_id),
                **details,
            )
        return True

    def close(
        self, round_id: int, *, actor: str, cause: str, dead_owner: str | None = None
    ) -> RoundState:
        """Close ``round_id`` now; return the state it ended in.

        The one way to close a round now: the close route, the console and the deadline
        watcher all call it. A secure round still in its key, share or upload phase has
        that phase ended instead, as its deadline would end it (the sites that sent go on
        without the others), and stays open; from its unmask phase on it is closed like
        any round. With ``dead_owner``, take over an aggregation whose owner (that exact
        lease owner) is known to be dead instead. Raises :class:`NotFound` for an unknown
        round and :class:`Conflict` when the round is not open (already closed, cancelled,
        or being aggregated by someone else).
        """
        if dead_owner is None:
            with self.db.write() as session:
                phase_ended = secure.end_phase_early(session, round_id, actor=actor, cause=cause)
            if phase_ended is not None:
                return phase_ended
        claimed = self._claim(round_id, actor, cause, dead_owner=dead_owner)
        if claimed is None:
            with self.db.read() as session:
                state = round_rows.describe_state(round_rows.get_row(session, round_id))
            raise Conflict(f"round {round_id} is {state}; only an open round can be closed")
        return self._aggregate(round_id, *claimed, cause=cause)

    def recover(self, round_id: int, *, actor: str) -> RoundState:
        """Take over an aggregating round now, whoever holds its lease (admin override).

        For an owner that is dead but not on this host (another machine or pod), which the
        hub cannot check. Should the owner be alive after all, nothing is published twice:
        its claim token no longer matches, so its result is dropped.
        """
        claimed = self._claim(round_id, actor, RECOVERED_BY_ADMIN, recover=True)
        if claimed is None:
            with self.db.read() as session:
                state = round_rows.get_row(session, round_id).state
            raise Conflict(
                f"round {round_id} is {state}; only an aggregating round can be recovered"
            )
        return self._aggregate(round_id, *claimed, cause=RECOVERED_BY_ADMIN)

    def _aggregate(self, round_id: int, token: str, row: Round, *, cause: str) -> RoundState:
        if row.secure_aggregation:
            return self._aggregate_secure(round_id, token, row)
        with self.db.read() as session:
            updates = _stored_updates(session, round_id)
        if len(updates) < row.min_clients:
            reason = f"{cause} with {len(updates)} of {row.min_clients} required updates"
            self._finish(round_id, token, RoundState.failed, reason=reason)
            return RoundState.failed
        started = time.perf_counter()
        try:
            result = _compute(self.db, row, updates)
            if not self._finish(round_id, token, RoundState.published, result=result):
                return RoundState.aggregating
        except Exception as exc:  # any fault must still end the round
            log.exception("aggregation of round %s failed", round_id)
            self._finish(round_id, token, RoundState.failed, reason=f"aggregation failed: {exc}")
            return RoundState.failed
        if self.on_aggregated is not None:
            self.on_aggregated(time.perf_counter() - started)
        log.info("round %s published with %d updates", round_id, len(updates))
        return RoundState.published

    def _aggregate_secure(self, round_id: int, token: str, row: Round) -> RoundState:
        """Unmask and publish a secure round, or fail it with the protocol's reason."""
        started = time.perf_counter()
        try:
            result = _compute_secure(self.db, row)
        except RoundFailed as exc:
            reason = secure.FAILED_PREFIX + exc.reason
            self._finish(round_id, token, RoundState.failed, reason=reason, secure_round=True)
            return RoundState.failed
        except Exception as exc:  # any fault must still end the round
            log.exception("secure aggregation of round %s failed", round_id)
            reason = f"aggregation failed: {exc}"
            self._finish(round_id, token, RoundState.failed, reason=reason, secure_round=True)
            return RoundState.failed
        published = self._finish(
            round_id, token, RoundState.published, result=result, secure_round=True
        )
        if not published:
            return RoundState.aggregating
        if self.on_aggregated is not None:
            self.on_aggregated(time.perf_counter() - started)
        log.info("secure round %s published with %d sites", round_id, len(result.contributors))
        return RoundState.published
