"""Node faults with real processes: a Celery worker SIGKILLed mid-task, Redis crashing.

The node API runs in a thread (uvicorn), the hub too; the worker is a real
``fedmedclip node worker`` subprocess on a private redis-server that the test crashes and
starts again on the same port. A job must always end ``done`` or ``failed`` with a reason,
and the hub must never count a node's update twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedmedclip.data.synth import SynthSummary, synthesize_federation
from fedmedclip.enums import TERMINAL_JOB_STATES
from fedmedclip.schemas import TaskSpec
from services.hospital_node.app import create_app as create_node
from services.hospital_node.settings import NodeSettings
from tests.reliability.support import RedisProcess, threaded_hub
from tests.support.hub import ADMIN, Hub, bearer
from tests.support.processes import ThreadedServer, WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE_ADMIN = "site-admin-token-for-faults"
SLOW = {"local_epochs": 4, "batch_size": 2}
"""Training of a few seconds (0.3 to 8 s an epoch, with the machine's load), to strike in."""


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return synthesize_federation(
        tmp_path_factory.mktemp("faults") / "federation",
        hospitals=1,
        classes=3,
        per_hospital=40,
        image_size=64,
        seed=5,
    )


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@dataclass
class Site:
    """A hub, a node API on a broker, and the processes the test breaks."""

    hub: Hub
    node: httpx.Client
    settings: NodeSettings
    redis: RedisProcess
    start_worker: Callable[[], WorkerProcess]

    def job(self, job_id: int) -> dict:
        return self.node.get(f"/api/v1/jobs/{job_id}").json()

    def wait(self, job_id: int, until: Callable[[dict], bool], timeout: float) -> dict:
        return wait_until(
            lambda: (job := self.job(job_id)) and until(job) and job,
            timeout=timeout,
            interval=0.1,
            what=f"job {job_id}",
        )

    def start_job(self, round_id: int) -> int:
        response = self.node.post("/api/v1/jobs", json={"round_id": round_id})
        assert response.status_code == 202, response.text
        return response.json()["id"]


def _running(job: dict) -> bool:
    """Claimed by a worker and not yet uploading: loading, embedding or training."""
    return job["state"] == "running"


@pytest.fixture
def site_factory(
    tmp_path: Path, federation: SynthSummary, feature_cache: Path
) -> Iterator[Callable[..., Site]]:
    stack: list[Any] = []

    def make(*, appendonly: bool) -> Site:
        redis = RedisProcess(tmp_path / "redis", appendonly=appendonly)
        redis.start()
        stack.append(redis)
        task = TaskSpec(class_names=federation.class_names, backbone="ViT-S-32")
        hub_context = threaded_hub(tmp_path / "hub", task=task)
        hub_server, hub = hub_context.__enter__()
        stack.append(hub_context)
        settings = NodeSettings(
            aggregator_url=hub_server.url,
            node_token=hub.add_node("hospital"),
            admin_token=SITE_ADMIN,
            broker_url=redis.url,
            data_roots=[federation.root],
            data_dir=tmp_path / "node",
            feature_cache_dir=feature_cache,
            model_store_dir=tmp_path / "node" / "model_store",
            device="cpu",
            hub_retries=3,
            hub_backoff_seconds=0.2,
            hub_timeout_seconds=30,
            job_stale_seconds=5,
            poll_seconds=0.3,
        )
        server = ThreadedServer(create_node(settings)).__enter__()
        stack.append(server)
        node = httpx.Client(base_url=server.url, headers=bearer(SITE_ADMIN), timeout=30)
        stack.append(node)
        registered = node.post("/api/v1/datasets", json={"path": str(federation.hospital_dirs[0])})
        assert registered.status_code == 201, registered.text

        def start_worker() -> WorkerProcess:
            worker = WorkerProcess(settings, tmp_path / f"worker-{len(stack)}.log")
            stack.append(worker)
            return worker

        return Site(hub, node, settings, redis, start_worker)

    yield make
    for item in reversed(stack):
        if isinstance(item, (WorkerProcess, RedisProcess)):
            item.stop()
        elif isinstance(item, httpx.Client):
            item.close()
        else:
            item.__exit__(None, None, None)


def test_killed_worker_and_crashed_redis_lose_no_job_and_count_no_update_twice(
    site_factory, figures
):
    site = site_factory(appendonly=True)
    round_id = site.hub.open_round(min_clients=1, hints=SLOW, deadline_seconds=3600)["id"]

    # 1. The worker is SIGKILLed mid-task: the job fails visibly, nothing is uploaded.
    first_worker = site.start_worker()
    first = site.start_job(round_id)
    site.wait(first, _running, timeout=180)
    first_worker.kill()
    failed = site.wait(first, lambda j: j["state"] in TERMINAL_JOB_STATES, timeout=60)
    assert failed["state"] == "failed" and "worker lost" in failed["error"], failed
    assert site.hub.round(round_id)["updates_received"] == 0

    # 2. A new worker retries the round; Redis crashes while the job runs and comes back.
    worker = site.start_worker()
    second = site.start_job(round_id)
    site.wait(second, _running, timeout=180)
    site.redis.kill()
    ready = site.node.get("/ready")
    assert ready.status_code == 503 and "error" in ready.json()["checks"]["broker"]
    time.sleep(1.0)
    site.redis.start()
    done = site.wait(second, lambda j: j["state"] in TERMINAL_JOB_STATES, timeout=180)
    assert done["state"] == "done", (done, worker.log())
    assert site.node.get("/ready").status_code == 200

    # 3. Whatever the broker redelivers now, the hub holds exactly one update from the node.
    time.sleep(3.0)
    assert site.hub.round(round_id)["updates_received"] == 1
    states = sorted(j["state"] for j in site.node.get("/api/v1/jobs").json())
    assert states == ["done", "failed"]
    closed = site.hub.close(round_id).json()
    assert closed["state"] == "published" and closed["updates_received"] == 1
    info = site.hub.client.get(f"/api/v1/models/{closed['result_version']}", headers=ADMIN)
    assert info.json()["contributors"] == ["hospital"]
    assert done["update_sha256"] == info.json()["update_hashes"][0]
    figures.add("faults.celery_worker_sigkill")
    figures.add("faults.redis_crash_restart")


def test_a_job_queued_when_redis_loses_its_data_is_not_silently_lost(site_factory):
    site = site_factory(appendonly=False)
    round_id = site.hub.open_round(min_clients=1, deadline_seconds=3600)["id"]
    job_id = site.start_job(round_id)  # no worker yet: the message waits in Redis
    assert site.job(job_id)["state"] == "queued"
    site.redis.kill()
    site.redis.start()  # empty: the message is gone
    site.start_worker()
    try:
        # The agent re-sends the lost message after job_stale_seconds; then the job trains.
        job = site.wait(job_id, lambda j: j["state"] in TERMINAL_JOB_STATES, timeout=180)
    except TimeoutError:
        pytest.fail(f"job {job_id} is still {site.job(job_id)['state']!r} after 180 s")
    assert job["state"] == "done" or job["error"]
