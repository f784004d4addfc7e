"""One training job is one trace: its hub requests share a trace id, and so do the hub's
log lines for them, so a round can be followed from the site to the hub in the logs.

The job continues the trace of the admin's ``POST /api/v1/jobs`` (whose check of the round
at the hub is the trace's first hub request)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from services.common.structured_logging import JsonFormatter, RequestIdFilter
from services.common.tracing import parse_traceparent
from tests.integration.node.recording_proxy import RecordingProxy
from tests.support.processes import ThreadedServer

pytestmark = pytest.mark.integration


@pytest.fixture
def log_lines():
    """Every service's log lines in this process, as JSON (the services' own formatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


@pytest.mark.slow
def test_a_jobs_hub_requests_and_hub_log_lines_share_one_trace(
    hub, federation, make_settings, run_node, log_lines
):
    proxy = RecordingProxy(hub.url)
    with ThreadedServer(proxy) as proxy_server:
        node = run_node(make_settings("hospital-a", aggregator_url=proxy_server.url))
        assert node.register(federation.hospital_dirs[0]).status_code == 201
        before_job = len(proxy.requests)
        round_id = hub.open_round()["id"]
        job = node.wait_terminal(node.start_job(round_id)["id"])
    assert job["state"] == "done", job

    sent = proxy.requests[before_job:]
    contexts = [parse_traceparent(r.headers.get("traceparent")) for r in sent]
    assert len(sent) >= 4 and all(contexts), [r.headers for r in sent]
    (trace_id,) = {c.trace_id for c in contexts}
    assert len({c.span_id for c in contexts}) == len(sent), "a new span per request"
    assert trace_id not in {
        c.trace_id
        for c in (
            parse_traceparent(r.headers.get("traceparent")) for r in proxy.requests[:before_job]
        )
    }, "the dataset check before the job was another trace"

    lines = log_lines()
    hub_access = [
        (line["message"].split()[0], line["path"])
        for line in lines
        if line["logger"] == "services.aggregator.access" and line.get("trace_id") == trace_id
    ]
    assert hub_access == [(r.method, r.path) for r in sent]
    node_job = [line for line in lines if line["logger"] == "services.hospital_node.jobs"]
    assert node_job and all(line.get("trace_id") == trace_id for line in node_job)
