"""The shared database plumbing: UTC column type, session scopes, SQLite set-up."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import Database, ReadScopeWrite, UTCDateTime, make_engine

metadata = MetaData()
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("naive_storage", UTCDateTime(), nullable=True),
    Column("zoned_storage", UTCDateTime(timezone=True), nullable=True),
)


class _Base(DeclarativeBase):
    metadata = metadata


class Note(_Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def db(tmp_path: Path):
    database = Database.connect(f"sqlite:///{tmp_path / 'deeper' / 'folder' / 'test.db'}")
    metadata.create_all(database.engine)
    yield database
    database.dispose()


def _count(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(events))


@pytest.mark.parametrize("column", ["naive_storage", "zoned_storage"])
def test_naive_datetimes_are_refused_on_both_storages(db: Database, column: str) -> None:
    with pytest.raises(StatementError, match="naive datetime"), db.write() as session:
        session.execute(insert(events).values({column: datetime(2024, 5, 1, 12, 0)}))
    assert _count(db) == 0


def test_aware_datetimes_come_back_as_the_same_instant_in_utc(db: Database) -> None:
    paris_summer = timezone(timedelta(hours=2))
    instant = datetime(2024, 5, 1, 14, 0, tzinfo=paris_summer)
    with db.write() as session:
        session.execute(insert(events).values(naive_storage=instant, zoned_storage=instant))
    with db.read() as session:
        row = session.execute(select(events.c.naive_storage, events.c.zoned_storage)).one()
    for value in row:
        assert value == instant and value.tzinfo is UTC
        assert value.hour == 12


def test_the_session_scope_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    with db.write() as session:
        session.execute(insert(events).values(id=1))
    with pytest.raises(RuntimeError, match="boom"), db.write() as session:
        session.execute(insert(events).values(id=2))
        raise RuntimeError("boom")
    with db.read() as session:
        assert session.scalars(select(events.c.id)).all() == [1]


def test_the_reading_scope_refuses_writes_instead_of_dropping_them(db: Database) -> None:
    with db.write() as session:
        session.add(Note(id=1))
    statements = [insert(events).values(id=1), update(events).values(id=2)]
    for statement in statements:
        with pytest.raises(ReadScopeWrite, match="INSERT, UPDATE or DELETE"), db.read() as s:
            s.execute(statement)
    with pytest.raises(ReadScopeWrite, match="changed objects flushed"), db.read() as session:
        session.get_one(Note, 1).id = 5
        session.flush()
    with db.read() as session:  # reading is what it is for
        assert session.scalars(select(Note.id)).all() == [1]
    assert _count(db) == 0


def test_sqlite_creates_its_folder_and_is_set_up_for_two_processes(db: Database) -> None:
    assert db.is_sqlite
    with db.engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 30_000
    db.ping()


def test_a_reader_does_not_hold_off_writers_but_a_writer_does(db: Database) -> None:
    """Readers start with BEGIN, writers with BEGIN IMMEDIATE (the write lock up front)."""
    wrote = threading.Event()

    def write() -> None:
        with db.write() as session:
            session.execute(insert(events).values())
        wrote.set()

    with db.read() as reader:
        reader.execute(select(events.c.id)).all()  # the read transaction is open
        writer = threading.Thread(target=write)
        writer.start()
        assert wrote.wait(5), "a read transaction blocked a writer"
    writer.join()

    wrote.clear()
    with db.write() as holder:
        holder.execute(select(events.c.id)).all()  # write lock taken at BEGIN, before any write
        writer = threading.Thread(target=write)
        writer.start()
        assert not wrote.wait(0.5), "two write transactions ran at once"
    writer.join(10)
    assert wrote.is_set() and _count(db) == 2


def test_postgresql_connections_are_pinged_before_use() -> None:
    engine = make_engine("postgresql+psycopg://user@db.invalid/fedmedclip")  # never connects
    assert engine.pool._pre_ping
