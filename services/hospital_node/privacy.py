"""The site's differential-privacy budget: a ledger of noised updates and what they add up to.

With DP on (``FEDMEDCLIP_NODE_DP_*``), every FAM delta is clipped and noised before it is
encoded, and each such release is written to the node database *before* the upload: a
crash after sending must not let the site forget what it spent. The cumulative epsilon is
always recomputed from the whole ledger with the RDP accountant of ``fedmedclip.privacy``,
so it survives restarts and is the same in the API process and the Celery worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedmedclip.privacy import DPConfig, PrivacyAccountant, epsilon_per_round
from services.hospital_node.db import Database, PrivacyRelease


class PrivacyBudgetExhausted(RuntimeError):
    """Sending one more DP update would take the site past its epsilon cap."""


@dataclass(frozen=True)
class PrivacyStatus:
    """What the site has spent so far and what the next update would cost."""

    releases: int
    epsilon_spent: float
    epsilon_after_next: float | None
    epsilon_per_update: float | None


def history(session: Session) -> list[float]:
    """Noise multiplier of every release so far, oldest first."""
    return list(
        session.scalars(select(PrivacyRelease.noise_multiplier).order_by(PrivacyRelease.id)).all()
    )


def _costs(session: Session, config: DPConfig, delta: float) -> tuple[int, float, float]:
    """Releases so far, epsilon spent, and cumulative epsilon after one more update."""
    accountant = _replayed(history(session))
    releases, spent = accountant.rounds, accountant.epsilon(delta)
    accountant.step(config.noise_multiplier)
    return releases, spent, accountant.epsilon(delta)


def status(session: Session, config: DPConfig | None, delta: float) -> PrivacyStatus:
    """Spent epsilon at ``delta``; with ``config``, also the cost of one more update."""
    if config is None:
        accountant = _replayed(history(session))
        return PrivacyStatus(accountant.rounds, accountant.epsilon(delta), None, None)
    releases, spent, after = _costs(session, config, delta)
    return PrivacyStatus(releases, spent, after, epsilon_per_round(config.noise_multiplier, delta))


def ensure_budget(session: Session, config: DPConfig, max_epsilon: float) -> float:
    """Cumulative epsilon after one more update; raises when it passes ``max_epsilon``
    (> 0). A job checks this before it starts work, and again when it records it."""
    _, spent, after = _costs(session, config, config.delta)
    if max_epsilon > 0 and after > max_epsilon:
        raise PrivacyBudgetExhausted(
            f"privacy budget exhausted: one more update would take the site's epsilon "
            f"from {spent:.2f} to {after:.2f}, above FEDMEDCLIP_NODE_DP_MAX_EPSILON="
            f"{max_epsilon:g}; nothing was sent"
        )
    return after


def charge(
    session: Session, *, job_id: int, round_id: int, config: DPConfig, max_epsilon: float
) -> dict[str, float]:
    """Record one release (refused past ``max_epsilon``) before the update is sent.

    Returns the DP figures reported with the update: per-update and cumulative epsilon.
    The check and the record share the caller's transaction, so on SQLite (whose writing
    scope holds the write lock) no other release can slip in between.
    """
    after = ensure_budget(session, config, max_epsilon)
    session.add(
        PrivacyRelease(
            job_id=job_id,
            round_id=round_id,
            clip_norm=config.clip_norm,
            noise_multiplier=config.noise_multiplier,
        )
    )
    return {
        "dp_epsilon_update": epsilon_per_round(config.noise_multiplier, config.delta),
        "dp_epsilon_total": after,
        "dp_delta": config.delta,
        "dp_noise_multiplier": config.noise_multiplier,
        "dp_clip_norm": config.clip_norm,
    }


class PrivacyLedger:
    """The ledger as a training job uses it: each call in a scope of its own.

    Holds the ``Database``, not a session: the job checks its budget before any work and
    is charged just before its upload, minutes to hours later, and a transaction must not
    stay open that long.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure_budget(self, config: DPConfig, max_epsilon: float) -> float:
        """:func:`ensure_budget` in a reading scope."""
        with self.db.read() as session:
            return ensure_budget(session, config, max_epsilon)

    def charge(
        self, *, job_id: int, round_id: int, config: DPConfig, max_epsilon: float
    ) -> dict[str, float]:
        """:func:`charge` in a writing scope, committed before the update is sent."""
        with self.db.write() as session:
            return charge(
                session, job_id=job_id, round_id=round_id, config=config, max_epsilon=max_epsilon
            )


def _replayed(history: list[float]) -> PrivacyAccountant:
    accountant = PrivacyAccountant()
    for noise_multiplier in history:
        accountant.step(noise_multiplier)
    return accountant
