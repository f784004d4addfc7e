"""The inference app's own pages (no model needed)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.inference_api.app import create_app
from services.inference_api.settings import InferenceSettings
from tests.support.offline_docs import assert_docs_work_offline


def test_api_docs_work_offline(tmp_path: Path) -> None:
    settings = InferenceSettings(
        model_store_dir=tmp_path / "store",
        clinician_tokens=["clinician"],
        audit_path=tmp_path / "audit.jsonl",
        device="cpu",
        aggregator_url="",
    )
    with TestClient(create_app(settings)) as client:
        assert_docs_work_offline(client)
