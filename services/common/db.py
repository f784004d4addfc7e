"""Database plumbing of the hub and the node: engine, UTC column type, sessions.

The same SQLAlchemy code runs on SQLite (the embedded default) and PostgreSQL (psycopg 3);
the differences are confined here:

* SQLite runs in WAL mode with a busy timeout and foreign keys on, and every read-write
  transaction starts with ``BEGIN IMMEDIATE``. SQLite otherwise takes the write lock only
  at the first write, and a transaction that read first (say, checked that a round is open)
  and then writes can fail or act on stale data; taking the lock up front serialises
  writers the way row locks do on PostgreSQL. Two processes (the node API and its worker)
  share one file this way.
* Read-only work that may take long (streaming updates into an aggregate) uses
  :meth:`Database.read_session`, whose transactions start with a plain ``BEGIN``, so other
  requests keep being answered meanwhile.
* PostgreSQL connections are pinged before use, so a restarted database costs no request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

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


@dataclass(frozen=True)
class Database:
    """An engine with its session factories; one per process and database URL."""

    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, url: str) -> Database:
        engine = make_engine(url)
        reader = engine.execution_options(**{_READ_ONLY: True})
        return cls(
            engine=engine,
            sessions=sessionmaker(engine, expire_on_commit=False),
            read_sessions=sessionmaker(reader, expire_on_commit=False),
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read-write session that commits on success and rolls back on any error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only (on SQLite it does not take the write lock)."""
        with self.read_sessions() as session:
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
