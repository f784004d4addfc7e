"""Secure aggregation: a round's protocol parameters and phase, the sites' messages, and
the distributed-DP settings and epsilons of a round.

Revision ID: 0004_secure_aggregation
Revises: 0003_token_rotation
Create Date: 2026-11-29

Existing rounds are plain rounds (``secure_aggregation`` false, NULL protocol columns).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0004_secure_aggregation"
down_revision = "0003_token_rotation"
branch_labels = None
depends_on = None

_COLUMNS = {
    "secagg_params": sa.Text,
    "secagg_phase": lambda: sa.String(length=16),
    "secagg_phase_until": UTCDateTime,
    "secagg_phase_seconds": sa.Integer,
    "dp": sa.JSON,
    "dp_effective_noise": sa.Float,
    "dp_epsilon": sa.Float,
    "dp_epsilon_total": sa.Float,
}


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(
            sa.Column(
                "secure_aggregation", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        for name, kind in _COLUMNS.items():
            batch.add_column(sa.Column(name, kind(), nullable=True))
    op.create_table(
        "secagg_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("node_name", sa.String(length=100), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_secagg_messages_round_id_rounds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secagg_messages")),
        sa.UniqueConstraint(
            "round_id", "phase", "node_name", name=op.f("uq_secagg_messages_round_id")
        ),
    )
    op.create_index(
        op.f("ix_secagg_messages_round_id"), "secagg_messages", ["round_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_secagg_messages_round_id"), table_name="secagg_messages")
    op.drop_table("secagg_messages")
    # Plain DROP COLUMN, as in 0003: batch mode would copy a referenced table on SQLite.
    for name in reversed(_COLUMNS):
        op.drop_column("rounds", name)
    op.drop_column("rounds", "secure_aggregation")
