"""The deadline watcher: closes rounds whose deadline passed, so every round terminates.

It sweeps once when the app starts (deadlines that passed while the hub was down are
enforced right away) and then about every second. Each due round goes through
:meth:`RoundCloser.close`, whose atomic claim makes concurrent sweeps by several hub
instances harmless: one closes the round, the others see a conflict and move on. Rounds
stuck in ``aggregating`` after a crash are picked up once their claim's lease has run out,
or at once when the lease's owner was a process of this host that no longer runs (the
usual restart after a kill; see :mod:`services.aggregator.lease_owner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from anyio import to_thread
from sqlalchemy import and_, or_, select

from fedmedclip.schemas import RoundState
from services.aggregator import audit, lease_owner, secure
from services.aggregator.closing import DEADLINE_PASSED, OWNER_DEAD, RESUMED, RoundCloser
from services.aggregator.db.models import Round, utcnow
from services.common.problems import ServiceError

log = logging.getLogger(__name__)

PERIOD_SECONDS = 1.0
PHASE_DEADLINE_PASSED = "secure aggregation phase deadline passed"


def sweep(closer: RoundCloser) -> dict[int, RoundState]:
    """Close every due round now; return the state each one this call closed ended in."""
    now = utcnow()
    closed = sweep_secure(closer, now)
    due = or_(
        and_(
            Round.state == RoundState.open.value,
            Round.deadline <= now,
            Round.secure_aggregation.is_(False),  # their phases have their own deadlines
        ),
        and_(Round.state == RoundState.aggregating.value, Round.lease_until < now),
    )
    with closer.db.read() as session:
        rows = session.execute(select(Round.id, Round.state).where(due).order_by(Round.id)).all()
        leased = session.execute(
            select(Round.id, Round.lease_owner).where(
                Round.state == RoundState.aggregating.value, Round.lease_until >= now
            )
        ).all()
    due_rounds = [
        (round_id, DEADLINE_PASSED if state == RoundState.open.value else RESUMED, None)
        for round_id, state in rows
    ] + [
        (round_id, OWNER_DEAD, owner)
        for round_id, owner in leased
        if lease_owner.is_dead_here(owner)
    ]
    for round_id, cause, dead_owner in due_rounds:
        try:
            closed[round_id] = closer.close(
                round_id, actor=audit.SYSTEM, cause=cause, dead_owner=dead_owner
            )
        except ServiceError as exc:  # another instance got there first
            log.info("round %s not closed by this sweep: %s", round_id, exc.detail)
    return closed


def sweep_secure(closer: RoundCloser, now: datetime) -> dict[int, RoundState]:
    """End the phases of secure rounds whose phase deadline passed."""
    with closer.db.read() as session:
        due = secure.due_rounds(session, now)
    ended: dict[int, RoundState] = {}
    for round_id in due:
        try:
            state = closer.close(round_id, actor=audit.SYSTEM, cause=PHASE_DEADLINE_PASSED)
        except ServiceError as exc:  # another instance got there first
            log.info("round %s not advanced by this sweep: %s", round_id, exc.detail)
            continue
        if state is not RoundState.open:
            ended[round_id] = state
    return ended


class DeadlineWatcher:
    """Runs :func:`sweep` in a worker thread every ``period`` seconds until stopped."""

    def __init__(self, closer: RoundCloser, period: float = PERIOD_SECONDS) -> None:
        self.closer = closer
        self.period = period
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await to_thread.run_sync(sweep, self.closer)
            except Exception:  # a database hiccup must not stop the watcher
                log.exception("deadline sweep failed; retrying in %.1fs", self.period)

    async def start(self) -> None:
        """Sweep once now, then keep sweeping in the background."""
        await to_thread.run_sync(sweep, self.closer)
        self._task = asyncio.create_task(self._run(), name="deadline-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
