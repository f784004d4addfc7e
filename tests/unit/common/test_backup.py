"""Backup archives: a node round trip (database and model store) and every refusal of restore.

The node is the example service here (SQLite, a folder besides the database); the hub's
restore drill on SQLite and PostgreSQL is in tests/integration/aggregator/test_backup.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from services.cli import app as cli
from services.common.backup import (
    MANIFEST,
    BackupError,
    archive_name,
    create_backup,
    prune_archives,
    restore_backup,
)
from services.hospital_node.backup import backup_spec
from services.hospital_node.db import Dataset, Job, PrivacyRelease, open_database
from services.hospital_node.settings import NodeSettings

STARTED = datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


def _site(root: Path) -> NodeSettings:
    return NodeSettings(data_dir=root / "data", model_store_dir=root / "store")


def _populate(settings: NodeSettings) -> None:
    db = open_database(settings.resolved_database_url())
    with db.write() as session:
        session.add(Dataset(name="ward-7", path="/data/w7", n_images=12, report={"ok": True}))
        session.add(
            Job(
                round_id=4,
                trigger="auto",
                state="done",
                metrics={"acc": 0.75},
                started_at=STARTED,
                finished_at=STARTED + timedelta(seconds=90),
            )
        )
        session.add(PrivacyRelease(job_id=1, round_id=4, clip_norm=0.5, noise_multiplier=4.0))
    db.dispose()
    (settings.model_store_dir / "global").mkdir(parents=True)
    (settings.model_store_dir / "global" / "v0.safetensors").write_bytes(bytes(range(256)) * 9)
    (settings.model_store_dir / "current.json").write_text('{"global_version": 0}')


def _rows(settings: NodeSettings) -> list[tuple]:
    db = open_database(settings.resolved_database_url())
    with db.write() as session:
        rows = (
            [(d.name, d.report, d.created_at) for d in session.scalars(select(Dataset))]
            + [
                (j.id, j.state, j.metrics, j.started_at, j.finished_at)
                for j in session.scalars(select(Job))
            ]
            + [(p.job_id, p.noise_multiplier) for p in session.scalars(select(PrivacyRelease))]
        )
    db.dispose()
    return rows


def _files(settings: NodeSettings) -> dict[str, bytes]:
    root = settings.model_store_dir
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> NodeSettings:
    settings = _site(tmp_path / "source")
    _populate(settings)
    return settings


@pytest.fixture
def archive(source: NodeSettings, tmp_path: Path) -> Path:
    path = tmp_path / "backups" / archive_name("node", datetime.now(UTC))
    db = open_database(source.resolved_database_url())
    create_backup(backup_spec(source), db, path)
    db.dispose()
    return path


def _restore(settings: NodeSettings, path: Path, *, force: bool = False) -> dict:
    db = open_database(settings.resolved_database_url())
    try:
        return restore_backup(backup_spec(settings), db, path, force=force)
    finally:
        db.dispose()


def _rewrite(path: Path, out: Path, change) -> Path:
    """A copy of the archive with its members passed through ``change(name, data)``."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members:
            for new_name, new_data in change(name, data):
                info = tarfile.TarInfo(new_name)
                info.size = len(new_data)
                tar.addfile(info, io.BytesIO(new_data))
    return out


def _with_manifest(path: Path, out: Path, edit) -> Path:
    def change(name: str, data: bytes):
        if name == MANIFEST:
            manifest = json.loads(data)
            edit(manifest)
            data = json.dumps(manifest).encode()
        yield name, data

    return _rewrite(path, out, change)


def test_node_round_trip_keeps_rows_times_and_model_store(source, archive, tmp_path) -> None:
    target = _site(tmp_path / "target")
    manifest = _restore(target, archive)
    assert manifest["service"] == "node"
    assert _rows(target) == _rows(source)
    assert _rows(target)[1][3] == STARTED  # microseconds and UTC survive
    assert _files(target) == _files(source)


def test_restore_refuses_a_non_empty_target_unless_forced(source, archive, tmp_path) -> None:
    target = _site(tmp_path / "target")
    _populate(target)
    (target.model_store_dir / "stray.bin").write_bytes(b"x")
    with pytest.raises(BackupError, match="not empty.*--force"):
        _restore(target, archive)
    assert "stray.bin" in _files(target)
    _restore(target, archive, force=True)
    assert _rows(target) == _rows(source)
    assert _files(target) == _files(source)


