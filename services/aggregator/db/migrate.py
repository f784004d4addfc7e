"""Alembic migrations, run programmatically (no alembic.ini needed, works when installed).

The script location is the ``migrations`` package next to this module, so the migrations
travel with the installed distribution.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"


class SchemaNotCurrentError(RuntimeError):
    """The database schema is behind the code; the message says what to run."""


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {heads}")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (None when it was never migrated).

    Read directly rather than through Alembic's migration context, which logs on every
    call and would flood the logs of a frequently probed ``/ready``.
    """
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; return that revision."""
    command.upgrade(alembic_config(engine), "head")
    return head_revision()


def check_current(engine: Engine) -> None:
    """Raise :class:`SchemaNotCurrentError` unless the schema is at the newest revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaNotCurrentError(
            f"the aggregator database schema is at revision {current or 'none (empty)'}, "
            f"the code needs {head}; run `fedmedclip aggregator migrate` "
            "(or set FEDMEDCLIP_AGG_AUTO_MIGRATE=true)"
        )


def prepare_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Migrate SQLite always and PostgreSQL when asked; otherwise insist on a current schema."""
    if engine.dialect.name == "sqlite" or auto_migrate:
        upgrade(engine)
    else:
        check_current(engine)
