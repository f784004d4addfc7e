"""The prediction service: model manager, micro-batcher and audit log working together.

The HTTP layer hands it decoded uploads; it picks the model once per request, prepares
the images in a worker thread, lets the micro-batcher run them together with other
requests' images, and audits the answers. Its refusals are service errors
(:mod:`services.common.problems`): an undecodable image is 422 ``bad_image``, no model yet
503 ``no_model`` (retry in 10 s), a stopping service 503 ``shutting_down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from fedmedclip.data.images import ImageDecodeError
from services.common.auth import Caller
from services.common.problems import Unavailable, Unprocessable
from services.inference_api.audit import AuditEntry, AuditLog
from services.inference_api.batcher import BatcherStopped, MicroBatcher
from services.inference_api.feedback import FeedbackStore, Recorded
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import LoadedModel, ModelManager, ModelUnavailable
from services.inference_api.monitoring import SiteMonitor
from services.inference_api.predictor import Prediction, forward, prepare
from services.inference_api.uploads import Upload

NO_MODEL_RETRY_SECONDS = 10
"""How long a client is asked to wait (``Retry-After``) while no model is loaded."""


@dataclass(frozen=True)
class BatchItem:
    """One preprocessed image and the model its request started with."""

    model: LoadedModel
    pixels: torch.Tensor


@dataclass(frozen=True)
class Answer:
    """The prediction for one upload, with the hash that identifies the input and the id
    under which a clinician can confirm it."""

    input_sha256: str
    prediction: Prediction
    prediction_id: str


class InferenceService:
    """Everything behind POST /predict, independent of HTTP."""

    def __init__(
        self,
        manager: ModelManager,
        audit: AuditLog,
        metrics: InferenceMetrics,
        *,
        monitor: SiteMonitor,
        feedback: FeedbackStore,
        max_pixels: int,
        max_concurrent_decodes: int,
        max_batch_size: int,
        batch_window_seconds: float,
        reload_seconds: float,
    ) -> None:
        self.manager = manager
        self.audit = audit
        self.metrics = metrics
        self.monitor = monitor
        self.feedback = feedback
        self.max_pixels = max_pixels
        # Decoding is where one request's memory peaks (up to a few hundred MB for an image
        # at the pixel cap); without a cap, N parallel requests would take N times that.
        self.decode_slots = asyncio.Semaphore(max_concurrent_decodes)
        self.reload_seconds = reload_seconds
        self.batcher: MicroBatcher[BatchItem, Prediction] = MicroBatcher(
            self._forward_batch,
            max_batch_size=max_batch_size,
            window_seconds=batch_window_seconds,
        )
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start batching and the background model loading / reloading."""
        await self.batcher.start()
        self._watcher = asyncio.create_task(self.manager.watch(self.reload_seconds))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.batcher.stop()
        self.feedback.close()
        if self.manager.hub is not None:
            self.manager.hub.close()

    def serving_model(self) -> LoadedModel:
        """The model to answer one request with; 503 ``no_model`` before the first."""
        try:
            return self.manager.require()
        except ModelUnavailable as exc:
            raise Unavailable(
                str(exc),
                code="no_model",
                headers={"Retry-After": str(NO_MODEL_RETRY_SECONDS)},
            ) from exc

    async def classify(
        self, model: LoadedModel, uploads: list[Upload], caller: Caller, request_id: str
    ) -> list[Answer]:
        """Predict every upload with ``model`` and audit the answers."""
        with self.batcher.preparing():
            async with self.decode_slots:
                pixels = await run_in_threadpool(self._prepare_all, model, uploads)
        try:
            futures = [self.batcher.submit(BatchItem(model, p)) for p in pixels]
            predictions = await asyncio.gather(*futures)
        except BatcherStopped as exc:
            raise Unavailable(str(exc), code="shutting_down") from exc
        answers = [
            Answer(upload.sha256, prediction, uuid.uuid4().hex)
            for upload, prediction in zip(uploads, predictions, strict=True)
        ]
        self.metrics.predictions.inc(len(answers))
        await run_in_threadpool(self._keep, model, answers, uploads, pixels, caller, request_id)
        return answers

    def _keep(
        self,
        model: LoadedModel,
        answers: list[Answer],
        uploads: list[Upload],
        pixels: list[torch.Tensor],
        caller: Caller,
        request_id: str,
    ) -> None:
        """Audit the answers, make them confirmable, and count them for monitoring."""
        entries = [
            AuditEntry(a.input_sha256, a.prediction, u.data, a.prediction_id)
            for a, u in zip(answers, uploads, strict=True)
        ]
        self.audit.record(entries, caller=caller.actor, request_id=request_id, model=model.trace())
        self.feedback.record(
            [
                Recorded(
                    id=a.prediction_id,
                    global_version=model.global_version,
                    head_version=model.head_version,
                    class_names=model.class_names,
                    label=a.prediction.label,
                    confidence=a.prediction.confidence,
                )
                for a in answers
            ]
        )
        self.monitor.observe(model, pixels, [a.prediction for a in answers])

    def monitoring(self) -> dict[str, Any]:
        """``GET /monitoring``: per-version statistics, drift and feedback metrics.

        Versions appear once they answered a prediction since the service started
        (statistics) or have clinician feedback (kept in the feedback store). Refreshes the
        Prometheus gauges as a side effect, so ``/metrics`` calls it too.
        """
        feedback = self.feedback.metrics()
        seen = self.monitor.versions()
        versions = []
        for key in sorted(set(seen) | set(feedback)):
            entry: dict[str, Any] = (
                self.monitor.report(key)
                if key in seen
                else {"global_version": key[0], "head_version": key[1], "predictions": 0}
            )
            entry = entry | {"feedback": feedback.get(key, {"labelled": 0})}
            for name, value in entry["feedback"].items():
                self.metrics.feedback.labels(str(key[0]), str(key[1]), name).set(value)
            versions.append(entry)
        model = self.manager.model
        serving = None if model is None else (model.global_version, model.head_version)
        current = next(
            (v for v in versions if (v["global_version"], v["head_version"]) == serving), None
        )
        drift = current["drift"]["state"] if current and "drift" in current else "unknown"
        limits = self.monitor.limits
        return {
            "serving": None
            if serving is None
            else dict(zip(("global_version", "head_version"), serving, strict=True)),
            "drift": drift,
            "thresholds": {
                "window": limits.window,
                "min_samples": limits.min_samples,
                "drift_alpha": limits.drift_alpha,
                "permutations": limits.permutations,
                "prior_threshold": limits.prior_threshold,
            },
            "versions": versions,
        }

    def _prepare_all(self, model: LoadedModel, uploads: list[Upload]) -> list[torch.Tensor]:
        pixels = []
        for number, upload in enumerate(uploads, start=1):
            try:
                pixels.append(prepare(upload.data, model.backbone, self.max_pixels))
            except ImageDecodeError as exc:
                which = "" if len(uploads) == 1 else f"file {number} ({upload.filename!r}): "
                raise Unprocessable(
                    f"cannot use this image: {which}{exc}", code="bad_image"
                ) from exc
        return pixels

    def _forward_batch(self, items: list[BatchItem]) -> list[Prediction]:
        """One forward per model among the items (almost always one: a swap is rare)."""
        results: dict[int, Prediction] = {}
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(id(item.model), []).append(index)
        for indices in groups.values():
            model = items[indices[0]].model
            batch = torch.stack([items[i].pixels for i in indices])
            self.metrics.batch_size.observe(len(indices))
            results.update(zip(indices, forward(model, batch), strict=True))
        return [results[index] for index in range(len(items))]
