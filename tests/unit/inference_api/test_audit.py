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


def test_the_log_rotates_by_size_keeping_n_files_and_whole_requests(tmp_path):
    entry = AuditEntry("1" * 64, _prediction("a"), b"img")
    probe = AuditLog(tmp_path / "probe.jsonl")
    probe.record([entry], caller="c", request_id="r-00", model=TRACE)
    line = probe.path.stat().st_size
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=3 * line, backup_count=2)
    for i in range(10):  # one request of two lines, then one-line requests
        count = 2 if i == 0 else 1
        log.record([entry] * count, caller="c", request_id=f"r-{i:02d}", model=TRACE)

    def ids(path):
        return [json.loads(x)["request_id"] for x in path.read_text().splitlines()]

    # r-00 (two lines) and r-01 filled the first file; it went at r-02, then again at
    # r-05 and r-08, when the oldest (r-00, r-01) aged out.
    assert ids(log.rotated(2)) == ["r-02", "r-03", "r-04"]
    assert ids(log.rotated(1)) == ["r-05", "r-06", "r-07"]
    assert ids(log.path) == ["r-08", "r-09"]
    assert all(p.stat().st_size <= 3 * line for p in (log.rotated(2), log.rotated(1), log.path))
    assert not log.rotated(3).exists()  # older files were deleted, not kept forever


def test_rotation_off_by_default(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    entry = AuditEntry("1" * 64, _prediction("a"), b"img")
    for i in range(50):
        log.record([entry], caller="c", request_id=str(i), model=TRACE)
    assert len(log.path.read_text().splitlines()) == 50
    assert not log.rotated(1).exists()
