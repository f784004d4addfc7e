"""Two hospital nodes complete a federated round against a real hub.

Node A runs its job in a real Celery worker on Redis (started by POST /api/v1/jobs);
node B runs jobs in-process and joins the round by itself (auto-join agent).
"""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from fedmedclip.ensemble import CombinationKind
from fedmedclip.heads import unpack_heads
from fedmedclip.model_store import ModelStore
from fedmedclip.schemas import TaskSpec
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_two_nodes_complete_a_round(
    hub, federation, make_settings, run_node, broker_url, start_worker
):
    settings_a = make_settings("hospital-a", broker_url=broker_url)
    worker = start_worker(settings_a)
    node_a = run_node(settings_a)
    node_b = run_node(make_settings("hospital-b", auto_join=True))
    for node, folder in zip((node_a, node_b), federation.hospital_dirs, strict=True):
        response = node.register(folder)
        assert response.status_code == 201, response.text
        assert response.json()["n_images"] == 40

    round_info = hub.open_round(min_clients=2)
    job_a = node_a.start_job()
    assert job_a["state"] == "queued" and job_a["round_id"] == round_info["id"]
    job_b = wait_until(
        lambda: node_b.http.get("/api/v1/jobs").json(), timeout=30, what="agent joins the round"
    )[0]
    assert job_b["trigger"] == "agent" and job_b["round_id"] == round_info["id"]

    done_a = node_a.wait_terminal(job_a["id"], timeout=180)
    done_b = node_b.wait_terminal(job_b["id"], timeout=180)
    assert done_a["state"] == "done", (done_a, worker.log()[-3000:])
    assert done_b["state"] == "done", done_b
    for job in (done_a, done_b):
        assert job["progress"]["percent"] == 100.0
        assert job["progress"]["epoch"] == job["progress"]["epochs"] == 2
        assert job["head_version"] == 1 and job["base_version"] == 0
        assert 0.0 <= job["metrics"]["test_accuracy"] <= 1.0
        assert job["sample_count"] > 0 and job["update_bytes"] > 0

    assert hub.round(round_info["id"])["updates_received"] == 2
    closed = hub.call("POST", f"/api/v1/rounds/{round_info['id']}/close")
    assert closed["state"] == "published" and closed["result_version"] == 1
    model = hub.call("GET", "/api/v1/models/1")
    assert model["parent_version"] == 0
    assert sorted(model["contributors"]) == ["hospital-a", "hospital-b"]

    for node in (node_a, node_b):
        served = node.http.get("/api/v1/model").json()
        assert served["global_version"] == 0 and served["head_version"] == 1
        store = ModelStore(node.settings.model_store_dir)
        assert store.current().head_version == 1
        head = store.load_head(1)
        assert head.meta.global_version == 0 and head.meta.round_id == round_info["id"]
        assert head.meta.class_names == federation.class_names
        # The site's choice of how to combine its branches is recorded for the inference API.
        assert head.meta.combination.kind in get_args(CombinationKind)
        # Scored with the base version's class statistics, as served: version 0 has none, so
        # the site's own (sent in its update) cannot make the choice.
        assert not head.meta.combination.uses_statistics
        # Beside the federated head the site keeps its local head (trained alone), which
        # loads back with the version-0 FAM.
        task = TaskSpec.model_validate(hub.call("GET", "/api/v1/task"))
        federated, local = unpack_heads(head.tensors, task.adapter_config(), task.fam.seed)
        assert local is not None
        assert not torch.equal(local.head.out.weight, federated.out.weight)
        assert served["head"]["sha256"] == head.sha256

    # The agent follows the federation: a promoted version lands in node B's store.
    hub.call("POST", "/api/v1/models/1/promote")
    store_b = ModelStore(node_b.settings.model_store_dir)
    wait_until(lambda: store_b.has_global(1), timeout=30, what="node B pulls production v1")
    assert store_b.load_global(1).sha256 == model["blob_sha256"]
