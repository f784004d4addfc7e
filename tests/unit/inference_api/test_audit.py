"""The prediction audit trail: one JSON line per answer, no token, images only on request."""

from __future__ import annotations

import json

from services.inference_api.audit import AuditEntry, AuditLog
from services.inference_api.predictor import BranchPrediction, Prediction

TRACE = {
    "global_version": 3,
    "head_version": 2,
    "global_sha256": "g" * 64,
    "head_sha256": "h" * 64,
    "backbone": "ViT-S-32/random-seed0",
}


def _prediction(label: str) -> Prediction:
    probabilities = {"a": 0.7, "b": 0.3} if label == "a" else {"a": 0.2, "b": 0.8}
    branch = BranchPrediction(label, probabilities)
    return Prediction(label, probabilities, 0.4, branch, branch)


def test_each_answer_is_one_line_with_caller_input_models_and_result(tmp_path):
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    entries = [
        AuditEntry("1" * 64, _prediction("a"), b"img1"),
        AuditEntry("2" * 64, _prediction("b"), b"img2"),
    ]
    log.record(entries, caller="tok-abc", request_id="req-1", model=TRACE)
    log.record(entries[:1], caller="tok-def", request_id="req-2", model=TRACE)
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [(x["request_id"], x["input_sha256"][0], x["label"]) for x in lines] == [
        ("req-1", "1", "a"),
        ("req-1", "2", "b"),
        ("req-2", "1", "a"),
    ]
    assert lines[0]["caller"] == "tok-abc" and lines[0]["model"] == TRACE
    assert lines[1]["probabilities"] == {"a": 0.2, "b": 0.8} and lines[1]["alpha"] == 0.4
    assert lines[0]["time"].endswith("+00:00")
    assert not (tmp_path / "audit" / "images").exists()


def test_images_are_kept_by_content_hash_only_when_configured(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", store_images=True)
    entry = AuditEntry("f" * 64, _prediction("a"), b"\x89PNG...")
    log.record([entry, entry], caller="tok-abc", request_id="r", model=TRACE)
    kept = list((tmp_path / "images").iterdir())
    assert [p.name for p in kept] == ["f" * 64]
    assert kept[0].read_bytes() == b"\x89PNG..."
