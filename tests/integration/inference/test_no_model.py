"""Before any model exists the service is alive but not ready, and says why."""

from __future__ import annotations

import pytest

from fedmedclip.model_store import ModelStore
from tests.integration.inference.helpers import client, make_settings, metric_value, serve
from tests.support.model_store import publish_round
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_no_model_yet_is_503_then_the_first_model_is_picked_up(tmp_path, backbone, site):
    store_root = tmp_path / "store"
    with serve(make_settings(store_root, tmp_path), ready=False) as server, client(server) as http:
        assert http.get("/health").status_code == 200
        ready = http.get("/ready")
        assert ready.status_code == 503
        assert "no current.json" in ready.json()["detail"]
        image = site.image_paths[0].read_bytes()
        refused = http.post("/predict", files={"file": ("x.png", image)})
        assert refused.status_code == 503
        assert "no model loaded yet" in refused.json()["detail"]
        assert refused.headers["Retry-After"]
        assert http.get("/model").status_code == 503
        text = http.get("/metrics").text
        assert metric_value(text, "fedmedclip_inference_errors_total", kind="no_model") == 2

        # The node trains its first round; the service loads it without a restart.
        publish_round(ModelStore(store_root), backbone, site, global_version=1)
        wait_until(lambda: http.get("/ready").status_code == 200, timeout=120, what="ready")
        answered = http.post("/predict", files={"file": ("x.png", image)})
        assert answered.status_code == 200
        assert answered.json()["model"]["global_version"] == 1
