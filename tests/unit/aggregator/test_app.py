"""The app exposes the hub contract in its OpenAPI document (no database needed)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from tests.support.offline_docs import assert_docs_work_offline

CONTRACT = {
    ("put", "/api/v1/task"),
    ("get", "/api/v1/task"),
    ("post", "/api/v1/nodes"),
    ("get", "/api/v1/nodes"),
    ("delete", "/api/v1/nodes/{node_id}"),
    ("get", "/api/v1/nodes/me"),
    ("post", "/api/v1/rounds"),
    ("get", "/api/v1/rounds"),
    ("get", "/api/v1/rounds/{round_id}"),
    ("post", "/api/v1/rounds/{round_id}/close"),
    ("post", "/api/v1/rounds/{round_id}/cancel"),
    ("post", "/api/v1/rounds/{round_id}/updates"),
    ("get", "/api/v1/models"),
    ("get", "/api/v1/models/{version}"),
    ("get", "/api/v1/models/{version}/blob"),
    ("get", "/api/v1/models/production"),
    ("post", "/api/v1/models/{version}/promote"),
    ("post", "/api/v1/models/rollback"),
    ("get", "/api/v1/audit"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
}


def test_openapi_documents_every_contract_route(tmp_path) -> None:
    app = create_app(AggregatorSettings(data_dir=tmp_path, admin_token="x"))
    schema = app.openapi()
    routes = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert not CONTRACT - routes, CONTRACT - routes
    upload = schema["paths"]["/api/v1/rounds/{round_id}/updates"]["post"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    headers = {p["name"] for p in upload["parameters"] if p["in"] == "header"}
    assert {"X-Sample-Count", "Idempotency-Key", "X-Local-Metrics"} <= headers
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_api_docs_work_offline(tmp_path) -> None:
    app = create_app(AggregatorSettings(data_dir=tmp_path, admin_token="x"))
    with TestClient(app) as client:
        assert_docs_work_offline(client)
