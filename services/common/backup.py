"""Backups of a service's state as one portable archive, and their checked restore.

An archive is a gzip-compressed tar (``fedmedclip-<service>-<UTC time>.tar.gz``) holding:

* ``manifest.json`` (first member): the archive format, the service, the Alembic revision
  of the database schema, the creation time, the tables in restore order with their row
  counts, and the sha256 and size of every other member;
* ``db/<NN>-<table>.jsonl``: the rows of each table, one JSON object per line keyed by
  column name. Strings, numbers, booleans and nulls are written as they are; other values
  are tagged so that they read back exactly: ``{"$bytes": base64}`` (blobs, update
  payloads), ``{"$datetime": ISO 8601}`` and ``{"$json": value}`` (JSON columns);
* ``files/<tree>/...``: the folders the service keeps besides its database (the node's
  model store), file by file.

Why rows as JSON lines rather than ``pg_dump``: the same code backs up SQLite and
PostgreSQL and restores either into either (a hub can move from its embedded SQLite to
PostgreSQL through a backup), it needs no client binary matching the server's major
version in the image, and it holds no pickles or SQL to trust. The tables are read by
reflection of the live database in foreign-key order, inside one read transaction
(``REPEATABLE READ`` on PostgreSQL, a WAL snapshot on SQLite), so the copy is consistent
while the service keeps running.

Restore refuses an archive of another service, of an unknown format, of a schema revision
the code does not know (made by a newer release), or whose members fail their checksums
(all are checked before anything is written); and a target that already holds rows or
files unless ``force`` is given. It then empties the target with the migrations' own
downgrade (which also removes the append-only triggers of the hub's audit table: a plain
``DELETE`` would be refused), migrates the empty schema to the archive's revision, inserts
every row in one transaction (triggers that refuse UPDATE and DELETE do not stand in the
way of INSERT), moves PostgreSQL's id sequences past the restored ids, and finally migrates
to the code's newest revision, so an older archive is upgraded like any older database.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Integer,
    MetaData,
    Table,
    func,
    select,
    text,
)
from sqlalchemy import inspect as sa_inspect

from fedmedclip import __version__
from services.common.db import Database
from services.common.migrate import VERSION_TABLE, Migrations

ARCHIVE_FORMAT = "fedmedclip-backup/1"
MANIFEST = "manifest.json"
SUFFIX = ".tar.gz"
INSERT_BATCH = 200
"""Rows per INSERT round trip on restore (update payloads are up to a few MB each)."""
_CHUNK = 1024 * 1024
_TREE_NAME = re.compile(r"[a-z][a-z0-9_]*")


class BackupError(RuntimeError):
    """A backup or restore was refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class FileTree:
    """A folder kept besides the database, archived as ``files/<name>/...``."""

    name: str
    path: Path

    def __post_init__(self) -> None:
        if not _TREE_NAME.fullmatch(self.name):
            raise ValueError(f"file tree name {self.name!r} must match {_TREE_NAME.pattern}")


@dataclass(frozen=True)
class BackupSpec:
    """What one service backs up: its database (with its migrations) and its folders."""

    service: str
    migrations: Migrations
    trees: tuple[FileTree, ...] = ()


# ---- row encoding --------------------------------------------------------------------------


def _encode(value: Any, column_type: Any) -> Any:
    if value is None:
        return None
    if isinstance(column_type, JSON):
        return {"$json": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    return value


def _decode(value: Any, column_type: Any) -> Any:
    """A row value for the target column; naive/aware times are matched to the column."""
    if not isinstance(value, dict):
        return value
    ((tag, raw),) = value.items()
    if tag == "$json":
        return raw
    if tag == "$bytes":
        return base64.b64decode(raw)
    if tag == "$datetime":
        moment = datetime.fromisoformat(raw)
        aware_column = isinstance(column_type, DateTime) and column_type.timezone
        if aware_column and moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)  # every stored time is UTC
        if not aware_column and moment.tzinfo is not None:
            return moment.astimezone(UTC).replace(tzinfo=None)
        return moment
    raise BackupError(f"unknown value tag {tag!r} in the archive")


def _reflect(connection: Connection) -> list[Table]:
    """The service's tables in foreign-key order (parents first), without Alembic's."""
    metadata = MetaData()
    metadata.reflect(connection)
    return [t for t in metadata.sorted_tables if t.name != VERSION_TABLE]


# ---- archive creation ----------------------------------------------------------------------


