"""Aggregator faults: SIGKILL mid-round, and every kind of bad update a node can send.

The hub runs as a real process (``fedmedclip aggregator serve``) or a real uvicorn server;
nodes talk to it over loopback HTTP exactly as a hospital node does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fedmedclip.codec import encode_update, read_header
from tests.reliability.support import HubProcess, threaded_hub
from tests.support.hub import ADMIN, Hub, bearer, encoded, make_delta
from tests.support.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODES = [f"site-{i}" for i in range(8)]


def _upload(url: str, round_id: int, token: str, body: bytes, key: str) -> httpx.Response:
    headers = {
        **bearer(token),
        "X-Sample-Count": "10",
        "Idempotency-Key": key,
        "Content-Type": "application/octet-stream",
    }
    return httpx.post(
        f"{url}/api/v1/rounds/{round_id}/updates", content=body, headers=headers, timeout=60
    )


def test_sigkill_mid_round_loses_nothing_and_counts_nothing_twice(tmp_path: Path, figures):
    hub_process = HubProcess(tmp_path / "hub", tmp_path / "hub.log")
    (tmp_path / "hub").mkdir()
    hub_process.start()
    try:
        with httpx.Client(base_url=hub_process.url, timeout=60) as http:
            hub = Hub(http)
            assert hub.set_task().status_code == 200
            tokens = {name: hub.add_node(name) for name in NODES}
            round_id = hub.open_round(min_clients=len(NODES), deadline_seconds=600)["id"]
        bodies = {name: encoded(seed) for seed, name in enumerate(NODES)}

        # Three updates are accepted before the crash...
        receipts: dict[str, dict] = {}
        for name in NODES[:3]:
            response = _upload(hub_process.url, round_id, tokens[name], bodies[name], name)
            assert response.status_code == 201, response.text
            receipts[name] = response.json()

        # ...and five are sent at once; the hub is SIGKILLed as soon as the first is answered,
        # so the others are cut off while being read, validated or committed.
        in_flight: dict[str, httpx.Response | Exception] = {}
        first_answer = threading.Event()

        def send(name: str) -> None:
            try:
                in_flight[name] = _upload(
                    hub_process.url, round_id, tokens[name], bodies[name], name
                )
                first_answer.set()
            except httpx.HTTPError as exc:
                in_flight[name] = exc

        threads = [threading.Thread(target=send, args=(n,)) for n in NODES[3:]]
        for thread in threads:
            thread.start()
        first_answer.wait(timeout=30)
        hub_process.kill()
        for thread in threads:
            thread.join(timeout=60)
        for name, outcome in in_flight.items():
            if isinstance(outcome, httpx.Response) and outcome.status_code == 201:
                receipts[name] = outcome.json()
        acknowledged_before_restart = len(receipts)

        hub_process.start()  # same SQLite file
        with httpx.Client(base_url=hub_process.url, timeout=60) as http:
            hub = Hub(http)
            stored = hub.round(round_id)
            assert stored["state"] == "open"
            assert stored["updates_received"] >= acknowledged_before_restart
            # Every node retries with the same key and bytes, as the node's hub client does.
            outcomes = {}
            for name in NODES:
                response = _upload(hub_process.url, round_id, tokens[name], bodies[name], name)
                assert response.status_code in (200, 201), response.text
                outcomes[name] = response.status_code
                if name in receipts:  # an acknowledged update is a replay: same receipt
                    assert response.status_code == 200
                    assert response.json() == receipts[name]
            assert hub.round(round_id)["updates_received"] == len(NODES)

            closed = hub.close(round_id).json()
            assert closed["state"] == "published" and closed["updates_received"] == len(NODES)
            info = http.get(f"/api/v1/models/{closed['result_version']}", headers=ADMIN).json()
            assert sorted(info["contributors"]) == NODES
            expected_hashes = {hashlib.sha256(b).hexdigest() for b in bodies.values()}
            assert len(info["update_hashes"]) == len(NODES)
            assert set(info["update_hashes"]) == expected_hashes

            # A replay after publication still gets its receipt and changes nothing.
            late_replay = _upload(
                hub_process.url, round_id, tokens[NODES[0]], bodies[NODES[0]], NODES[0]
            )
            assert late_replay.status_code == 200 and late_replay.json() == receipts[NODES[0]]
            assert hub.round(round_id)["updates_received"] == len(NODES)
    finally:
        hub_process.stop()
    figures.add("faults.aggregator_sigkill_restarts")
    figures.set("faults.aggregator_sigkill.acknowledged_before_kill", acknowledged_before_restart)
    figures.set(
        "faults.aggregator_sigkill.stored_without_answer",
        sum(1 for n, s in outcomes.items() if s == 200 and n not in receipts),
    )
    figures.set("faults.aggregator_sigkill.updates_counted", len(NODES))


def _nonfinite(value: float) -> Callable[[], bytes]:
    def make() -> bytes:
        delta = make_delta(7)
        delta["fam.l2.weight"][5, 9] = value
        return encode_update(delta, base_version=1, quantization="fp16", level=3)

    return make


def _hostile_header(header: str) -> bytes:
    """The prefix of a real update around a hostile header, then a real body."""
    valid = encoded(12, base_version=1)
    raw = header.encode()
    return (
        valid[:6] + struct.pack("<I", len(raw)) + raw + valid[read_header(valid)["_body_offset"] :]
    )


def _float_shapes(body: bytes) -> bytes:
    """``body`` with its shapes written as floats (``[384.0, 384.0]``)."""
    header = read_header(body)
    offset = header.pop("_body_offset")
    for tensor in header["tensors"]:
        tensor["shape"] = [float(n) for n in tensor["shape"]]
    raw = json.dumps(header).encode()
    return body[:6] + struct.pack("<I", len(raw)) + raw + body[offset:]


def _flip_middle(body: bytes) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes(b ^ 0x5A for b in body[middle : middle + 32]) + body[middle + 32 :]


def test_every_bad_update_is_refused_with_a_4xx_and_nothing_is_stored(tmp_path: Path, figures):
    """One round, one honest node, and a catalogue of what can go wrong with an upload."""
    with threaded_hub(tmp_path / "hub", max_upload_bytes=1024 * 1024) as (server, hub):
        honest, other, revoked_later = (hub.add_node(n) for n in ("honest", "other", "revoked"))

        # A late update: the round closed at its deadline before it arrived.
        early = hub.open_round(min_clients=1, deadline_seconds=1)["id"]
        assert hub.post_update(early, honest, encoded(1), key="on-time").status_code == 201
        wait_until(lambda: hub.round(early)["state"] == "published", timeout=30, what="deadline")
        late = hub.post_update(early, other, encoded(2), key="late")
        assert late.status_code == 409 and "no longer accepts" in late.json()["detail"]

        round_id = hub.open_round(
            min_clients=1, deadline_seconds=600, max_update_norm=50.0, base_version="latest"
        )["id"]
        good = encoded(3, base_version=1)
        accepted = hub.post_update(round_id, honest, good, key="good")
        assert accepted.status_code == 201

        def post(body: bytes, token: str = other, key: str = "k", **headers: str):
            sent = {
                **bearer(token),
                "X-Sample-Count": "10",
                "Idempotency-Key": key,
                "Content-Type": "application/octet-stream",
                **headers,
            }
            return hub.client.post(f"/api/v1/rounds/{round_id}/updates", content=body, headers=sent)

        def streamed_too_big():
            for _ in range(20):
                yield b"\0" * 65536  # 1.25 MiB, no Content-Length

        catalogue: dict[str, tuple[Callable[[], httpx.Response], int, str]] = {
            "duplicate (second, different update)": (
                lambda: post(encoded(4, base_version=1), token=honest, key="other-key"),
                409,
                "already sent",
            ),
            "reused key with other bytes": (
                lambda: post(encoded(5, base_version=1), token=honest, key="good"),
                409,
                "already sent",
            ),
            "wrong base version": (lambda: post(encoded(6, base_version=0)), 400, "base version"),
            "future base version": (lambda: post(encoded(6, base_version=9)), 400, "base version"),
            "oversized (declared length)": (
                lambda: post(b"\0" * (1024 * 1024 + 1)),
                413,
                "limit of 1048576",
            ),
            "oversized (streamed)": (
                lambda: hub.client.post(
                    f"/api/v1/rounds/{round_id}/updates",
                    content=streamed_too_big(),
                    headers={**bearer(other), "X-Sample-Count": "1", "Idempotency-Key": "s"},
                ),
                413,
                "limit",
            ),
            "NaN": (lambda: post(_nonfinite(float("nan"))()), 400, "NaN"),
            "+inf": (lambda: post(_nonfinite(float("inf"))()), 400, "infinite"),
            "-inf": (lambda: post(_nonfinite(float("-inf"))()), 400, "infinite"),
            "poisoned (norm above the bound)": (
                lambda: post(encoded(8, base_version=1, scale=5.0)),
                400,
                "exceeds the bound",
            ),
            "empty": (lambda: post(b""), 400, "empty"),
            "garbage": (lambda: post(b"GIF89a definitely not an update"), 400, "invalid update"),
            "truncated": (lambda: post(encoded(9, base_version=1)[:-100]), 400, "invalid update"),
            "corrupted": (
                lambda: post(_flip_middle(encoded(9, base_version=1))),
                400,
                "invalid update",
            ),
            "unknown round": (
                lambda: hub.post_update(round_id + 100, other, encoded(9, base_version=1)),
                404,
                "does not exist",
            ),
            "sample count 0": (lambda: post(good, **{"X-Sample-Count": "0"}), 422, "sample"),
            "sample count not a number": (
                lambda: post(good, **{"X-Sample-Count": "lots"}),
                422,
                "sample",
            ),
            "metrics not finite": (
                lambda: post(encoded(9, base_version=1), **{"X-Local-Metrics": '{"acc": 1e999}'}),
                400,
                "finite",
            ),
            "header nested 60,000 deep": (
                lambda: post(_hostile_header("[" * 60_000)),
                400,
                "nests 60000 levels",
            ),
            "header with a 5,000-digit integer": (
                lambda: post(_hostile_header('{"base_version": ' + "9" * 5000 + "}")),
                400,
                "more than 20 digits",
            ),
            "header with float shape entries": (
                lambda: post(_float_shapes(encoded(12, base_version=1))),
                400,
                "valid integer",
            ),
            "bytes after the zstd frame": (
                lambda: post(encoded(13, base_version=1) + b"smuggled"),
                400,
                "unused data",
            ),
            "metrics nested 5,000 deep": (
                lambda: post(encoded(14, base_version=1), **{"X-Local-Metrics": "[" * 5000}),
                400,
                "nests 5000 levels",
            ),
            "metrics with a 5,000-digit integer": (
                lambda: post(
                    encoded(14, base_version=1), **{"X-Local-Metrics": '{"n": ' + "9" * 5000 + "}"}
                ),
                400,
                "more than 20 digits",
            ),
            "no token": (
                lambda: hub.client.post(f"/api/v1/rounds/{round_id}/updates", content=good),
                401,
                "Authorization",
            ),
            "unknown token": (lambda: post(good, token="forged-token"), 401, "invalid token"),
            "admin token (wrong role)": (
                lambda: post(good, token="test-admin-token"),
                403,
                "node token",
            ),
        }
        tried = audited = 0
        for what, (send, status, message) in catalogue.items():
            response = send()
            assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
            assert message.lower() in response.json()["detail"].lower(), what
            tried += 1
            audited += status in (400, 404, 409, 413)  # 401/403/422 stop before the intake

        # A node revoked in the middle of the round is refused; the others go on.
        node_id = next(
            n["id"]
            for n in hub.client.get("/api/v1/nodes", headers=ADMIN).json()
            if n["name"] == "revoked"
        )
        assert hub.client.delete(f"/api/v1/nodes/{node_id}", headers=ADMIN).status_code == 200
        refused = post(encoded(10, base_version=1), token=revoked_later, key="r")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        tried += 1

        # Nothing above was stored; the replay of the accepted update is not counted twice.
        replay = post(good, token=honest, key="good")
        assert replay.status_code == 200 and replay.json() == accepted.json()
        assert hub.round(round_id)["updates_received"] == 1
        assert post(encoded(11, base_version=1), key="fine").status_code == 201
        closed = hub.close(round_id).json()
        assert closed["state"] == "published" and closed["updates_received"] == 2
        contributors = hub.client.get(
            f"/api/v1/models/{closed['result_version']}", headers=ADMIN
        ).json()["contributors"]
        assert contributors == ["honest", "other"]
        # Every refusal by the intake is in the audit trail (the late update included) and
        # counted; no answer was a 5xx.
        assert len(hub.audit(action="update.rejected", limit=1000)) == audited + 1
        rejected = hub.client.get("/metrics").text
        counted = sum(
            float(line.split()[-1])
            for line in rejected.splitlines()
            if line.startswith("fedmedclip_aggregator_updates_rejected_total{")
        )
        assert counted == audited + 1
    figures.set("bad_inputs.aggregator_updates_tried", tried + 1)  # + the late update
    figures.add("faults.revoked_token_mid_round")


def _round_state(db_file: Path, round_id: int) -> tuple[str, str | None]:
    """Read the round straight from the SQLite file (the hub may be stopped or dead)."""
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30) as connection:
        return connection.execute(
            "SELECT state, lease_owner FROM rounds WHERE id = ?", (round_id,)
        ).fetchone()


def test_sigkill_mid_aggregation_is_taken_over_at_restart(tmp_path: Path, figures) -> None:
    """Killed while aggregating, the restarted hub finishes the round at once, not in 5 min."""
    names = [f"site-{i}" for i in range(12)]
    hub_process = HubProcess(tmp_path / "hub", tmp_path / "hub.log")
    (tmp_path / "hub").mkdir()
    db_file = tmp_path / "hub" / "aggregator.db"
    hub_process.start()
    try:
        with httpx.Client(base_url=hub_process.url, timeout=120) as http:
            hub = Hub(http)
            assert hub.set_task().status_code == 200
            tokens = {name: hub.add_node(name) for name in names}
            round_id = hub.open_round(min_clients=len(names), aggregation_rule="median")["id"]
            for seed, name in enumerate(names):
                body = encoded(seed, quantization="fp16")
                assert hub.post_update(round_id, tokens[name], body, key=name).status_code == 201

            closing = threading.Thread(target=lambda: _close_quietly(hub_process.url, round_id))
            closing.start()
            state, owner = wait_until(
                lambda: (row := _round_state(db_file, round_id))[0] != "open" and row,
                timeout=60,
                interval=0.005,
                what="the round claimed for aggregation",
            )
            assert state == "aggregating", "aggregation finished before the kill; add updates"
            dead_pid = hub_process.proc.pid
            hub_process.kill()
            closing.join(timeout=60)
        assert owner is not None and f"/{dead_pid}/" in owner
        assert _round_state(db_file, round_id) == ("aggregating", owner)

        restarted = time.monotonic()
        hub_process.start()  # same host, same SQLite file: the dead owner is seen at start
        with httpx.Client(base_url=hub_process.url, timeout=120) as http:
            hub = Hub(http)
            final = wait_until(
                lambda: (r := hub.round(round_id))["state"] != "aggregating" and r,
                timeout=60,
                what="the interrupted round finished",
            )
            recovered_after = time.monotonic() - restarted
            assert final["state"] == "published", final
            assert sorted(hub.weights(final["result_version"])[1]["contributors"]) == sorted(names)
            causes = [e["details"]["cause"] for e in hub.audit(action="round.close")]
            assert causes[0].startswith("resumed at once"), causes
            assert hub.audit(action="round.close")[0]["details"]["previous_owner"] == owner
            ready = http.get("/ready").json()
            assert ready["checks"]["aggregation_leases"] == "none"
    finally:
        hub_process.stop()
    assert recovered_after < 60  # the lease was 5 minutes
    figures.set(
        "faults.aggregator_sigkill_mid_aggregation.recovered_after_s", round(recovered_after, 1)
    )


def _close_quietly(url: str, round_id: int) -> None:
    """POST close; the hub is killed while answering, so a dropped connection is expected."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}/api/v1/rounds/{round_id}/close", headers=ADMIN, timeout=120)
