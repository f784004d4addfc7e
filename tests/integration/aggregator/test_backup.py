"""The restore drill: back up a hub, lose its database, restore, and serve the same answers.

Runs on SQLite and on a real PostgreSQL (the ``settings`` fixture); the archive is written
and read by the real ``fedmedclip aggregator backup|restore`` commands.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from services.aggregator.settings import AggregatorSettings
from services.cli import app as cli
from services.common.backup import MANIFEST
from tests.support.hub import ADMIN, Hub, bearer, encoded, running_hub
from tests.support.processes import create_database

pytestmark = pytest.mark.integration

READS = (
    "/api/v1/task",
    "/api/v1/nodes",
    "/api/v1/rounds",
    "/api/v1/rounds/1",
    "/api/v1/rounds/2",
    "/api/v1/models",
    "/api/v1/models/production",
    "/api/v1/audit?limit=1000",
)


def _answers(hub: Hub) -> dict[str, Any]:
    """What an admin and a node see of the hub: every read route, and the model blobs."""
    seen: dict[str, Any] = {}
    for path in READS:
        response = hub.client.get(path, headers=ADMIN)
        assert response.status_code == 200, (path, response.text)
        seen[path] = response.json()
    for version in (0, 1):
        _, _, response = hub.weights(version)
        seen[f"blob {version}"] = (response.content, response.headers["X-Model-SHA256"])
    return seen


def _federation(hub: Hub) -> dict[str, str]:
    """A published and promoted round, an open round with one update, a revoked node."""
    assert hub.set_task().status_code == 200
    tokens = {name: hub.add_node(name) for name in ("alpha", "beta", "gone")}
    first = hub.open_round(min_clients=2)["id"]
    for seed, name in enumerate(("alpha", "beta")):
        assert hub.post_update(first, tokens[name], encoded(seed), key=name).status_code == 201
    assert hub.close(first).json()["state"] == "published"
    assert hub.client.post("/api/v1/models/1/promote", headers=ADMIN).status_code == 200
    second = hub.open_round(min_clients=2, base_version=1, deadline_seconds=3600)["id"]
    update = encoded(7, base_version=1)
    assert hub.post_update(second, tokens["alpha"], update, key="a2").status_code == 201
    gone = next(
        n for n in hub.client.get("/api/v1/nodes", headers=ADMIN).json() if n["name"] == "gone"
    )
    assert hub.client.delete(f"/api/v1/nodes/{gone['id']}", headers=ADMIN).status_code == 200
    return tokens


def _cli(args: list[str], database_url: str, tmp_path: Path) -> str:
    env = {
        "FEDMEDCLIP_AGG_DATABASE_URL": database_url,
        "FEDMEDCLIP_AGG_DATA_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(cli, ["aggregator", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _empty_database(settings: AggregatorSettings, request: pytest.FixtureRequest, tmp_path) -> str:
    if settings.resolved_database_url().startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'restored' / 'hub.db'}"
    admin_url = request.getfixturevalue("postgres_admin_url")
    return create_database(admin_url, f"r_{uuid.uuid4().hex[:12]}")


@pytest.mark.slow
def test_restore_drill_serves_the_same_hub(
    settings: AggregatorSettings, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source_url = settings.resolved_database_url()
    with running_hub(settings) as hub:
        tokens = _federation(hub)
        before = _answers(hub)
    backups = tmp_path / "backups"
    _cli(["backup", "--output-dir", str(backups)], source_url, tmp_path)
    (archive,) = backups.iterdir()

    # A fresh database (the old one is lost): restore, start a hub on it, compare.
    target_url = _empty_database(settings, request, tmp_path)
    assert "restored aggregator" in _cli(["restore", str(archive)], target_url, tmp_path)
    restored = settings.model_copy(update={"database_url": SecretStr(target_url)})
    with running_hub(restored) as hub:
        assert _answers(hub) == before
        # The old node tokens still work, and new rows get ids after the restored ones.
        me = hub.client.get("/api/v1/nodes/me", headers=bearer(tokens["beta"]))
        assert me.status_code == 200 and me.json()["name"] == "beta"
        second = hub.post_update(2, tokens["beta"], encoded(8, base_version=1), key="b2")
        assert second.status_code == 201
        assert hub.close(2).json()["result_version"] == 2
        assert hub.add_node("delta")
        assert hub.open_round()["id"] == 3
        events = hub.audit(limit=1000)
        assert events[0]["id"] > max(e["id"] for e in before["/api/v1/audit?limit=1000"])

    # The original, changed since, is not empty: refused without --force, replaced with it.
    with running_hub(settings) as hub:
        hub.add_node("late")
    runner = CliRunner()
    env = {"FEDMEDCLIP_AGG_DATABASE_URL": source_url, "FEDMEDCLIP_AGG_DATA_DIR": str(tmp_path)}
    refused = runner.invoke(cli, ["aggregator", "restore", str(archive)], env=env)
    assert refused.exit_code == 1 and "not empty" in refused.output
    _cli(["restore", str(archive), "--force"], source_url, tmp_path)
    with running_hub(settings) as hub:
        assert _answers(hub) == before


@pytest.mark.slow
def test_archive_lists_every_member_with_its_checksum(settings, tmp_path: Path) -> None:
    import json
    import tarfile

    with running_hub(settings) as hub:
        _federation(hub)
    _cli(
        ["backup", "--output-dir", str(tmp_path / "b")], settings.resolved_database_url(), tmp_path
    )
    (archive,) = (tmp_path / "b").iterdir()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))
    assert names[0] == MANIFEST and set(names[1:]) == set(manifest["members"])
    tables = {t["name"]: t["rows"] for t in manifest["database"]["tables"]}
    assert tables["model_versions"] == 2 and tables["updates"] == 3 and tables["nodes"] == 3
    assert manifest["service"] == "aggregator" and manifest["schema_revision"]
