"""The three apps as the error-model tests run them, and the checks those tests share.

Each app is served in-process with one extra route, ``GET /boom``, that fails unexpectedly
(what a 500 tells the caller); the hospital node's hub is an unused port, so nothing
answers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.aggregator.settings import AggregatorSettings
from services.common.problems import PROBLEM_MEDIA_TYPE
from services.hospital_node.settings import NodeSettings
from services.inference_api.settings import InferenceSettings
from tests.support.processes import free_port

HUB_ADMIN = {"Authorization": "Bearer hub-admin"}
HUB_UPLOAD_LIMIT = 64 * 1024
NODE_ADMIN = {"Authorization": "Bearer site-admin"}
NODE_TOKEN = "node"
CLINICIAN = {"Authorization": "Bearer clinician"}
INFERENCE_ADMIN = {"Authorization": "Bearer inference-admin"}
INFERENCE_MAX_UPLOAD = 16 * 1024
INFERENCE_MAX_FILES = 3


def hub_settings(tmp_path: Path) -> AggregatorSettings:
    return AggregatorSettings(
        data_dir=tmp_path, admin_token="hub-admin", max_upload_bytes=HUB_UPLOAD_LIMIT
    )


def node_settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        aggregator_url=f"http://127.0.0.1:{free_port()}",  # no hub: it is unreachable
        node_token=NODE_TOKEN,
        admin_token="site-admin",
        data_roots=[tmp_path],
        data_dir=tmp_path / "node",
        model_store_dir=tmp_path / "store",
        hub_retries=0,
        poll_seconds=60,
    )


def inference_settings(tmp_path: Path) -> InferenceSettings:
    """No model in the store, so no backbone is loaded."""
    return InferenceSettings(
        model_store_dir=tmp_path / "empty-store",
        clinician_tokens=["clinician"],
        admin_token="inference-admin",
        audit_path=tmp_path / "audit.jsonl",
        device="cpu",
        aggregator_url="",
        max_upload_bytes=INFERENCE_MAX_UPLOAD,
        max_files_per_request=INFERENCE_MAX_FILES,
    )


@contextmanager
def serve(app: FastAPI) -> Iterator[TestClient]:
    """``app`` with ``GET /boom``, started; server errors come back as answers."""

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is an ``application/problem+json`` answer with ``status`` and ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.text
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert body["type"] == f"urn:fedmedclip:problem:{code}"
    assert body["detail"] and body["title"] and body["request_id"]
    return body


def chunked(total: int, size: int = 64 * 1024, head: bytes = b"") -> Iterator[bytes]:
    """``head`` then ``total`` bytes, sent without a Content-Length (chunked)."""
    yield head
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


def assert_documents_problems(schema: dict[str, Any], path: str, method: str, *statuses: int):
    """The operation lists each status with the Problem body, and the bearer scheme."""
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    operation = schema["paths"][path][method]
    assert {"HTTPBearer": []} in operation["security"], path
    for status in statuses:
        content = operation["responses"][str(status)]["content"]
        assert content == {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "Problem" in schema["components"]["schemas"]
