"""The FEDMEDCLIP_INFERENCE_* settings: environment, defaults, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.inference_api.settings import InferenceSettings


def test_settings_come_from_the_documented_environment_variables(monkeypatch):
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS", " t1, t2 ,,t3")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_MODEL_STORE_DIR", "/srv/store")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_MAX_PIXELS", "2000")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_BATCH_WINDOW_MS", "2.5")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_RELOAD_SECONDS", "3")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_LOG_JSON", "true")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_AGGREGATOR_URL", "http://hub:8100/")
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_NODE_TOKEN", "node-token")
    settings = InferenceSettings()
    assert [t.get_secret_value() for t in settings.clinician_tokens] == ["t1", "t2", "t3"]
    assert settings.model_store_dir == Path("/srv/store")
    assert (settings.max_upload_bytes, settings.max_pixels) == (1000, 2000)
    assert (settings.batch_window_ms, settings.max_batch_size) == (2.5, 8)
    assert settings.reload_seconds == 3 and settings.log_json
    assert settings.aggregator_url == "http://hub:8100" and settings.follows_hub
    assert "t1" not in repr(settings) and "node-token" not in repr(settings)


def test_defaults_match_the_documentation(monkeypatch):
    monkeypatch.setenv("FEDMEDCLIP_INFERENCE_CLINICIAN_TOKENS", "t1")
    settings = InferenceSettings()
    assert settings.model_store_dir == Path("./var/node/model_store")
    assert settings.max_upload_bytes == 20971520
    assert settings.max_pixels == 50_000_000
    assert (settings.batch_window_ms, settings.max_batch_size) == (5, 16)
    assert (settings.device, settings.backbone_weights) == ("auto", "none")
    assert settings.reload_seconds == 10 and not settings.follows_hub


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clinician_tokens": ""}, "clinician_tokens"),
        ({"clinician_tokens": "a", "admin_token": "a"}, "admin_token must differ"),
        ({"clinician_tokens": "a", "aggregator_url": "http://hub"}, "node_token"),
        ({"clinician_tokens": "a", "aggregator_url": "hub:8100"}, "http://"),
        ({"clinician_tokens": "a", "max_batch_size": 0}, "max_batch_size"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(monkeypatch, overrides, message):
    for name in (
        "CLINICIAN_TOKENS",
        "AGGREGATOR_URL",
        "NODE_TOKEN",
        "AGGREGATOR_TOKEN",
        "ADMIN_TOKEN",
    ):
        monkeypatch.delenv(f"FEDMEDCLIP_INFERENCE_{name}", raising=False)
    with pytest.raises(ValidationError, match=message):
        InferenceSettings(**overrides)
