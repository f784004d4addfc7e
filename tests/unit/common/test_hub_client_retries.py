"""The node's hub client against a real HTTP server that misbehaves on purpose."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fedmedclip.model_store import blob_sha256
from fedmedclip.schemas import ModelInfo
from services.common.hub_client import HubClient, HubError, HubRejected, HubUnavailable
from tests.support.processes import ThreadedServer, free_port

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
