"""Fuzzing all three services from their OpenAPI schemas, each behind a real uvicorn server.

Every operation of each app is fuzzed (see :mod:`tests.reliability.fuzzing` for the
properties checked). The operation lists are written out so that a new route cannot go
unfuzzed: ``test_every_operation_is_fuzzed`` compares them with the live schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.hospital_node.app import create_app as create_node
from services.hospital_node.settings import NodeSettings
from services.inference_api.app import create_app as create_inference
from tests.integration.inference.helpers import ADMIN as INFERENCE_ADMIN
from tests.integration.inference.helpers import CLINICIAN, make_settings
from tests.reliability.fuzzing import fuzz_operation, load_schema, operation_labels
from tests.reliability.support import threaded_hub
from tests.support.hub import ADMIN, ADMIN_TOKEN, bearer, encoded
from tests.support.processes import ThreadedServer, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE_ADMIN = "site-admin-token-for-fuzzing"
OPEN = {"GET /health", "GET /ready", "GET /metrics"}
NODE_ONLY = {
    "GET /api/v1/nodes/me",
    "POST /api/v1/rounds/{round_id}/updates",
    "GET /api/v1/rounds/{round_id}/secagg",
    "POST /api/v1/rounds/{round_id}/secagg/{phase}",
}

# Reads first, then writes, destructive operations last, so that most run on a live state.
AGGREGATOR_OPERATIONS = [
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /api/v1/task",
    "GET /api/v1/nodes",
    "GET /api/v1/nodes/me",
    "GET /api/v1/rounds",
    "GET /api/v1/rounds/{round_id}",
    "GET /api/v1/models",
    "GET /api/v1/models/production",
    "GET /api/v1/models/{version}",
    "GET /api/v1/models/{version}/blob",
    "GET /api/v1/audit",
    "GET /api/v1/rounds/{round_id}/secagg",
    "POST /api/v1/rounds/{round_id}/secagg/{phase}",
    "POST /api/v1/rounds/{round_id}/updates",
    "POST /api/v1/nodes",
    "PUT /api/v1/task",
    "POST /api/v1/models/{version}/promote",
    "POST /api/v1/models/rollback",
    "POST /api/v1/rounds/{round_id}/recover",
    "POST /api/v1/rounds/{round_id}/close",
    "POST /api/v1/rounds/{round_id}/cancel",
    "POST /api/v1/rounds",
    "POST /api/v1/nodes/{node_id}/token",
    "DELETE /api/v1/nodes/{node_id}",
]
NODE_OPERATIONS = [
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /api/v1/datasets",
    "GET /api/v1/jobs",
    "GET /api/v1/jobs/{job_id}",
    "GET /api/v1/model",
    "GET /api/v1/privacy",
    "POST /api/v1/datasets",
    "POST /api/v1/jobs",
]
INFERENCE_OPERATIONS = [
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /model",
    "POST /predict",
    "POST /predict/batch",
    "POST /model/reload",
    "GET /monitoring",
    "POST /predictions/{prediction_id}/feedback",
]


@dataclass
class Service:
    """A running app, its schema and how to authenticate to it."""

    name: str
    url: str
    schema: schemathesis.BaseSchema
    tokens: dict[str, str]
    path_parameters: dict[str, Any]

    def auth(self, label: str) -> dict[str, str]:
        if label in OPEN:
            return {}
        return bearer(self.tokens.get(label, self.tokens["default"]))


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A hub with a published version 1, an open round 2 and a node the fuzzer may revoke."""
    with threaded_hub(tmp_path_factory.mktemp("fuzz-hub")) as (server, hub):
        alpha = hub.add_node("alpha")
        hub.add_node("sacrificial")
        first = hub.open_round(min_clients=1, deadline_seconds=3600)["id"]
        assert hub.post_update(first, alpha, encoded(1), key="seed").status_code == 201
        assert hub.close(first).json()["result_version"] == 1
        second = hub.open_round(min_clients=1, deadline_seconds=3600, base_version=1)["id"]
        listed = hub.client.get("/api/v1/nodes", headers=ADMIN).json()
        sacrificial = next(n["id"] for n in listed if n["name"] == "sacrificial")
        tokens = {"default": ADMIN_TOKEN} | {label: alpha for label in NODE_ONLY}
        known = {"round_id": second, "version": 1, "node_id": sacrificial}
        schema = load_schema(server.server.config.app)
        yield Service("aggregator", server.url, schema, tokens, known)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A node API (embedded jobs) registered at a real hub, with one empty data root."""
    root = tmp_path_factory.mktemp("fuzz-node")
    with threaded_hub(root / "hub") as (hub_server, hub):
        (root / "data").mkdir()
        settings = NodeSettings(
            aggregator_url=hub_server.url,
            node_token=hub.add_node("site"),
            admin_token=SITE_ADMIN,
            data_roots=[root / "data"],
            data_dir=root / "node",
            model_store_dir=root / "node" / "model_store",
            device="cpu",
            hub_retries=0,
            hub_timeout_seconds=10,
        )
        app = create_node(settings)
        with ThreadedServer(app) as server:
            yield Service("node", server.url, load_schema(app), {"default": SITE_ADMIN}, {})


@pytest.fixture(scope="module")
def inference(tmp_path_factory: pytest.TempPathFactory, trained_store: Path) -> Iterator[Service]:
    """The inference API serving a trained model store."""
    workdir = tmp_path_factory.mktemp("fuzz-inference")
    app = create_inference(make_settings(trained_store, workdir))
    with ThreadedServer(app) as server:
        wait_until(lambda: http_ok(f"{server.url}/ready"), timeout=120, what="model loaded")
        tokens = {"default": CLINICIAN, "POST /model/reload": INFERENCE_ADMIN}
        yield Service("inference", server.url, load_schema(app), tokens, {})


SERVICES = {
    "aggregator": AGGREGATOR_OPERATIONS,
    "node": NODE_OPERATIONS,
    "inference": INFERENCE_OPERATIONS,
}
CASES = [
    pytest.param(name, label, id=f"{name}:{label}")
    for name, labels in SERVICES.items()
    for label in labels
]


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_operation_is_fuzzed(name: str, request: pytest.FixtureRequest) -> None:
    service: Service = request.getfixturevalue(name)
    assert operation_labels(service.schema) == sorted(SERVICES[name])


@pytest.mark.parametrize(("name", "label"), CASES)
def test_fuzz_operation(name: str, label: str, request: pytest.FixtureRequest, figures) -> None:
    service: Service = request.getfixturevalue(name)
    result = fuzz_operation(
        service.schema,
        label,
        service.url,
        auth=service.auth(label),
        protected=label not in OPEN,
        path_parameters=service.path_parameters,
    )
    figures.add(f"fuzz.{name}.operations")
    figures.add(f"fuzz.{name}.examples", result.examples)
    figures.add(f"fuzz.{name}.auth_probes", result.auth_probes)
    for status, count in result.statuses.items():
        figures.add(f"fuzz.{name}.status.{status}", count)
    assert result.examples > 0
    assert not result.failures, result.report()


# Validation errors are answered with our own body (one sentence + the field list); the
# OpenAPI must document that body, not FastAPI's default HTTPValidationError.
MALFORMED = [
    pytest.param("aggregator", "PUT /api/v1/task", {"class_names": "not a list"}, id="aggregator"),
    pytest.param("node", "POST /api/v1/datasets", {"path": ["not", "a", "path"]}, id="node"),
]


@pytest.mark.parametrize(("name", "label", "body"), MALFORMED)
def test_validation_errors_match_the_documented_schema(
    name: str, label: str, body: Any, request: pytest.FixtureRequest
) -> None:
    service: Service = request.getfixturevalue(name)
    method, path = label.split(" ", 1)
    response = httpx.request(
        method, service.url + path, json=body, headers=service.auth(label), timeout=30
    )
    assert response.status_code == 422
    operation = service.schema.find_operation_by_label(label)
    case = operation.Case(body=body, media_type="application/json")
    try:
        case.validate_response(response, checks=[response_schema_conformance])
    except FailureGroup as group:
        pytest.fail("; ".join(f.title for f in group.exceptions) + f": {response.text}")
