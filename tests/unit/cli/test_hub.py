"""``fedmedclip hub`` against a real hub (the aggregator app on SQLite, served on a loopback
port): every command as a table and as ``--json``, ``rounds watch`` on rounds that another
thread publishes or cancels, and the exit codes of refusals and unreachable hubs."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from starlette.types import ASGIApp, Receive, Scope, Send
from typer.testing import CliRunner

from fedmedclip.model_store import decode_blob
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from services.cli import app
from services.common.hub_client import HubAdminClient, HubClient, HubRejected
from tests.support.hub import TASK, encoded
from tests.support.processes import ThreadedServer, free_port

ADMIN_TOKEN = "cli-admin-token"
ROUND_PATH = re.compile(r"/api/v1/rounds/\d+")
CLASSES = [arg for name in TASK.class_names for arg in ("--class", name)]


class RoundReads:
    """The hub app, telling a test when someone has read a round (``rounds watch``'s poll)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http" and ROUND_PATH.fullmatch(scope["path"]):
            self.seen.set()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, RoundReads]]:
    settings = AggregatorSettings(data_dir=tmp_path / "hub", admin_token=ADMIN_TOKEN)
    reads = RoundReads(create_app(settings))
    with ThreadedServer(reads) as server:
        yield server.url, reads


@pytest.fixture
def hub(served: tuple[str, RoundReads]) -> str:
    return served[0]


