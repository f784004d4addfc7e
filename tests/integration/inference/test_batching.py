"""Concurrent requests are grouped into micro-batches (and are not when batching is off)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.inference.helpers import client, make_settings, metric_value, serve

pytestmark = pytest.mark.integration

CLIENTS = 16
ROUNDS = 3


def _burst(server, images: list[bytes]) -> tuple[list[dict], str]:
    """CLIENTS threads post at the same moment, ROUNDS times; return bodies and metrics."""
    barrier = threading.Barrier(CLIENTS)
    with client(server) as http:

        def one_client(index: int) -> list[dict]:
            bodies = []
            for _ in range(ROUNDS):
                barrier.wait(timeout=60)
                response = http.post("/predict", files={"file": ("x.png", images[index])})
                assert response.status_code == 200, response.text
                bodies.append(response.json())
            return bodies

        with ThreadPoolExecutor(CLIENTS) as pool:
            bodies = [
                b for f in [pool.submit(one_client, i) for i in range(CLIENTS)] for b in f.result()
            ]
        return bodies, http.get("/metrics").text


@pytest.mark.slow
@pytest.mark.parametrize("max_batch_size", [16, 1])
def test_micro_batching_groups_concurrent_requests(store, site, tmp_path, max_batch_size):
    images = [p.read_bytes() for p in site.image_paths[:CLIENTS]]
    settings = make_settings(
        store.root, tmp_path, max_batch_size=max_batch_size, batch_window_ms=20
    )
    with serve(settings) as server:
        bodies, text = _burst(server, images)
    assert len(bodies) == CLIENTS * ROUNDS
    forwards = metric_value(text, "fedmedclip_inference_batch_size_count")
    images_run = metric_value(text, "fedmedclip_inference_batch_size_sum")
    assert images_run == CLIENTS * ROUNDS
    single = metric_value(text, "fedmedclip_inference_batch_size_bucket", le="1.0")
    if max_batch_size == 1:
        assert forwards == images_run == single
    else:
        assert images_run / forwards > 2  # far fewer forwards than images
        assert single < forwards  # some batches held more than one image
        assert metric_value(text, "fedmedclip_inference_batch_size_bucket", le="16.0") == forwards
