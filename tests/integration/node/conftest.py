"""Fixtures for hospital node integration tests: a real hub, node APIs, Celery workers.

The hub is the real aggregator app served by uvicorn in a thread; nodes are real node
apps (embedded jobs, or a broker with a real ``fedmedclip node worker`` subprocess on the
session's Redis). Data is a small synthetic federation; the backbone is ViT-S-32 with
random weights, loaded once per process by the node's backbone cache.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedmedclip.data.synth import SynthSummary, synthesize_federation
from fedmedclip.enums import TERMINAL_JOB_STATES
from services.aggregator.app import create_app as create_hub
from services.aggregator.settings import AggregatorSettings
from services.hospital_node.app import create_app as create_node
from services.hospital_node.settings import NodeSettings
from tests.support.processes import ThreadedServer, WorkerProcess, wait_until

HUB_ADMIN = "hub-admin-token"
SITE_ADMIN = "site-admin-token"
CLASSES = 3
FAST_HINTS = {"local_epochs": 2, "batch_size": 16}
SLOW_HINTS = {"local_epochs": 200, "batch_size": 2}
"""Long enough (several seconds) to act on a job while it trains."""


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    root = tmp_path_factory.mktemp("synth") / "federation"
    return synthesize_federation(
        root, hospitals=2, classes=CLASSES, per_hospital=40, image_size=64, seed=0
    )


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for every node of the session: each image is encoded once."""
    return tmp_path_factory.mktemp("feature_cache")


class Hub:
    """The aggregator, driven with its admin token."""

    def __init__(self, server: ThreadedServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {HUB_ADMIN}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def set_task(self, class_names: list[str]) -> dict:
        task = {"class_names": class_names, "backbone": "ViT-S-32", "weights_id": "none"}
        return self.call("PUT", "/api/v1/task", json=task)

    def add_node(self, name: str) -> str:
        return self.call("POST", "/api/v1/nodes", json={"name": name})["token"]

    def open_round(self, min_clients: int = 1, hints: dict | None = None) -> dict:
        body = {"min_clients": min_clients, "deadline_seconds": 600, "hints": hints or FAST_HINTS}
        return self.call("POST", "/api/v1/rounds", json=body)

    def round(self, round_id: int) -> dict:
        return self.call("GET", f"/api/v1/rounds/{round_id}")

    def stop(self) -> None:
        """Take the hub down: its port refuses connections from now on."""
        self.server.__exit__(None, None, None)


@pytest.fixture
def hub(tmp_path: Path, federation: SynthSummary) -> Iterator[Hub]:
    """A fresh hub whose task uses the synthetic federation's classes."""
    settings = AggregatorSettings(data_dir=tmp_path / "hub", admin_token=HUB_ADMIN)
    with ThreadedServer(create_hub(settings)) as server:
        hub = Hub(server)
        hub.set_task(federation.class_names)
        yield hub
        hub.http.close()


@dataclass
class Node:
    """A running node API and an admin client for it."""

    url: str
    settings: NodeSettings
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {SITE_ADMIN}"}, timeout=30
        )

    def register(self, path: Path) -> httpx.Response:
        return self.http.post("/api/v1/datasets", json={"path": str(path)})

    def start_job(self, round_id: int | None = None) -> dict:
        response = self.http.post("/api/v1/jobs", json={"round_id": round_id})
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: int) -> dict:
        response = self.http.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_job(self, job_id: int, until: Callable[[dict], bool], timeout: float = 120) -> dict:
        return wait_until(
            lambda: (job := self.job(job_id)) and until(job) and job,
            timeout=timeout,
            interval=0.1,
            what=f"job {job_id} condition",
        )

    def wait_terminal(self, job_id: int, timeout: float = 120) -> dict:
        return self.wait_job(job_id, lambda j: j["state"] in TERMINAL_JOB_STATES, timeout)


@pytest.fixture
def make_settings(
    tmp_path: Path, federation: SynthSummary, feature_cache: Path, hub: Hub
) -> Callable[..., NodeSettings]:
    """Settings for a node registered at the hub, reading the synthetic federation.

    ``token``: a node token registered elsewhere (the console); else the node is registered
    here under ``name``.
    """

    def make(name: str, token: str | None = None, **extra: Any) -> NodeSettings:
        values: dict[str, Any] = {
            "aggregator_url": hub.url,
            "node_token": token or hub.add_node(name),
            "admin_token": SITE_ADMIN,
            "data_roots": [federation.root],
            "data_dir": tmp_path / name,
            "feature_cache_dir": feature_cache,
            "model_store_dir": tmp_path / name / "model_store",
            "device": "cpu",
            "hub_retries": 2,
            "hub_backoff_seconds": 0.05,
            "hub_timeout_seconds": 10,
            "job_stale_seconds": 15,
            "poll_seconds": 0.3,
        }
        return NodeSettings(**(values | extra))

    return make


@pytest.fixture
def run_node() -> Iterator[Callable[[NodeSettings], Node]]:
    """Start node APIs (stopped at the end of the test)."""
    servers: list[ThreadedServer] = []

    def start(settings: NodeSettings) -> Node:
        server = ThreadedServer(create_node(settings)).__enter__()
        servers.append(server)
        return Node(server.url, settings)

    yield start
    for server in reversed(servers):
        server.__exit__(None, None, None)


_redis_databases = itertools.count(1)


@pytest.fixture
def broker_url(redis_url: str) -> str:
    """A Redis database of its own for each test, so no test sees another's messages."""
    return redis_url.rsplit("/", 1)[0] + f"/{next(_redis_databases) % 16}"


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[NodeSettings], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(settings: NodeSettings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
