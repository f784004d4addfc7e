"""Everything a node sends to the hub, captured by a recording proxy in front of it.

Only the encoded FAM delta may leave a hospital: no private head weights, no images and
no image features. The update is decoded with the hub's own strict checks, which refuse
any tensor name or byte that the FAM's shapes do not account for.
"""

from __future__ import annotations

import json

import pytest

from fedmedclip.codec import decode_update, read_header
from fedmedclip.model import expected_shapes
from fedmedclip.model_store import ModelStore
from fedmedclip.schemas import TaskSpec
from tests.integration.node.recording_proxy import RecordingProxy
from tests.support.processes import ThreadedServer

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_only_fam_tensors_leave_the_site(hub, federation, make_settings, run_node):
    proxy = RecordingProxy(hub.url)
    with ThreadedServer(proxy) as proxy_server:
        node = run_node(make_settings("hospital-a", aggregator_url=proxy_server.url))
        assert node.register(federation.hospital_dirs[0]).status_code == 201
        round_info = hub.open_round()
        job = node.wait_terminal(node.start_job()["id"])
    assert job["state"] == "done", job

    bodies = [r for r in proxy.requests if r.body]
    assert [(r.method, r.path) for r in bodies] == [
        ("POST", f"/api/v1/rounds/{round_info['id']}/updates")
    ], "the only request with a body is the update"
    assert all(r.method == "GET" and not r.body for r in proxy.requests if r not in bodies)
    assert not any(r.query and "image" in r.query.lower() for r in proxy.requests)

    update = bodies[0]
    task = TaskSpec.model_validate(hub.call("GET", "/api/v1/task"))
    shapes = expected_shapes(task.adapter_config())
    decoded = decode_update(update.body, expected_shapes=shapes, base_version=0)
    assert set(decoded.delta) == set(shapes)
    # The FAM, the prototype offset, and the class statistics (docs/method.md) only.
    assert all(
        name.startswith(("fam.", "prototype_offset", "class_stats.")) for name in decoded.delta
    )
    header = read_header(update.body)
    assert header["quantization"] == task.fam.quantization
    assert set(header) == {
        "format_version",
        "base_version",
        "quantization",
        "tensors",
        "raw_body_bytes",
        "body_sha256",
        "_body_offset",
    }, "no extra fields ride along in the header"
    for entry in header["tensors"]:  # a statistics tensor names its own (finer) encoding
        extra = {"quantization"} if entry["name"].startswith("class_stats.") else set()
        assert set(entry) == {"name", "shape", "rows_kept"} | extra, entry

    head = ModelStore(node.settings.model_store_dir).load_head(job["head_version"])
    assert not set(head.tensors) & set(decoded.delta), "head tensor names never appear"
    assert len(update.body) < 0.5 * sum(t.numel() * 4 for t in head.tensors.values())
    image_bytes = [p.read_bytes() for p in sorted(federation.hospital_dirs[0].rglob("*.png"))]
    assert b"\x89PNG" not in update.body
    assert not any(img[-64:] in update.body for img in image_bytes)

    assert update.headers["x-sample-count"] == str(job["sample_count"])
    metrics = json.loads(update.headers["x-local-metrics"])
    assert metrics == job["metrics"]
    assert all(isinstance(v, float) for v in metrics.values())
    assert update.headers["idempotency-key"] == f"job-{job['id']}-round-{round_info['id']}"
    allowed = {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "x-sample-count",
        "x-local-metrics",
        "idempotency-key",
        "traceparent",  # random ids that join the hub's log lines to the job's
    }
    assert set(update.headers) <= allowed
