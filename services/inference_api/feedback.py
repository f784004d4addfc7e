"""Predictions a clinician can confirm, and the running metrics their confirmations give.

Each answered image gets a random id (in the answer and in the audit line). The audit log
stays the append-only record of what was answered; this store keeps, per id, only what
feedback needs (model versions, class names, predicted label and confidence) in a small
SQLite database (``predictions_db``), indexed by id, so ``POST /predictions/{id}/feedback``
does not scan a growing log. The table is created at start (one table, no migrations
yet: add Alembic here when its schema first changes).

A later feedback for the same id replaces the earlier one (a corrected confirmation).
Metrics per model version, over the predictions with feedback: accuracy, balanced
accuracy and expected calibration error (:mod:`fedmedclip.monitoring`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedmedclip import monitoring as stats
from services.common.db import Database, UTCDateTime, utcnow
from services.common.problems import NotFound, Unprocessable


class _Base(DeclarativeBase):
    pass


class PredictionRow(_Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    global_version: Mapped[int] = mapped_column(Integer, index=True)
    head_version: Mapped[int] = mapped_column(Integer, index=True)
    class_names: Mapped[list[str]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    feedback_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Recorded:
    """One answered image, as the feedback store keeps it."""

    id: str
    global_version: int
    head_version: int
    class_names: list[str]
    label: str
    confidence: float


class FeedbackStore:
    """The predictions table; thread-safe through SQLAlchemy sessions."""

    def __init__(self, path: Path) -> None:
        self.db = Database.connect(f"sqlite:///{Path(path)}")
        _Base.metadata.create_all(self.db.engine)

    def record(self, predictions: Sequence[Recorded]) -> None:
        with self.db.write() as session:
            session.add_all(
                PredictionRow(
                    id=p.id,
                    global_version=p.global_version,
                    head_version=p.head_version,
                    class_names=p.class_names,
                    label=p.label,
                    confidence=p.confidence,
                )
                for p in predictions
            )

    def confirm(self, prediction_id: str, label: str) -> dict[str, Any]:
        """Record the confirmed ``label`` of a prediction; 404 unknown id, 422 unknown class."""
        with self.db.write() as session:
            row = session.get(PredictionRow, prediction_id)
            if row is None:
                raise NotFound(f"no prediction {prediction_id!r}", code="unknown_prediction")
            if label not in row.class_names:
                raise Unprocessable(
                    f"label {label!r} is not one of the model's classes {row.class_names}",
                    code="unknown_label",
                )
            row.feedback_label = label
            row.feedback_at = utcnow()
            return {
                "prediction_id": row.id,
                "predicted": row.label,
                "label": label,
                "correct": label == row.label,
                "global_version": row.global_version,
                "head_version": row.head_version,
            }

    def metrics(self) -> dict[tuple[int, int], dict[str, Any]]:
        """Running feedback metrics per (global version, head version) with any feedback."""
        query = select(
            PredictionRow.global_version,
            PredictionRow.head_version,
            PredictionRow.class_names,
            PredictionRow.label,
            PredictionRow.confidence,
            PredictionRow.feedback_label,
        ).where(PredictionRow.feedback_label.is_not(None))
        grouped: dict[tuple[int, int], list[Any]] = {}
        with self.db.read() as session:
            for row in session.execute(query):
                grouped.setdefault((row.global_version, row.head_version), []).append(row)
        return {key: _feedback_metrics(rows) for key, rows in grouped.items()}

    def close(self) -> None:
        self.db.dispose()


def _feedback_metrics(rows: list[Any]) -> dict[str, Any]:
    names = rows[0].class_names
    truth = [names.index(r.feedback_label) for r in rows]
    predicted = [names.index(r.label) for r in rows]
    correct = [t == p for t, p in zip(truth, predicted, strict=True)]
    return {
        "labelled": len(rows),
        "accuracy": stats.accuracy(truth, predicted),
        "balanced_accuracy": stats.balanced_accuracy(truth, predicted),
        "ece": stats.expected_calibration_error([r.confidence for r in rows], correct),
    }