def archive_name(service: str, at: datetime) -> str:
    return f"fedmedclip-{service}-{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _dump_tables(db: Database, staging: Path) -> tuple[str, list[dict[str, Any]]]:
    """Write every table to ``staging/db``; return the schema revision and the table list."""
    (staging / "db").mkdir()
    tables: list[dict[str, Any]] = []
    with db.read() as session:
        if db.engine.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        connection = session.connection()
        revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        for index, table in enumerate(_reflect(connection)):
            member = f"db/{index:02d}-{table.name}.jsonl"
            order = [c for c in table.primary_key.columns] or list(table.columns)
            rows = connection.execute(
                select(table).order_by(*order).execution_options(yield_per=INSERT_BATCH)
            )
            count = 0
            with (staging / member).open("w", encoding="utf-8") as out:
                for row in rows.mappings():
                    encoded = {c.name: _encode(row[c.name], c.type) for c in table.columns}
                    out.write(json.dumps(encoded, separators=(",", ":")) + "\n")
                    count += 1
            tables.append({"name": table.name, "rows": count, "member": member})
    return revision, tables


def _tree_files(tree: FileTree) -> Iterator[tuple[str, Path]]:
    """(member name, path) of each regular file under the tree; links are not followed."""
    if not tree.path.is_dir():
        return
    for path in sorted(tree.path.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(".tmp"):
            yield f"files/{tree.name}/{path.relative_to(tree.path).as_posix()}", path


def create_backup(spec: BackupSpec, db: Database, output: Path) -> dict[str, Any]:
    """Write the archive to ``output`` (atomically: a crash leaves no half archive).

    Returns the manifest. Refused when the database was never migrated (nothing to keep).
    """
    if spec.migrations.current(db.engine) is None:
        raise BackupError(f"the {spec.service} database has no schema yet; nothing to back up")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedmedclip-backup-", dir=output.parent) as tmp:
        staging = Path(tmp)
        revision, tables = _dump_tables(db, staging)
        sources = {t["member"]: staging / t["member"] for t in tables}
        for tree in spec.trees:
            sources.update(_tree_files(tree))
        manifest = {
            "format": ARCHIVE_FORMAT,
            "service": spec.service,
            "schema_revision": revision,
            "created_at": datetime.now(UTC).isoformat(),
            "fedmedclip_version": __version__,
            "database": {"dialect": db.engine.dialect.name, "tables": tables},
            "trees": [tree.name for tree in spec.trees],
            "members": {
                name: {"sha256": _sha256_file(path), "bytes": path.stat().st_size}
                for name, path in sources.items()
            },
        }
        partial = staging / "archive.partial"
        with tarfile.open(partial, "w:gz") as archive:
            body = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(body), int(datetime.now(UTC).timestamp())
            archive.addfile(info, io.BytesIO(body))
            for name, path in sources.items():
                archive.add(path, arcname=name, recursive=False)
        os.replace(partial, output)
    return manifest


def prune_archives(directory: Path, service: str, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest archives of ``service`` in ``directory``.

    Archive names sort by their UTC time, so the order is the name's; other files are
    never touched.
    """
    if keep < 1:
        raise ValueError("keep at least one archive")
    pattern = re.compile(rf"fedmedclip-{re.escape(service)}-\d{{8}}T\d{{12}}Z{re.escape(SUFFIX)}")
    archives = sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name))
    doomed = archives[:-keep]
    for path in doomed:
        path.unlink()
    return doomed


# ---- restore -------------------------------------------------------------------------------


class _Archive:
    """An opened archive whose members are read by name, never extracted blindly."""

    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self.tar = tar
        self.path = path

    def open(self, name: str) -> BinaryIO:
        try:
            info = self.tar.getmember(name)
        except KeyError as exc:
            raise BackupError(f"{self.path} lacks the member {name}") from exc
        handle = self.tar.extractfile(info) if info.isfile() else None
        if handle is None:
            raise BackupError(f"member {name} of {self.path} is not a regular file")
        return handle

    def manifest(self, service: str) -> dict[str, Any]:
        try:
            manifest = json.load(self.open(MANIFEST))
        except (ValueError, UnicodeDecodeError, tarfile.TarError, OSError) as exc:
            raise BackupError(f"the manifest of {self.path} is unreadable: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
            raise BackupError(f"{self.path} is not a {ARCHIVE_FORMAT} archive")
        if manifest.get("service") != service:
            raise BackupError(
                f"{self.path} is a backup of the {manifest.get('service')!r} service, "
                f"not of the {service}"
            )
        return manifest

    def verify(self, manifest: dict[str, Any]) -> None:
        """Every member listed, present, of the recorded size and sha256; nothing else."""
        listed = manifest["members"]
        present = {m.name for m in self.tar.getmembers()} - {MANIFEST}
        if present != set(listed):
            extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
            raise BackupError(
                f"{self.path} does not match its manifest (unlisted: {extra}, missing: {missing})"
            )
        for name, expected in listed.items():
            digest, size = hashlib.sha256(), 0
            try:
                with self.open(name) as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise BackupError(f"{self.path} is damaged at {name}: {exc}") from exc
            if digest.hexdigest() != expected["sha256"] or size != expected["bytes"]:
                raise BackupError(f"{self.path} fails its checksum at {name}; it is damaged")


@contextmanager
def _open_archive(path: Path) -> Iterator[_Archive]:
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 -- closed by the ``with`` below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{path} is not a readable backup archive: {exc}") from exc
    with tar:
        yield _Archive(tar, path)


def _known_revision(migrations: Migrations, revision: str | None, what: str) -> None:
    script = ScriptDirectory.from_config(migrations.config())
    try:
        known = revision is not None and script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupError(
            f"{what} is at schema revision {revision!r}, which this release does not know "
            f"(its newest is {migrations.head()}); use the release that made it, or a newer one"
        )


def _occupied(db: Database) -> list[str]:
    """The tables that hold rows."""
    with db.engine.connect() as connection:
        return [
            table.name
            for table in _reflect(connection)
            if connection.execute(select(func.count()).select_from(table)).scalar()
        ]


def _member_path(tree: FileTree, name: str) -> Path:
    """Where a ``files/<tree>/...`` member goes; names that would leave the tree are refused."""
    relative = PurePosixPath(name).relative_to(f"files/{tree.name}")
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BackupError(f"archive member {name} would be written outside {tree.path}")
    return tree.path.joinpath(*relative.parts)


def _load_rows(connection: Connection, archive: _Archive, tables: list[dict[str, Any]]) -> None:
    reflected = {t.name: t for t in _reflect(connection)}
    if connection.dialect.name == "sqlite":
        # Checked at commit instead of per row: rows that reference each other (a round and
        # the model version it published) need not arrive in one particular order.
        connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    for entry in tables:
        table = reflected.get(entry["name"])
        if table is None:
            raise BackupError(f"the archive's table {entry['name']} is not in the schema")
        batch: list[dict[str, Any]] = []
        for line in archive.open(entry["member"]):
            row = json.loads(line)
            batch.append({k: _decode(v, table.columns[k].type) for k, v in row.items()})
            if len(batch) >= INSERT_BATCH:
                connection.execute(table.insert(), batch)
                batch = []
        if batch:
            connection.execute(table.insert(), batch)
        if connection.dialect.name == "postgresql":
            _advance_sequences(connection, table)


def _advance_sequences(connection: Connection, table: Table) -> None:
    """Make the next generated id follow the restored ones (explicit ids skip the sequence)."""
    for column in table.primary_key.columns:
        if isinstance(column.type, Integer):
            connection.execute(
                text(
                    f'SELECT setval(pg_get_serial_sequence(:table, :column), max("{column.name}"))'
                    f' FROM "{table.name}" HAVING max("{column.name}") IS NOT NULL'
                ),
                {"table": table.name, "column": column.name},
            )


def _restore_tree(archive: _Archive, tree: FileTree, members: list[str]) -> None:
    if tree.path.exists():
        shutil.rmtree(tree.path)
    tree.path.mkdir(parents=True)
    for name in members:
        target = _member_path(tree, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(name) as source, target.open("wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)


def restore_backup(
    spec: BackupSpec, db: Database, path: Path, *, force: bool = False
) -> dict[str, Any]:
    """Restore the archive at ``path`` into ``db`` and the spec's folders; return its manifest.

    Nothing is written until the archive is verified and the target found empty (or
    ``force`` given). The rows go in one transaction: a failure leaves an empty schema.
    """
    with _open_archive(path) as archive:
        manifest = archive.manifest(spec.service)
        _known_revision(spec.migrations, manifest.get("schema_revision"), f"the archive {path}")
        archive.verify(manifest)
        tree_members = {
            tree.name: [m for m in manifest["members"] if m.startswith(f"files/{tree.name}/")]
            for tree in spec.trees
        }
        for tree in spec.trees:
            for name in tree_members[tree.name]:
                _member_path(tree, name)  # refuse escaping names before writing anything

        current = spec.migrations.current(db.engine)
        if current is None:
            with db.engine.connect() as connection:
                if sa_inspect(connection).get_table_names():
                    raise BackupError(
                        f"the target {spec.service} database has tables but no migration "
                        "history; restore into an empty database"
                    )
        else:
            _known_revision(spec.migrations, current, f"the target {spec.service} database")
        occupied = _occupied(db) if current is not None else []
        occupied += [str(t.path) for t in spec.trees if t.path.is_dir() and any(t.path.iterdir())]
        if occupied and not force:
            raise BackupError(
                f"the target is not empty ({', '.join(occupied)}); restore into a fresh "
                "database, or pass --force to replace what is there"
            )

        if current is not None:
            command.downgrade(spec.migrations.config(db.engine), "base")
        command.upgrade(spec.migrations.config(db.engine), manifest["schema_revision"])
        with db.engine.begin() as connection:
            _load_rows(connection, archive, manifest["database"]["tables"])
        spec.migrations.upgrade(db.engine)
        for tree in spec.trees:
            _restore_tree(archive, tree, tree_members[tree.name])
    return manifest