def test_a_damaged_member_is_refused_before_anything_is_written(archive, tmp_path) -> None:
    def flip(name: str, data: bytes):
        yield name, (data[:-2] + b"X\n" if name.startswith("db/") and data else data)

    damaged = _rewrite(archive, tmp_path / "damaged.tar.gz", flip)
    target = _site(tmp_path / "target")
    with pytest.raises(BackupError, match="fails its checksum"):
        _restore(target, damaged)
    assert _rows(target) == []
    assert not target.model_store_dir.exists()


def test_an_unlisted_member_is_refused(archive, tmp_path) -> None:
    def add(name: str, data: bytes):
        yield name, data
        if name == MANIFEST:
            yield "files/model_store/extra.bin", b"smuggled"

    with pytest.raises(BackupError, match="does not match its manifest"):
        _restore(_site(tmp_path / "t"), _rewrite(archive, tmp_path / "x.tar.gz", add))


def test_a_newer_schema_revision_is_refused(archive, tmp_path) -> None:
    def newer(manifest: dict) -> None:
        manifest["schema_revision"] = "0099_from_the_future"

    future = _with_manifest(archive, tmp_path / "future.tar.gz", newer)
    with pytest.raises(BackupError, match="0099_from_the_future.*does not know"):
        _restore(_site(tmp_path / "target"), future)


def test_another_service_archive_is_refused(archive, tmp_path) -> None:
    def hub(manifest: dict) -> None:
        manifest["service"] = "aggregator"

    wrong = _with_manifest(archive, tmp_path / "hub.tar.gz", hub)
    with pytest.raises(BackupError, match="'aggregator' service"):
        _restore(_site(tmp_path / "target"), wrong)
    with pytest.raises(BackupError, match="not a readable backup archive"):
        _restore(_site(tmp_path / "target"), Path(__file__))


def test_a_member_name_leaving_the_model_store_is_refused(archive, tmp_path) -> None:
    escape = "files/model_store/../../escaped.txt"

    def smuggle(name: str, data: bytes):
        if name == MANIFEST:
            manifest = json.loads(data)
            manifest["members"][escape] = {
                "sha256": __import__("hashlib").sha256(b"pwn").hexdigest(),
                "bytes": 3,
            }
            yield name, json.dumps(manifest).encode()
            yield escape, b"pwn"
        else:
            yield name, data

    bad = _rewrite(archive, tmp_path / "bad.tar.gz", smuggle)
    target = _site(tmp_path / "target")
    with pytest.raises(BackupError, match="outside"):
        _restore(target, bad)
    assert not (tmp_path / "target" / "escaped.txt").exists()
    assert _rows(target) == []


def test_prune_keeps_the_newest_archives_of_the_service_only(tmp_path: Path) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    names = [archive_name("node", start + timedelta(days=d)) for d in range(5)]
    for name in [*names, archive_name("aggregator", start), "notes.txt"]:
        (tmp_path / name).write_text("x")
    deleted = prune_archives(tmp_path, "node", keep=2)
    assert [p.name for p in deleted] == names[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names[3:], archive_name("aggregator", start), "notes.txt"]
    )


def test_node_cli_backup_keeps_n_and_restore_reports(source: NodeSettings, tmp_path) -> None:
    env = {
        "FEDMEDCLIP_NODE_DATA_DIR": str(source.data_dir),
        "FEDMEDCLIP_NODE_MODEL_STORE_DIR": str(source.model_store_dir),
    }
    out = tmp_path / "cron"
    runner = CliRunner()
    for _ in range(3):
        result = runner.invoke(
            cli, ["node", "backup", "--output-dir", str(out), "--keep", "2"], env=env
        )
        assert result.exit_code == 0, result.output
    assert len(list(out.iterdir())) == 2
    target = _site(tmp_path / "target")
    env = {
        "FEDMEDCLIP_NODE_DATA_DIR": str(target.data_dir),
        "FEDMEDCLIP_NODE_MODEL_STORE_DIR": str(target.model_store_dir),
    }
    newest = max(out.iterdir())
    result = runner.invoke(cli, ["node", "restore", str(newest)], env=env)
    assert result.exit_code == 0 and "restored node" in result.output, result.output
    assert _rows(target) == _rows(source)
    again = runner.invoke(cli, ["node", "restore", str(newest)], env=env)
    assert again.exit_code == 1 and "not empty" in again.output
