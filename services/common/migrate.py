"""Alembic migrations run programmatically (no alembic.ini), for any service's migrations.

A service describes its migrations with one :class:`Migrations` value naming the package
that holds ``env.py``, ``script.py.mako`` and ``versions/``; the package is found through
its import, so migrations travel with the installed distribution. Its ``env.py`` is one
call: ``run_migrations(Base.metadata)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, text

VERSION_TABLE = "alembic_version"


class SchemaNotCurrentError(RuntimeError):
    """The database schema is behind the code; the message says what to run."""


@dataclass(frozen=True)
class Migrations:
    """One service's migrations and how its operators bring a database up to date.

    ``legacy_tables``/``legacy_revision`` adopt a database created before the service had
    migrations (by ``create_all``): when it has those tables but no version table, it is
    stamped at ``legacy_revision`` (the revision equal to that schema) instead of being
    created again, and its rows are kept.
    """

    package: str
    service: str
    how_to_migrate: str
    legacy_tables: frozenset[str] = frozenset()
    legacy_revision: str | None = None

    @property
    def directory(self) -> Path:
        module = importlib.import_module(self.package)
        assert module.__file__ is not None
        return Path(module.__file__).parent

    def config(self, engine: Engine | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        if engine is not None:
            config.attributes["engine"] = engine
        return config

    def head(self) -> str:
        heads = ScriptDirectory.from_config(self.config()).get_heads()
        if len(heads) != 1:
            raise RuntimeError(f"expected one {self.service} migration head, found {heads}")
        return heads[0]

    def current(self, engine: Engine) -> str | None:
        """The revision recorded in the database (None when it was never migrated).

        Read directly rather than through Alembic's migration context, which logs on every
        call and would flood the logs of a frequently probed ``/ready``.
        """
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()

    def upgrade(self, engine: Engine) -> str:
        """Bring the schema to the newest revision; return that revision."""
        self._adopt_legacy(engine)
        command.upgrade(self.config(engine), "head")
        return self.head()

    def check_current(self, engine: Engine) -> None:
        """Raise :class:`SchemaNotCurrentError` unless the schema is at the newest revision."""
        current, head = self.current(engine), self.head()
        if current != head:
            raise SchemaNotCurrentError(
                f"the {self.service} database schema is at revision "
                f"{current or 'none (empty)'}, the code needs {head}; {self.how_to_migrate}"
            )

    def prepare(self, engine: Engine, *, auto_migrate: bool) -> None:
        """Migrate SQLite always and PostgreSQL when asked; otherwise insist on a current schema."""
        if engine.dialect.name == "sqlite" or auto_migrate:
            self.upgrade(engine)
        else:
            self.check_current(engine)

    def _adopt_legacy(self, engine: Engine) -> None:
        if self.legacy_revision is None:
            return
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        if VERSION_TABLE in tables or not tables & self.legacy_tables:
            return
        missing = self.legacy_tables - tables
        if missing:
            raise SchemaNotCurrentError(
                f"the {self.service} database has no migration history and lacks "
                f"{', '.join(sorted(missing))}, so its schema is unknown; it is left untouched "
                "(move it away to start with an empty database)"
            )
        command.stamp(self.config(engine), self.legacy_revision)


def run_migrations(target_metadata: MetaData) -> None:
    """The body of a service's ``env.py``: migrate the engine handed over by :class:`Migrations`.

    SQLite alters tables in batch mode (copy and swap), as it lacks most ``ALTER TABLE``.
    """
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported; run them online")
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
