"""Round safety: default update-norm bound, why a base was chosen, who holds a lease.

Revision ID: 0002_round_safety
Revises: 0001_initial
Create Date: 2025-02-01

Existing rounds keep NULL in the new columns: no norm bound (they were opened without one),
no recorded reason for their base, and no lease owner (their lease can only expire).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_round_safety"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_COLUMNS = {
    "norm_bound_factor": sa.Float,
    "applied_clip_norm": sa.Float,
    "base_reason": sa.Text,
    "lease_owner": lambda: sa.String(length=300),
}


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        for name, kind in _COLUMNS.items():
            batch.add_column(sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+ has it): batch mode would copy and drop the table,
    # which SQLite refuses while other tables' rows reference it.
    for name in reversed(_COLUMNS):
        op.drop_column("rounds", name)
