"""The node API's job answer reads from the job row (``from_attributes``)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.hospital_node.api.schemas import JobOut, JobProgressOut
from services.hospital_node.db import Job


def test_every_job_field_is_a_column_and_progress_nests_five_of_them() -> None:
    columns = set(Job.__table__.columns.keys())
    assert set(JobOut.model_fields) - columns == {"progress"}
    assert set(JobProgressOut.model_fields) <= columns


def test_a_job_row_reads_as_the_wire_shows_it() -> None:
    now = datetime(2025, 1, 2, tzinfo=UTC)
    row = Job(
        id=3,
        round_id=9,
        trigger="admin",
        state="running",
        phase="training",
        epoch=2,
        epochs=5,
        percent=40.0,
        loss=0.25,
        sample_count=12,
        created_at=now,
        started_at=now,
    )
    answer = JobOut.model_validate(row).model_dump(mode="json")
    assert answer["progress"] == {
        "phase": "training",
        "epoch": 2,
        "epochs": 5,
        "percent": 40.0,
        "loss": 0.25,
    }
    assert answer["state"] == "running" and answer["round_id"] == 9
    assert answer["sample_count"] == 12 and answer["update_sha256"] is None
    assert "phase" not in answer
