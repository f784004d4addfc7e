"""Load: 50 nodes upload to one round at once; 32 clinicians query the inference API at once.

Bounded in count (every client sends a fixed number of requests) and in time (client
timeouts), on loopback only.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from pathlib import Path

import httpx
import pytest

from fedmedclip.model_store import ModelStore
from tests.integration.inference.helpers import CLINICIAN, make_settings, metric_value, serve
from tests.reliability.support import threaded_hub
from tests.support.hub import ADMIN, bearer, encoded

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UPLOADERS = 50
CLINICIANS = 32
REQUESTS_PER_CLINICIAN = 3


async def _upload_all(url: str, round_id: int, tokens: dict[str, str], bodies: dict[str, bytes]):
    """Every node posts its update at the same moment; returns (status, seconds) per node."""
    start = asyncio.Event()
    limits = httpx.Limits(max_connections=UPLOADERS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def one(name: str) -> tuple[str, int, float]:
            await start.wait()
            began = time.perf_counter()
            response = await http.post(
                f"/api/v1/rounds/{round_id}/updates",
                content=bodies[name],
                headers={
                    **bearer(tokens[name]),
                    "X-Sample-Count": "10",
                    "Idempotency-Key": name,
                    "Content-Type": "application/octet-stream",
                },
            )
            return name, response.status_code, time.perf_counter() - began

        tasks = [asyncio.create_task(one(name)) for name in tokens]
        await asyncio.sleep(0.1)
        start.set()
        return await asyncio.gather(*tasks)


def test_fifty_concurrent_uploads_are_each_stored_exactly_once(tmp_path: Path, figures):
    with threaded_hub(tmp_path / "hub") as (server, hub):
        names = [f"hospital-{i:02d}" for i in range(UPLOADERS)]
        tokens = {name: hub.add_node(name) for name in names}
        bodies = {name: encoded(seed) for seed, name in enumerate(names)}
        round_id = hub.open_round(min_clients=UPLOADERS, deadline_seconds=600)["id"]

        began = time.perf_counter()
        first = asyncio.run(_upload_all(server.url, round_id, tokens, bodies))
        wall = time.perf_counter() - began
        assert sorted(status for _, status, _ in first) == [201] * UPLOADERS, first
        assert hub.round(round_id)["updates_received"] == UPLOADERS

        # The same 50 again, at once (a retry storm after a network blip): all replays.
        again = asyncio.run(_upload_all(server.url, round_id, tokens, bodies))
        assert sorted(status for _, status, _ in again) == [200] * UPLOADERS, again
        assert hub.round(round_id)["updates_received"] == UPLOADERS
        assert hub.metric("fedmedclip_aggregator_updates_accepted_total") == UPLOADERS

        closed = hub.close(round_id).json()
        assert closed["state"] == "published" and closed["updates_received"] == UPLOADERS
        info = hub.client.get(f"/api/v1/models/{closed['result_version']}", headers=ADMIN).json()
        assert sorted(info["contributors"]) == names
        assert sorted(info["update_hashes"]) == sorted(
            hashlib.sha256(b).hexdigest() for b in bodies.values()
        )
    latencies = sorted(seconds for _, _, seconds in first)
    figures.set("load.aggregator.concurrent_uploads", UPLOADERS)
    figures.set("load.aggregator.stored", len(info["contributors"]))
    figures.set("load.aggregator.replays_not_counted", UPLOADERS)
    figures.set("load.aggregator.wall_seconds", round(wall, 2))
    figures.set("load.aggregator.p95_seconds", round(latencies[int(0.95 * UPLOADERS) - 1], 2))


def test_inference_api_holds_32_concurrent_clients(
    store: ModelStore, site, tmp_path: Path, figures
):
    images = [path.read_bytes() for path in site.image_paths]
    settings = make_settings(store.root, tmp_path, max_batch_size=16, batch_window_ms=10)
    with serve(settings) as server:

        async def clinicians() -> list[tuple[int, float]]:
            start = asyncio.Event()
            limits = httpx.Limits(max_connections=CLINICIANS)
            headers = bearer(CLINICIAN)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=120, limits=limits, headers=headers
            ) as http:

                async def one(index: int) -> list[tuple[int, float]]:
                    await start.wait()
                    results = []
                    for attempt in range(REQUESTS_PER_CLINICIAN):
                        image = images[(index * REQUESTS_PER_CLINICIAN + attempt) % len(images)]
                        began = time.perf_counter()
                        response = await http.post("/predict", files={"file": ("x.png", image)})
                        results.append((response.status_code, time.perf_counter() - began))
                        assert response.status_code != 200 or response.json()["label"]
                    return results

                tasks = [asyncio.create_task(one(i)) for i in range(CLINICIANS)]
                await asyncio.sleep(0.1)
                start.set()
                return [r for rs in await asyncio.gather(*tasks) for r in rs]

        began = time.perf_counter()
        results = asyncio.run(clinicians())
        wall = time.perf_counter() - began
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text

    total = CLINICIANS * REQUESTS_PER_CLINICIAN
    assert [status for status, _ in results] == [200] * total
    assert metric_value(metrics, "fedmedclip_inference_batch_size_sum") == total
    latencies = sorted(seconds for _, seconds in results)
    figures.set("load.inference.concurrent_clients", CLINICIANS)
    figures.set("load.inference.requests", total)
    figures.set("load.inference.errors", 0)
    figures.set("load.inference.wall_seconds", round(wall, 2))
    figures.set("load.inference.p50_seconds", round(statistics.median(latencies), 3))
    figures.set("load.inference.p95_seconds", round(latencies[int(0.95 * total) - 1], 3))
