"""A new model is loaded in the background and swapped in under load, losing no request."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.inference.helpers import client, make_settings, metric_value, serve
from tests.support.model_store import publish_round
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration

CLIENTS = 16
PREDICTIONS = "fedmedclip_inference_predictions_total"


@pytest.mark.slow
def test_swap_under_concurrent_requests(store, backbone, site, tmp_path):
    images = [p.read_bytes() for p in site.image_paths[:CLIENTS]]
    settings = make_settings(store.root, tmp_path, batch_window_ms=10)
    with serve(settings) as server, client(server) as http:
        swapped = threading.Event()

        def hammer(index: int) -> list[tuple[int, tuple[int, int]]]:
            """Predict until some time after the swap; return (status, versions) per call."""
            seen = []
            after_swap = 0
            while after_swap < 3 and len(seen) < 400:
                response = http.post("/predict", files={"file": ("x.png", images[index])})
                model = response.json().get("model", {}) if response.status_code == 200 else {}
                seen.append(
                    (response.status_code, (model.get("global_version"), model.get("head_version")))
                )
                after_swap += swapped.is_set()
            return seen

        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(hammer, i) for i in range(CLIENTS)]
            wait_until(
                lambda: metric_value(http.get("/metrics").text, PREDICTIONS) >= CLIENTS,
                timeout=120,
                what="first predictions",
            )
            # The node finishes a round: new global v2, new head 2, current.json -> (2, 2).
            publish_round(store, backbone, site, global_version=2, seed=1)
            wait_until(
                lambda: http.get("/ready").json().get("global_version") == 2,
                timeout=120,
                what="model v2 loaded",
            )
            swapped.set()
            results = [f.result() for f in futures]

        calls = [call for per_client in results for call in per_client]
        assert all(status == 200 for status, _ in calls), {s for s, _ in calls}
        versions = [v for _, v in calls]
        assert set(versions) == {(1, 1), (2, 2)}  # never a mix of old and new parts
        for per_client in results:
            order = [v for _, v in per_client]
            # Each client's last calls started after the swap and see v2; once a client
            # has seen v2 it never sees v1 again (a swap is one reference assignment).
            assert order[-1] == (2, 2)
            first_new = order.index((2, 2))
            assert all(v == (2, 2) for v in order[first_new:])
        text = http.get("/metrics").text
        assert metric_value(text, "fedmedclip_inference_model_reloads_total", outcome="loaded") == 2
        assert metric_value(text, "fedmedclip_inference_errors_total", kind="internal") == 0
