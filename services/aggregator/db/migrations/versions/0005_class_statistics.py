"""Class statistics in the shared state: a task stored before them keeps them off.

Revision ID: 0005_class_statistics
Revises: 0004_secure_aggregation
Create Date: 2026-11-29

``FamSettings.class_statistics`` defaults to true for new tasks. A task stored earlier has
global versions whose state holds no statistics, so its spec gets an explicit false: its
update shapes, and every site's, stay what they were.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0005_class_statistics"
down_revision = "0004_secure_aggregation"
branch_labels = None
depends_on = None

_TASK = sa.table("task", sa.column("id", sa.Integer), sa.column("spec", sa.JSON))


def _rewrite_fam(change: Callable[[dict], dict]) -> None:
    bind = op.get_bind()
    for task_id, spec in bind.execute(sa.select(_TASK.c.id, _TASK.c.spec)).all():
        spec = dict(spec or {})
        spec["fam"] = change(dict(spec.get("fam") or {}))
        bind.execute(_TASK.update().where(_TASK.c.id == task_id).values(spec=spec))


def upgrade() -> None:
    _rewrite_fam(lambda fam: {"class_statistics": False} | fam)


def downgrade() -> None:
    # The older code forbids the key: drop it (a task that used statistics cannot go back).
    _rewrite_fam(lambda fam: {k: v for k, v in fam.items() if k != "class_statistics"})
