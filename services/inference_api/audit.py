"""Append-only audit trail of predictions, one JSON object per line.

Each line says when, who (the person signed in through the identity provider, or a hash of
a static token, never the token), which input (sha256 of the uploaded bytes), which models
(versions and blob sha256) and what was answered, so any result can be traced and
reproduced later. Images are kept only when the site asks for it (``audit_store_images``),
content-addressed next to the log; file names are not recorded because they often carry
patient identifiers.
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

    def __init__(self, path: Path, *, store_images: bool = False) -> None:
        self.path = Path(path)
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
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(lines))

    def _keep_image(self, entry: AuditEntry) -> None:
        assert self.images_dir is not None
        target = self.images_dir / entry.input_sha256
        if target.exists():
            return  # content-addressed: the same bytes are already kept
        self.images_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(entry.data)
        os.replace(tmp, target)
