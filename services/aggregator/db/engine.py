"""Engine and session factories for SQLite (embedded default) and PostgreSQL (psycopg 3).

The same SQLAlchemy code runs on both; the differences are confined here:

* SQLite runs in WAL mode with a busy timeout, and every read-write transaction starts with
  ``BEGIN IMMEDIATE``. SQLite otherwise takes the write lock only at the first write, and a
  transaction that read first (say, checked that a round is open) and then writes can fail
  or act on stale data; taking the lock up front serialises writers the way row locks do on
  PostgreSQL.
* Read-only work that may take long (streaming updates into an aggregate) uses
  :attr:`Database.read_sessions`, whose transactions start with a plain ``BEGIN``, so the hub
  keeps answering while a large round is aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_READ_ONLY = "fedmedclip_read_only"


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates the folder of a SQLite file when needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _prepare_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


@dataclass(frozen=True)
class Database:
    """An engine with its two session factories."""

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

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.engine.dispose()
