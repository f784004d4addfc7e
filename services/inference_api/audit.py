"""Append-only audit trail of predictions, one JSON object per line.

Each line says when, who (the person signed in through the identity provider, or a hash of
a static token, never the token), which input (sha256 of the uploaded bytes), which models
(versions and blob sha256) and what was answered, so any result can be traced and
reproduced later. Images are kept only when the site asks for it (``audit_store_images``),
content-addressed next to the log; file names are not recorded because they often carry
patient identifiers.

The log rotates by size as ``logging.handlers.RotatingFileHandler`` does: when a write would
take ``audit.jsonl`` past ``max_bytes`` it becomes ``audit.jsonl.1`` (the older ones shift
to ``.2`` ... ``.<backup_count>``, and the oldest beyond that is deleted), so the disk use is
bounded by about ``max_bytes * (backup_count + 1)``. A request's lines are never split
across files. Sites that must keep predictions longer ship the rotated files to their
archive (a log collector or a backup of the folder) before they age out. The service has
one writer process; the lock orders its threads.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.inference_api.predictor import Prediction


@dataclass(frozen=True)
class AuditEntry:
    """One answered image."""

    input_sha256: str
    prediction: Prediction
    data: bytes
    prediction_id: str | None = None


class AuditLog:
    """Writes audit lines; safe to call from several threads."""

    def __init__(
        self,
        path: Path,
        *,
        store_images: bool = False,
        max_bytes: int = 0,
        backup_count: int = 1,
    ) -> None:
        """``max_bytes`` 0 never rotates; otherwise ``backup_count`` (at least 1) rotated
        files are kept."""
        if backup_count < 1:
            raise ValueError("keep at least one rotated audit file")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.images_dir = self.path.parent / "images" if store_images else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(
        self,
        entries: Sequence[AuditEntry],
        *,
        caller: str,
        request_id: str,
        model: Mapping[str, Any],
    ) -> None:
        """Append one line per entry (one write, so a request's lines stay together).

        ``model`` identifies the answering artefacts (``LoadedModel.trace()``).
        """
        time = datetime.now(UTC).isoformat()
        lines = [
            json.dumps(
                {
                    "time": time,
                    "request_id": request_id,
                    "caller": caller,
                    "input_sha256": entry.input_sha256,
                    "prediction_id": entry.prediction_id,
                    "model": dict(model),
                    "label": entry.prediction.label,
                    "probabilities": entry.prediction.probabilities,
                    "alpha": entry.prediction.alpha,
                },
                sort_keys=True,
            )
            + "\n"
            for entry in entries
        ]
        if self.images_dir is not None:
            for entry in entries:
                self._keep_image(entry)
        text = "".join(lines)
        with self._lock:
            self._rotate_before(len(text.encode()))
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)

    def rotated(self, index: int) -> Path:
        """The ``index``-th newest rotated file (1 = the most recent)."""
        return self.path.with_name(f"{self.path.name}.{index}")

    def _rotate_before(self, incoming: int) -> None:
        if self.max_bytes <= 0:
            return
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        for index in range(self.backup_count - 1, 0, -1):
            if self.rotated(index).exists():
                os.replace(self.rotated(index), self.rotated(index + 1))
        os.replace(self.path, self.rotated(1))

    def _keep_image(self, entry: AuditEntry) -> None:
        assert self.images_dir is not None
        target = self.images_dir / entry.input_sha256
        if target.exists():
            return  # content-addressed: the same bytes are already kept
        self.images_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(entry.data)
        os.replace(tmp, target)
