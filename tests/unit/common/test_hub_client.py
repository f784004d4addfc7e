"""The shared hub client against real HTTP servers: model download (size cap, blob checks)
and ``ensure_global``, retries against a hub that misbehaves on purpose, and the admin calls
against the real aggregator app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import torch
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fedmedclip.enums import AggregationRule, RoundState
from fedmedclip.model_store import ModelStore, blob_sha256, encode_blob
from fedmedclip.schemas import ModelInfo, RoundCreate, TaskSpec, TrainingHints
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from services.common.hub_client import (
    HubAdminClient,
    HubClient,
    HubError,
    HubRejected,
    HubUnavailable,
    ensure_global,
)
from tests.support.processes import ThreadedServer, free_port

# --- model download and ensure_global -------------------------------------------------------

BLOBS = {
    1: encode_blob({"w": torch.ones(4, 4)}, {"version": 1}),
    2: encode_blob({"w": torch.zeros(4, 4)}, {"version": 7}),  # says it is another version
    3: b"not a safetensors file at all",
}


def _info(version: int) -> ModelInfo:
    return ModelInfo(
        version=version,
        parent_version=None,
        round_id=None,
        contributors=[],
        update_hashes=[],
        metrics={},
        blob_sha256=blob_sha256(BLOBS[version]),
        created_at=datetime.now(UTC),
    )


class BlobHub:
    def __init__(self) -> None:
        self.downloads = 0
        self.app = FastAPI()

        @self.app.get("/api/v1/models/{version}/blob")
        def blob(version: int) -> Response:
            self.downloads += 1
            data = BLOBS[version]
            return Response(data, headers={"X-Model-SHA256": blob_sha256(data)})


@pytest.fixture
def hub() -> Iterator[tuple[BlobHub, str]]:
    blob_hub = BlobHub()
    with ThreadedServer(blob_hub.app) as server:
        yield blob_hub, server.url


def test_a_blob_over_the_cap_is_refused_while_streaming(hub) -> None:
    _, url = hub
    with (
        HubClient(url, "tok", retries=0, max_model_bytes=64) as client,
        pytest.raises(HubError, match="larger than the 64 byte cap"),
    ):
        client.download_model(_info(1))


@pytest.mark.parametrize(
    ("version", "message"), [(2, "says it is version 7"), (3, "not a model blob")]
)
def test_a_blob_must_be_a_model_of_the_announced_version(hub, version, message) -> None:
    _, url = hub
    with HubClient(url, "tok", retries=0) as client, pytest.raises(HubError, match=message):
        client.download_model(_info(version))


def test_ensure_global_downloads_only_what_the_store_lacks(hub, tmp_path) -> None:
    blob_hub, url = hub
    store = ModelStore(tmp_path)
    with HubClient(url, "tok", retries=0) as client:
        first = ensure_global(client, store, _info(1))
        again = ensure_global(client, store, _info(1))
    assert blob_hub.downloads == 1
    assert first.sha256 == again.sha256 == blob_sha256(BLOBS[1])
    assert store.load_global(1).sha256 == blob_sha256(BLOBS[1])


# --- retries ------------------------------------------------------------------------------

RECEIPT = {
    "round_id": 3,
    "node_id": 1,
    "sha256": "ab" * 32,
    "sample_count": 10,
    "received_at": "2026-01-01T00:00:00Z",
}


class FlakyHub:
    """Answers 503 ``failures`` times, then the real answer; records every request."""

    def __init__(self) -> None:
        self.failures = 0
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.app = FastAPI()

        @self.app.post("/api/v1/rounds/{round_id}/updates")
        async def upload(round_id: int, request: Request) -> Response:
            self.seen.append((request.url.path, dict(request.headers), await request.body()))
            if len(self.seen) <= self.failures:
                return JSONResponse({"detail": "busy"}, status_code=503)
            if round_id == 4:
                return JSONResponse({"detail": "round 4 is closed"}, status_code=409)
            return JSONResponse(RECEIPT, status_code=201)

        @self.app.get("/api/v1/models/{version}/blob")
        def blob(version: int) -> Response:
            return Response(b"tampered", headers={"X-Model-SHA256": blob_sha256(b"original")})


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyHub, str]]:
    hub = FlakyHub()
    with ThreadedServer(hub.app) as server:
        yield hub, server.url


def _upload(client: HubClient, round_id: int = 3):
    return client.upload_update(
        round_id,
        b"payload",
        sample_count=10,
        metrics={"val_accuracy": 0.5},
        idempotency_key="job-1-round-3",
    )


def test_transient_faults_are_retried_with_the_same_idempotency_key(flaky) -> None:
    hub, url = flaky
    hub.failures = 2
    with HubClient(url, "tok", retries=3, backoff_seconds=0.05) as client:
        started = time.monotonic()
        receipt = _upload(client)
        elapsed = time.monotonic() - started
    assert receipt.round_id == 3 and receipt.sample_count == 10
    assert len(hub.seen) == 3
    assert elapsed >= 0.05 + 0.1, "the second retry waits twice as long as the first"
    keys = {headers["idempotency-key"] for _, headers, _ in hub.seen}
    assert keys == {"job-1-round-3"} and {body for *_, body in hub.seen} == {b"payload"}
    _, headers, _ = hub.seen[-1]
    assert headers["authorization"] == "Bearer tok"
    assert headers["x-sample-count"] == "10"
    assert headers["x-local-metrics"] == '{"val_accuracy":0.5}'
    assert headers["content-type"] == "application/octet-stream"


def test_a_4xx_is_final_and_carries_the_hub_detail(flaky) -> None:
    hub, url = flaky
    with (
        HubClient(url, "tok", retries=3, backoff_seconds=0.05) as client,
        pytest.raises(HubRejected) as info,
    ):
        _upload(client, round_id=4)
    assert len(hub.seen) == 1
    assert info.value.status_code == 409 and info.value.detail == "round 4 is closed"
    assert info.value.code is None, "a plain JSON error has no problem code"
    assert "round 4 is closed" in str(info.value)


def test_retries_run_out_against_a_failing_hub(flaky) -> None:
    hub, url = flaky
    hub.failures = 10
    with (
        HubClient(url, "tok", retries=2, backoff_seconds=0.01) as client,
        pytest.raises(HubUnavailable, match="after 3 attempts: HTTP 503: busy"),
    ):
        _upload(client)
    assert len(hub.seen) == 3


def test_an_unreachable_hub_is_reported_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        HubClient(url, "tok", retries=1, backoff_seconds=0.01) as client,
        pytest.raises(HubUnavailable, match=f"{url} is unreachable .* after 2 attempts"),
    ):
        client.get_task()


def test_a_blob_that_fails_its_checksum_is_refused(flaky) -> None:
    _, url = flaky
    info = ModelInfo(
        version=0,
        parent_version=None,
        round_id=None,
        contributors=[],
        update_hashes=[],
        metrics={},
        blob_sha256=blob_sha256(b"original"),
        created_at=datetime.now(UTC),
    )
    with (
        HubClient(url, "tok", retries=0) as client,
        pytest.raises(HubError, match="failed its integrity check"),
    ):
        client.download_model(info)


# --- admin calls -----------------------------------------------------------------------------

ADMIN_TOKEN = "admin-token-for-tests"


@pytest.fixture
def real_hub(tmp_path) -> Iterator[str]:
    """The real aggregator app (SQLite) on a loopback port."""
    settings = AggregatorSettings(data_dir=tmp_path, admin_token=ADMIN_TOKEN)
    with ThreadedServer(create_app(settings)) as server:
        yield server.url


def test_the_admin_client_drives_a_hub_with_typed_calls(real_hub: str) -> None:
    task = TaskSpec(class_names=["benign", "malignant"], backbone="ViT-S-32")
    with HubAdminClient(real_hub, ADMIN_TOKEN, retries=0) as admin:
        assert admin.healthy()
        assert admin.set_task(task) == task
        node = admin.add_node("hospital_a")
        assert node.name == "hospital_a" and node.token
        opened = admin.open_round(
            RoundCreate(
                min_clients=1,
                hints=TrainingHints(local_epochs=2),
                aggregation_rule=AggregationRule.median,
            )
        )
        assert opened.state is RoundState.open and opened.hints.local_epochs == 2
        assert opened.aggregation_rule is AggregationRule.median
        assert admin.get_round(opened.id) == opened
        closed = admin.close_round(opened.id)  # no update arrived: the round fails
        assert closed.id == opened.id and closed.state is RoundState.failed
        promoted = admin.promote(0)
        assert promoted.version == 0 and promoted.is_production
    with HubClient(real_hub, node.token, retries=0) as site:  # the token works for the node
        assert site.get_task() == task


def test_admin_calls_are_refused_with_the_hub_detail(real_hub: str) -> None:
    with HubAdminClient(real_hub, ADMIN_TOKEN, retries=0) as admin:
        admin.add_node("hospital_a")
        with pytest.raises(HubRejected, match="already exists") as info:
            admin.add_node("hospital_a")
        assert info.value.status_code == 409 and info.value.code == "conflict"
    with HubAdminClient(real_hub, "not-the-admin", retries=0) as intruder:
        with pytest.raises(HubRejected) as info:
            intruder.promote(0)
        assert info.value.status_code in (401, 403)


def test_an_absent_hub_is_not_healthy() -> None:
    with HubAdminClient(f"http://127.0.0.1:{free_port()}", ADMIN_TOKEN) as admin:
        assert not admin.healthy()
