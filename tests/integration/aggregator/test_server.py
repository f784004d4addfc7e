"""The hub behind real HTTP servers: uvicorn in a thread, and the `serve` command."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from services.aggregator.app import create_app
from tests.support.hub import ADMIN, ADMIN_TOKEN, TASK, bearer, encoded
from tests.support.processes import (
    ThreadedServer,
    free_port,
    http_ok,
    hub_env,
    service_command,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_updates_over_real_http_including_a_streamed_oversized_body(settings) -> None:
    with (
        ThreadedServer(create_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert (
            http.put("/api/v1/task", json=TASK.model_dump(mode="json"), headers=ADMIN).status_code
            == 200
        )
        token = http.post("/api/v1/nodes", json={"name": "alpha"}, headers=ADMIN).json()["token"]
        round_id = http.post("/api/v1/rounds", json={}, headers=ADMIN).json()["id"]
        headers = {
            **bearer(token),
            "X-Sample-Count": "7",
            "Idempotency-Key": "k",
            "Content-Type": "application/octet-stream",
        }

        def too_much():
            for _ in range(144):  # 9 MiB in all, more than the 8 MiB cap
                yield b"\0" * 65536

        oversized = http.post(
            f"/api/v1/rounds/{round_id}/updates", content=too_much(), headers=headers
        )
        assert oversized.status_code == 413
        accepted = http.post(
            f"/api/v1/rounds/{round_id}/updates", content=encoded(1), headers=headers
        )
        assert accepted.status_code == 201 and accepted.json()["sample_count"] == 7
        assert accepted.headers["X-Request-ID"]
        metrics = http.get("/metrics").text
        assert "fedmedclip_aggregator_updates_accepted_total 1.0" in metrics
        assert 'fedmedclip_aggregator_updates_rejected_total{reason="too_large"} 1.0' in metrics


@pytest.mark.slow
def test_serve_command_runs_the_hub(tmp_path) -> None:
    port = free_port()
    env = hub_env(tmp_path, ADMIN_TOKEN, FEDMEDCLIP_AGG_LOG_JSON="true")
    command = service_command("aggregator", "serve", "--port", str(port))
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/ready"),
            timeout=120,
            what="aggregator serving",
        )
        response = httpx.put(
            f"http://127.0.0.1:{port}/api/v1/task", json=TASK.model_dump(mode="json"), headers=ADMIN
        )
        assert response.status_code == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert (tmp_path / "aggregator.db").exists()
    assert '"path": "/api/v1/task"' in output and '"status": 200' in output
