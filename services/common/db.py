"""Database plumbing of the hub and the node: engine, UTC column type, session scopes.

Code gets a session from a :class:`Database` in one of two scopes, and in no other way:

* ``with db.write() as session:`` the writing scope. It commits when the block ends and
  rolls back when it raises, so a change and its audit record land together or not at all.
  On SQLite its transaction starts with ``BEGIN IMMEDIATE``: SQLite otherwise takes the
  write lock only at the first write, and a transaction that read first (say, checked that
  a round is open) and then writes can fail or act on stale data; taking the lock up front
  serialises writers the way row locks do on PostgreSQL. Two processes (the node API and
  its worker) share one file this way. Keep it short: other writers wait for it.
* ``with db.read() as session:`` the reading scope. It never commits, and its transaction
  starts with a plain ``BEGIN``, so on SQLite it never takes the write lock and others
  keep writing meanwhile; long reads (streaming updates into an aggregate, a backup) use
  it. An INSERT, UPDATE or DELETE there, or a flush of changed objects, raises
  :class:`ReadScopeWrite` at once instead of vanishing when the scope ends.

Domain functions take the :class:`~sqlalchemy.orm.Session` of the scope their caller
opened (a route's per-request ``SessionDep``, a console action, a worker task); only
code that needs several transactions of its own (a round closer, a training job that
reports progress as it runs) takes the ``Database``, and says why.

PostgreSQL connections are pinged before use, so a restarted database costs no request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import DateTime, Engine, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

_READ_ONLY = "fedmedclip_read_only"
SQLITE_BUSY_TIMEOUT_SECONDS = 30


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend; naive datetimes are refused.

    A naive value is ambiguous (local time? UTC?), and comparing it with aware ones raises
    later, far from the mistake, so binding one fails at once. SQLite has no time zone type
    and hands back naive values, which are UTC by construction and get UTC re-attached.

    ``UTCDateTime()`` stores naive UTC in ``TIMESTAMP WITHOUT TIME ZONE`` (the hub's
    schema); ``UTCDateTime(timezone=True)`` stores ``TIMESTAMP WITH TIME ZONE`` on
    PostgreSQL (the node's schema). Both read back the same aware UTC values.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value if self.impl.timezone else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates the folder of a SQLite file when needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        _prepare_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


class ReadScopeWrite(RuntimeError):
    """Something tried to write in a reading scope; open :meth:`Database.write` instead."""


def _refuse_writes(factory: sessionmaker[Session]) -> None:
    """Make sessions of ``factory`` refuse ORM writes: a reading scope never commits, so a
    write there would vanish without a word."""

    def refuse(what: str) -> NoReturn:
        raise ReadScopeWrite(f"{what} in a reading scope (Database.read); use Database.write")

    @event.listens_for(factory, "before_flush")
    def _on_flush(_session: Session, _context: Any, _instances: Any) -> None:
        refuse("changed objects flushed")

    @event.listens_for(factory, "do_orm_execute")
    def _on_execute(state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            refuse("INSERT, UPDATE or DELETE executed")


class Database:
    """An engine with its two session scopes; one per process and database URL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = sessionmaker(engine, expire_on_commit=False)
        reader = engine.execution_options(**{_READ_ONLY: True})
        self._reader = sessionmaker(reader, expire_on_commit=False)
        _refuse_writes(self._reader)

    @classmethod
    def connect(cls, url: str) -> Database:
        return cls(make_engine(url))

    @contextmanager
    def write(self) -> Iterator[Session]:
        """The writing scope: commits on success, rolls back on any error; on SQLite it holds
        the write lock from its first statement until it ends (see the module docstring)."""
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """The reading scope: never commits, never takes SQLite's write lock, refuses writes."""
        with self._reader() as session:
            yield session

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def ping(self) -> None:
        """Raise when the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