def cli(url: str, *args: str, token: str = ADMIN_TOKEN) -> Result:
    """``fedmedclip hub ARGS`` as a user runs it, with the hub named by the environment."""
    env = {"FEDMEDCLIP_HUB_URL": url, "FEDMEDCLIP_HUB_TOKEN": token, "COLUMNS": "200"}
    return CliRunner().invoke(app, ["hub", "--retries", "0", *args], env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def parsed(result: Result) -> Any:
    return json.loads(ok(result))


def refused(result: Result, code: int) -> str:
    """The one ``error:`` line of a failed command (no traceback)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output
    return lines[-1]


def with_task(url: str) -> None:
    ok(cli(url, "task", "set", *CLASSES, "--json"))


def node_token(url: str, name: str) -> str:
    return parsed(cli(url, "nodes", "add", name, "--json"))["token"]


def upload(url: str, token: str, round_id: int, seed: int = 1) -> None:
    with HubClient(url, token, retries=0) as site:
        site.upload_update(
            round_id,
            encoded(seed),
            sample_count=10,
            metrics={"val_accuracy": 0.5},
            idempotency_key=f"round-{round_id}-{seed}",
        )


def test_version_is_printed_by_the_root_command() -> None:
    import fedmedclip

    result = CliRunner().invoke(app, ["--version"])
    assert ok(result).strip() == f"fedmedclip {fedmedclip.__version__}"


def test_task_set_and_show(hub: str, tmp_path: Path) -> None:
    stored = parsed(cli(hub, "task", "set", *CLASSES, "--margin", "0.1", "--json"))
    assert stored["class_names"] == TASK.class_names and stored["fam"]["margin"] == 0.1
    assert parsed(cli(hub, "task", "show", "--json")) == stored
    assert "benign, malignant, normal (3)" in ok(cli(hub, "task", "show"))

    # A file gives the task; options override its fields.
    spec = tmp_path / "task.json"
    spec.write_text(json.dumps({"class_names": ["a", "b"], "fam": {"seed": 4}}))
    from_file = parsed(cli(hub, "task", "set", "--file", str(spec), "--seed", "7", "--json"))
    assert from_file["class_names"] == ["a", "b"] and from_file["fam"]["seed"] == 7

    # Checked by the shared schema before anything is sent.
    line = refused(cli(hub, "task", "set", "--class", "only-one"), 2)
    assert "class_names" in line
    refused(cli(hub, "task", "set"), 2)
    spec.write_text("[1, 2]")
    assert "JSON object" in refused(cli(hub, "task", "set", "--file", str(spec)), 2)

    # The hub's refusal, as one line with its code and status.
    ok(cli(hub, "rounds", "start"))
    line = refused(cli(hub, "task", "set", *CLASSES), 1)
    assert line.endswith("(conflict, HTTP 409)"), line


@pytest.mark.slow
def test_nodes_add_list_revoke(hub: str) -> None:
    with_task(hub)
    added = cli(hub, "nodes", "add", "site-a")
    assert "site-a" in ok(added) and "shows it only once" in added.stderr
    token = node_token(hub, "site-b")
    with HubClient(hub, token, retries=0) as site:
        assert site.get_task().class_names == TASK.class_names

    nodes = parsed(cli(hub, "nodes", "list", "--json"))
    assert [n["name"] for n in nodes] == ["site-a", "site-b"]
    assert all(n["revoked_at"] is None for n in nodes)
    assert "site-b" in ok(cli(hub, "nodes", "list"))

    site_b = nodes[1]["id"]
    revoked = parsed(cli(hub, "nodes", "revoke", str(site_b), "--json"))
    assert revoked["id"] == site_b and revoked["revoked_at"] is not None
    assert "revoked" in ok(cli(hub, "nodes", "revoke", str(site_b)))
    with HubClient(hub, token, retries=0) as site, pytest.raises(HubRejected) as info:
        site.get_task()
    assert info.value.status_code == 401

    line = refused(cli(hub, "nodes", "add", "site-a"), 1)
    assert "already exists" in line and line.endswith("(conflict, HTTP 409)")
    assert "HTTP 404" in refused(cli(hub, "nodes", "revoke", "99"), 1)
    line = refused(cli(hub, "nodes", "add", "not a name!"), 2)  # checked before it is sent
    assert line.startswith("error: name: Value error, node name must be"), line


def test_nodes_rotate_token(hub: str) -> None:
    """POST /api/v1/nodes/{id}/token; skipped while the hub lacks the route."""
    with_task(hub)
    old = node_token(hub, "site-a")
    result = cli(hub, "nodes", "rotate-token", "1", "--grace-seconds", "0", "--json")
    if result.exit_code == 1 and ("HTTP 404" in result.stderr or "HTTP 405" in result.stderr):
        pytest.skip("this hub has no token rotation route yet")
    rotated = parsed(result)
    assert rotated["id"] == 1 and rotated["name"] == "site-a"
    assert rotated["token"] and rotated["token"] != old
    with HubClient(hub, rotated["token"], retries=0) as site:
        assert site.get_task().class_names == TASK.class_names
    assert "shows it only once" in cli(hub, "nodes", "rotate-token", "1").stderr


@pytest.mark.slow
def test_rounds_start_list_show_close_cancel(hub: str) -> None:
    with_task(hub)
    opened = parsed(
        cli(
            hub,
            "rounds",
            "start",
            "--min-clients",
            "2",
            "--deadline-seconds",
            "600",
            "--aggregation-rule",
            "median",
            "--hint",
            "local_epochs=3",
            "--hint",
            "calibrate=true",
            "--json",
        )
    )
    assert opened["state"] == "open" and opened["min_clients"] == 2
    assert opened["aggregation_rule"] == "median"
    assert opened["hints"]["local_epochs"] == 3 and opened["hints"]["calibrate"] is True
    round_id = str(opened["id"])

    assert [r["id"] for r in parsed(cli(hub, "rounds", "list", "--state", "open", "--json"))] == [
        opened["id"]
    ]
    assert parsed(cli(hub, "rounds", "list", "--state", "published", "--json")) == []
    assert "median" in ok(cli(hub, "rounds", "list"))
    assert parsed(cli(hub, "rounds", "show", round_id, "--json")) == opened
    assert "local_epochs=3" in ok(cli(hub, "rounds", "show", round_id))

    # One round open at a time: the hub says so.
    assert "HTTP 409" in refused(cli(hub, "rounds", "start"), 1)

    # Closing without min_clients updates fails the round: exit 3, the state in the JSON.
    closed = cli(hub, "rounds", "close", round_id, "--json")
    assert closed.exit_code == 3, closed.output
    assert json.loads(closed.stdout)["state"] == "failed"
    assert f"round {round_id} failed" in closed.stderr

    second = parsed(cli(hub, "rounds", "start", "--json"))
    cancelled = parsed(cli(hub, "rounds", "cancel", str(second["id"]), "--json"))
    assert cancelled["state"] == "cancelled"
    assert "HTTP 409" in refused(cli(hub, "rounds", "cancel", str(second["id"])), 1)

    line = refused(cli(hub, "rounds", "show", "99"), 1)
    assert line == "error: round 99 does not exist (not_found, HTTP 404)"
    assert "local_epochs" in refused(cli(hub, "rounds", "start", "--hint", "local_epochs=0"), 2)
    assert "KEY=VALUE" in cli(hub, "rounds", "start", "--hint", "oops").output


def test_rounds_start_a_secure_round_with_distributed_dp(hub: str) -> None:
    with_task(hub)
    for name in ("site-a", "site-b", "site-c"):
        node_token(hub, name)
    args = ["rounds", "start", "--secure-aggregation", "--dp", "noise_multiplier=1.5"]
    assert "clip_norm" in refused(cli(hub, *args), 2)  # the DP settings are checked here
    opened = parsed(cli(hub, *args, "--dp", "clip_norm=0.5", "--json"))
    assert opened["secure_aggregation"] and opened["secagg_phase"] == "advertise"
    assert opened["participants"] == ["site-a", "site-b", "site-c"]
    assert opened["dp"] == {"noise_multiplier": 1.5, "clip_norm": 0.5, "delta": 1e-5}
    shown = ok(cli(hub, "rounds", "show", str(opened["id"])))
    assert "phase advertise" in shown and "noise_multiplier=1.5" in shown
    ok(cli(hub, "rounds", "cancel", str(opened["id"])))
    line = refused(cli(hub, "rounds", "start", "--secure-aggregation", "--participant", "x"), 1)
    assert "(secagg_round_refused, HTTP 422)" in line


@pytest.mark.slow
def test_models_list_show_promote_rollback_download(hub: str, tmp_path: Path) -> None:
    with_task(hub)
    token = node_token(hub, "site-a")
    round_id = parsed(cli(hub, "rounds", "start", "--json"))["id"]
    upload(hub, token, round_id)
    published = parsed(cli(hub, "rounds", "close", str(round_id), "--json"))
    assert published["state"] == "published" and published["result_version"] == 1

    models = parsed(cli(hub, "models", "list", "--json"))
    assert [m["version"] for m in models] == [0, 1]
    assert models[1]["contributors"] == ["site-a"] and models[1]["round_id"] == round_id
    assert "v1" in ok(cli(hub, "models", "list"))
    shown = parsed(cli(hub, "models", "show", "1", "--json"))
    assert shown == models[1]
    assert shown["blob_sha256"] in ok(cli(hub, "models", "show", "1"))

    assert parsed(cli(hub, "models", "promote", "0", "--json"))["is_production"]
    promoted = parsed(cli(hub, "models", "promote", "1", "--json"))
    assert promoted["version"] == 1 and promoted["is_production"]
    assert parsed(cli(hub, "models", "show", "production", "--json"))["version"] == 1
    assert "production" in ok(cli(hub, "models", "show", "production"))
    rolled_back = parsed(cli(hub, "models", "rollback", "--json"))
    assert rolled_back["version"] == 0 and rolled_back["is_production"]
    ok(cli(hub, "models", "promote", "1"))
    assert "model v0" in ok(cli(hub, "models", "rollback"))
    assert "nothing to roll back to" in refused(cli(hub, "models", "rollback"), 1)

    target = tmp_path / "v1.safetensors"
    written = parsed(cli(hub, "models", "download", "1", "-o", str(target), "--json"))
    blob = target.read_bytes()
    assert written == {
        "version": 1,
        "path": str(target),
        "bytes": len(blob),
        "sha256": shown["blob_sha256"],
    }
    assert hashlib.sha256(blob).hexdigest() == shown["blob_sha256"]
    assert decode_blob(blob)[1]["version"] == 1
    assert "verified" in ok(cli(hub, "models", "download", "0", "-o", str(tmp_path / "v0")))

    assert "HTTP 404" in refused(cli(hub, "models", "download", "7", "-o", str(target)), 1)
    assert target.read_bytes() == blob, "a failed download leaves the file alone"
    assert "production" in cli(hub, "models", "show", "latest").output  # usage error
    assert cli(hub, "models", "show", "latest").exit_code == 2


@pytest.mark.slow
def test_audit(hub: str) -> None:
    with_task(hub)
    node_token(hub, "site-a")
    ok(cli(hub, "rounds", "start"))
    events = parsed(cli(hub, "audit", "--json"))
    actions = [e["action"] for e in events]
    assert {"node.create", "round.open"} <= set(actions)
    assert events[0]["id"] > events[-1]["id"], "newest first"
    only = parsed(cli(hub, "audit", "--action", "node.create", "--json"))
    assert [e["details"]["name"] for e in only] == ["site-a"]
    assert parsed(cli(hub, "audit", "--since", "2999-01-01T00:00:00Z", "--json")) == []
    assert len(parsed(cli(hub, "audit", "--limit", "1", "--json"))) == 1
    assert "node.create" in ok(cli(hub, "audit"))
    assert cli(hub, "audit", "--since", "yesterday").exit_code == 2


def _once_watched(reads: RoundReads, action) -> threading.Thread:
    """Run ``action`` in a thread once the watcher has read the round (still open)."""
    reads.seen.clear()

    def run() -> None:
        assert reads.seen.wait(60), "the watcher never read the round"
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_rounds_watch_follows_a_round_until_it_publishes(served) -> None:
    hub, reads = served
    with_task(hub)
    token = node_token(hub, "site-a")
    round_id = parsed(cli(hub, "rounds", "start", "--json"))["id"]

    def publish() -> None:
        upload(hub, token, round_id)
        with HubAdminClient(hub, ADMIN_TOKEN, retries=0) as admin:
            admin.close_round(round_id)

    thread = _once_watched(reads, publish)
    result = cli(hub, "rounds", "watch", str(round_id), "--interval", "0.1")
    thread.join()
    lines = ok(result).splitlines()  # not a terminal: a line per change
    assert lines[0].startswith(f"round {round_id} open: 0/1 updates, deadline ")
    assert lines[-2].startswith(f"round {round_id} published: 1/1 updates")
    assert lines[-1] == f"round {round_id} published model v1"

    # --json: one line per change, the last one the published round.
    lines = ok(cli(hub, "rounds", "watch", str(round_id), "--json")).splitlines()
    assert json.loads(lines[-1])["state"] == "published"


def test_rounds_watch_draws_a_live_view_in_a_terminal(served) -> None:
    hub, reads = served
    with_task(hub)
    round_id = parsed(cli(hub, "rounds", "start", "--min-clients", "2", "--json"))["id"]

    def close() -> None:  # too few updates: the round fails
        with HubAdminClient(hub, ADMIN_TOKEN, retries=0) as admin:
            admin.close_round(round_id)

    thread = _once_watched(reads, close)
    result = CliRunner().invoke(
        app,
        ["hub", "rounds", "watch", str(round_id), "--interval", "0.1"],
        env={"FEDMEDCLIP_HUB_URL": hub, "FEDMEDCLIP_HUB_TOKEN": ADMIN_TOKEN, "FORCE_COLOR": "1"},
    )
    thread.join()
    assert result.exit_code == 3, result.output
    assert "\x1b[?25l" in result.stdout, "the cursor is hidden while the view is live"
    assert "0/2 updates" in result.stdout and "(failed)" in result.stdout
    assert f"round {round_id} failed: closed by admin with 0 of 2" in result.stderr


def test_rounds_watch_exits_non_zero_when_the_round_is_cancelled(served) -> None:
    hub, reads = served
    with_task(hub)
    round_id = parsed(cli(hub, "rounds", "start", "--json"))["id"]

    def cancel() -> None:
        with HubAdminClient(hub, ADMIN_TOKEN, retries=0) as admin:
            admin.cancel_round(round_id)

    thread = _once_watched(reads, cancel)
    result = cli(hub, "rounds", "watch", str(round_id), "--interval", "0.1", "--json")
    thread.join()
    assert result.exit_code == 3, result.output
    states = [json.loads(line)["state"] for line in result.stdout.splitlines()]
    assert states == ["open", "cancelled"]
    assert f"round {round_id} cancelled: cancelled by admin" in result.stderr


def test_failures_are_one_line_with_an_exit_code(hub: str, tmp_path: Path) -> None:
    line = refused(cli(hub, "rounds", "list", token="not-the-admin-token"), 1)
    assert "HTTP 401" in line

    down = f"http://127.0.0.1:{free_port()}"
    line = refused(cli(down, "rounds", "list"), 2)
    assert down in line and "unreachable" in line

    assert "FEDMEDCLIP_HUB_URL" in refused(cli("", "task", "show"), 2)
    assert "FEDMEDCLIP_HUB_TOKEN" in refused(cli(hub, "task", "show", token=""), 2)
    missing = tmp_path / "nowhere.pem"
    line = refused(cli(hub, "--ca-bundle", str(missing), "task", "show"), 2)
    assert "CA bundle" in line
