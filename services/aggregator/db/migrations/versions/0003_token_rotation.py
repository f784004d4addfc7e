"""Node token rotation: the previous token's hash and when it stops being accepted.

Revision ID: 0003_token_rotation
Revises: 0002_round_safety
Create Date: 2025-03-01

Existing nodes have no previous token (NULL in both columns).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0003_token_rotation"
down_revision = "0002_round_safety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("previous_token_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("previous_token_expires_at", UTCDateTime(), nullable=True))
    op.create_index(
        op.f("ix_nodes_previous_token_hash"), "nodes", ["previous_token_hash"], unique=False
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+ has it): batch mode would copy and drop the table,
    # which SQLite refuses while other tables' rows reference it.
    op.drop_index(op.f("ix_nodes_previous_token_hash"), table_name="nodes")
    op.drop_column("nodes", "previous_token_expires_at")
    op.drop_column("nodes", "previous_token_hash")
