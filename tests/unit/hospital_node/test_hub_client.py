"""``connect_hub``: the node settings decide the hub client's token, retries and timeouts,
and a client made for an admin who waits gives up sooner."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fedmedclip.schemas import TaskSpec
from services.common.hub_client import HubUnavailable
from services.hospital_node import hub_client
from services.hospital_node.hub_client import connect_hub
from services.hospital_node.settings import NodeSettings
from tests.support.processes import ThreadedServer

TASK = TaskSpec(class_names=["benign", "malignant"])


class SlowHub:
    """Answers ``/api/v1/task`` after ``delay`` seconds, 503 while ``failing``."""

    def __init__(self) -> None:
        self.failing = False
        self.delay = 0.0
        self.tokens: list[str] = []
        self.app = FastAPI()

        @self.app.get("/api/v1/task")
        def task(request: Request) -> Response:
            self.tokens.append(request.headers.get("authorization", ""))
            time.sleep(self.delay)
            if self.failing:
                return JSONResponse({"detail": "busy"}, status_code=503)
            return JSONResponse(TASK.model_dump(mode="json"))


@pytest.fixture
def slow_hub() -> Iterator[tuple[SlowHub, str]]:
    hub = SlowHub()
    with ThreadedServer(hub.app) as server:
        yield hub, server.url


def _settings(url: str, **values: object) -> NodeSettings:
    return NodeSettings(
        aggregator_url=url,
        node_token="node-secret",
        hub_backoff_seconds=0.01,
        **values,
    )


def test_jobs_retry_as_configured_with_the_node_token(slow_hub) -> None:
    hub, url = slow_hub
    with connect_hub(_settings(url, hub_retries=3)) as client:
        assert client.get_task() == TASK
        hub.failing = True
        with pytest.raises(HubUnavailable, match="after 4 attempts"):
            client.get_task()
    assert len(hub.tokens) == 1 + 4
    assert set(hub.tokens) == {"Bearer node-secret"}


def test_an_interactive_client_retries_once_at_most(slow_hub) -> None:
    hub, url = slow_hub
    hub.failing = True
    with (
        connect_hub(_settings(url, hub_retries=3), interactive=True) as client,
        pytest.raises(HubUnavailable, match="after 2 attempts"),
    ):
        client.get_task()
    assert len(hub.tokens) == 2
    with (
        connect_hub(_settings(url, hub_retries=0), interactive=True) as client,
        pytest.raises(HubUnavailable, match="after 1 attempt:"),
    ):
        client.get_task()


def test_an_interactive_client_waits_less_than_a_job(slow_hub, monkeypatch) -> None:
    hub, url = slow_hub
    hub.delay = 0.5
    monkeypatch.setattr(hub_client, "INTERACTIVE_TIMEOUT_SECONDS", 0.1)
    settings = _settings(url, hub_retries=0, hub_timeout_seconds=5)
    with connect_hub(settings) as job_client:
        assert job_client.get_task() == TASK
    with (
        connect_hub(settings, interactive=True) as quick,
        pytest.raises(HubUnavailable, match="Timeout"),
    ):
        quick.get_task()
