"""The round row itself: fetching it, naming it in audit entries, describing its state.

Every module that works on rounds needs these (opening and cancelling in :mod:`rounds`,
the secure protocol in :mod:`secure`, closing in :mod:`closing`, update intake), so they
live below all of them; the aggregator's import-linter layers contract keeps it that way,
which is what stops :mod:`rounds` and :mod:`secure` from importing each other again.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from fedmedclip.enums import RoundState
from services.aggregator.db.models import Round
from services.common.problems import NotFound

ACTIVE_STATES = (RoundState.open.value, RoundState.aggregating.value)


def target(round_id: int) -> str:
    """The audit target of a round."""
    return f"round:{round_id}"


def get_row(session: Session, round_id: int, *, lock: bool = False) -> Round:
    """The round, optionally locked FOR UPDATE (PostgreSQL) until the transaction ends."""
    row = session.get(Round, round_id, with_for_update=lock, populate_existing=lock)
    if row is None:
        raise NotFound(f"round {round_id} does not exist")
    return row


def describe_state(row: Round) -> str:
    """``open``, or ``aggregating (leased by <owner> until <time>)`` for 409 answers."""
    if row.state != RoundState.aggregating.value:
        return row.state
    until = row.lease_until.isoformat() if row.lease_until else "?"
    return (
        f"aggregating (leased by {row.lease_owner or 'an unknown instance'} until {until}; "
        f"if that process is dead, POST /api/v1/rounds/{row.id}/recover takes over)"
    )
