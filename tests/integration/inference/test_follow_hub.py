"""With AGGREGATOR_URL set, the service serves the hub's production global version.

Runs the real aggregator (SQLite) under uvicorn: the task's version 0 is production first;
then a round publishes version 1 and the admin promotes it, and the inference API
downloads it (sha256-checked) into the site's store and swaps to it.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from fedmedclip.codec import encode_update
from fedmedclip.model import expected_shapes
from fedmedclip.model_store import ModelStore
from services.aggregator.app import create_app as create_hub
from services.aggregator.settings import AggregatorSettings
from tests.integration.inference.helpers import client, make_settings, serve
from tests.support.model_store import publish_round
from tests.support.processes import ThreadedServer, wait_until

pytestmark = pytest.mark.integration

HUB_ADMIN = "hub-admin-token"


def _ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def _publish_version_1(hub: httpx.Client, node_token: str, task) -> int:
    """One round with one small update from this site, closed and aggregated."""
    round_info = _ok(
        hub.post("/api/v1/rounds", json={"min_clients": 1, "deadline_seconds": 600}), 201
    )
    generator = torch.Generator().manual_seed(0)
    delta = {
        name: 0.01 * torch.randn(shape, generator=generator)
        for name, shape in expected_shapes(task.adapter_config()).items()
    }
    _ok(
        hub.post(
            f"/api/v1/rounds/{round_info['id']}/updates",
            content=encode_update(delta, base_version=0, quantization="int8", level=3),
            headers={
                "Authorization": f"Bearer {node_token}",
                "Content-Type": "application/octet-stream",
                "X-Sample-Count": "24",
                "Idempotency-Key": "site-a-round-1",
            },
        ),
        201,
    )
    hub.post(f"/api/v1/rounds/{round_info['id']}/close")

    def result_version() -> int | None:
        return hub.get(f"/api/v1/rounds/{round_info['id']}").json()["result_version"]

    return wait_until(result_version, timeout=60, what="round aggregated")


@pytest.mark.slow
def test_follows_the_production_version_of_the_hub(backbone, site, tmp_path):
    hub_settings = AggregatorSettings(data_dir=tmp_path / "hub", admin_token=HUB_ADMIN)
    with (
        ThreadedServer(create_hub(hub_settings)) as hub_server,
        httpx.Client(
            base_url=hub_server.url, headers={"Authorization": f"Bearer {HUB_ADMIN}"}, timeout=60
        ) as hub,
    ):
        _ok(hub.put("/api/v1/task", json=site.task.model_dump(mode="json")))
        node_token = _ok(hub.post("/api/v1/nodes", json={"name": "site-a"}), 201)["token"]
        # The site's own store numbers its local versions far from the hub's.
        store_root = tmp_path / "site-store"
        site_store = ModelStore(store_root)
        publish_round(site_store, backbone, site, global_version=100)

        settings = make_settings(
            store_root, tmp_path, aggregator_url=hub_server.url, node_token=node_token
        )
        with serve(settings) as server, client(server) as http:
            model = _ok(http.get("/model"))
            assert (model["global_version"], model["head_version"]) == (0, 1)
            hub_zero = _ok(hub.get("/api/v1/models/0"))
            assert model["global_sha256"] == hub_zero["blob_sha256"]
            assert site_store.load_global(0).sha256 == hub_zero["blob_sha256"]

            # Before any round the admin may reset the task: a new version 0 replaces the
            # old one under the same number; the site notices by its sha256.
            reseeded = site.task.model_copy(
                update={"fam": site.task.fam.model_copy(update={"seed": 1})}
            )
            _ok(hub.put("/api/v1/task", json=reseeded.model_dump(mode="json")))
            new_zero = _ok(hub.get("/api/v1/models/0"))["blob_sha256"]
            assert new_zero != hub_zero["blob_sha256"]
            wait_until(
                lambda: http.get("/model").json()["global_sha256"] == new_zero,
                timeout=60,
                what="reset version 0 served",
            )
            assert site_store.load_global(0).sha256 == new_zero

            version = _publish_version_1(hub, node_token, reseeded)
            assert version == 1
            image = site.image_paths[0].read_bytes()
            before = _ok(http.post("/predict", files={"file": ("x.png", image)}))
            assert before["model"]["global_version"] == 0  # published is not production yet

            _ok(hub.post(f"/api/v1/models/{version}/promote"))
            wait_until(
                lambda: http.get("/ready").json().get("global_version") == 1,
                timeout=60,
                what="production v1 served",
            )
            after = _ok(http.post("/predict", files={"file": ("x.png", image)}))
            assert (after["model"]["global_version"], after["model"]["head_version"]) == (1, 1)
            assert site_store.has_global(1)
            assert site_store.current().global_version == 100  # the node's pointer untouched
