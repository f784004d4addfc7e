"""Which model answers predictions, and how a new one replaces it without failing requests.

The served model is one immutable :class:`LoadedModel` behind a single reference. A reload
builds the next model completely (blobs read, tensors loaded, text prototypes computed)
in a background thread and only then assigns the reference. A request takes the reference
once at its start and uses that object to the end, so a swap never mixes versions within
a request and never makes one wait.

What to serve: the site's ``current.json`` names a global version and a private head
version (the node writes both after training). When the service follows the hub, the
global version is instead the hub's production version, downloaded into the store; the
head stays the site's current one.

Pairing: a head's BatchNorm statistics describe the FAM it was trained with, and a head
served with another FAM version without re-estimating them lost about 16 accuracy points
in the simulator. So when the node stored a sample of training features with the head,
every build re-estimates the head's statistics under the FAM it will serve with
(``fedmedclip.heads.refresh_head_statistics``; a forward pass, nothing is trained).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import torch
from pydantic import ValidationError

from fedmedclip.backbone import Backbone, BackboneError, cached_backbone
from fedmedclip.ensemble import Combination
from fedmedclip.heads import LocalHead, refresh_head_statistics, unpack_heads
from fedmedclip.model import PrivateHead, SharedAdapter
from fedmedclip.model_store import ModelBlobError, ModelStore, StoredHead, StoredModel
from fedmedclip.prediction import Temperatures
from fedmedclip.schemas import TaskSpec
from services.common.hub_client import HubError
from services.inference_api.hub import HubFollower
from services.inference_api.metrics import InferenceMetrics

log = logging.getLogger(__name__)

_Stored = TypeVar("_Stored", StoredModel, StoredHead)


class ModelUnavailable(RuntimeError):
    """No model can answer yet; the message tells the caller why."""


class ModelLoadError(RuntimeError):
    """The stored model cannot be built; the previous model (if any) stays in service."""


@dataclass(frozen=True)
class Wanted:
    """The model that should be served; ``global_sha256`` is set when the hub names it."""

    global_version: int
    head_version: int
    global_sha256: str | None = None


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """Everything one prediction needs, fixed for the life of the object."""

    global_version: int
    head_version: int
    task: TaskSpec
    backbone: Backbone
    adapter: SharedAdapter
    head: PrivateHead
    local: LocalHead | None
    """The site's local head (trained alone on version 0), when the node stored one."""
    temperatures: Temperatures
    combination: Combination
    text_prototypes: torch.Tensor
    global_sha256: str
    head_sha256: str
    head_trained_on: int | None
    head_repaired: bool
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reference_features: torch.Tensor | None = field(default=None, repr=False)
    """The head's stored training-feature sample: what embedding drift is measured against."""
    class_counts: list[int] | None = None
    """Training images per class of the head (the class prior), when the node stored them."""

    @property
    def class_names(self) -> list[str]:
        return self.task.class_names

    @property
    def weights(self) -> str:
        """``random``, ``tag:<tag>`` or ``path:<path>``."""
        return self.backbone.weights.describe()

    def serves(self, wanted: Wanted) -> bool:
        return (self.global_version, self.head_version) == (
            wanted.global_version,
            wanted.head_version,
        ) and wanted.global_sha256 in (None, self.global_sha256)

    def trace(self) -> dict[str, Any]:
        """What identifies the answering artefacts in the audit trail."""
        return {
            "global_version": self.global_version,
            "head_version": self.head_version,
            "global_sha256": self.global_sha256,
            "head_sha256": self.head_sha256,
            "backbone": self.backbone.id,
        }

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` reports: enough to trace a prediction to its artefacts."""
        return {
            "global_version": self.global_version,
            "head_version": self.head_version,
            "head_trained_on_global_version": self.head_trained_on,
            "head_statistics_repaired": self.head_repaired,
            "global_sha256": self.global_sha256,
            "head_sha256": self.head_sha256,
            "backbone": self.backbone.name,
            "backbone_id": self.backbone.id,
            "weights": self.weights,
            "class_names": self.class_names,
            "prompt_template": self.task.prompt_template,
            "temperatures": {"fam": self.temperatures.fam, "head": self.temperatures.head},
            "combination": self.combination.model_dump(mode="json"),
            "device": str(self.backbone.device),
            "loaded_at": self.loaded_at.isoformat(),
        }


class ModelManager:
    """Holds the served model and replaces it when the store or the hub says so."""

    def __init__(
        self,
        store: ModelStore,
        *,
        weights: str,
        device: str,
        metrics: InferenceMetrics,
        hub: HubFollower | None = None,
    ) -> None:
        self.store = store
        self.weights = weights
        self.device = device
        self.metrics = metrics
        self.hub = hub
        self._model: LoadedModel | None = None
        self._problem = "the model is still loading"
        self._failed: Wanted | None = None
        self._lock = threading.Lock()  # one refresh at a time (poll loop and admin)

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    @property
    def unavailable_reason(self) -> str:
        """Why no model is served (meaningful only while ``model`` is None)."""
        return f"no model loaded yet: {self._problem}"

    def require(self) -> LoadedModel:
        """The model to answer one request with; raise ModelUnavailable before the first."""
        model = self._model
        if model is None:
            raise ModelUnavailable(self.unavailable_reason)
        return model

    def refresh(self, force: bool = False) -> LoadedModel | None:
        """Load the wanted model if it is not the served one; return the served model.

        A model that failed to build is not rebuilt at every poll (its files do not change
        under the same version numbers) unless ``force`` asks for it.
        """
        with self._lock:
            try:
                wanted = self._wanted()
            except ModelUnavailable as exc:
                if self._model is None:
                    self._problem = str(exc)
                return self._model
            current = self._model
            if current is not None and current.serves(wanted):
                return current
            if wanted == self._failed and not force:
                return current
            try:
                model = self._build(wanted, previous=current)
            except ModelLoadError as exc:
                self._failed = wanted
                self.metrics.reloads.labels("failed").inc()
                log.error(
                    "cannot load model; keeping the one in service",
                    extra={
                        "fields": {
                            "global_version": wanted.global_version,
                            "head_version": wanted.head_version,
                            "error": str(exc),
                        }
                    },
                )
                if current is None:
                    self._problem = str(exc)
                return current
            self._model = model  # the swap: requests already running keep `current`
            self._failed = None
            self.metrics.reloads.labels("loaded").inc()
            self.metrics.global_version.set(model.global_version)
            self.metrics.head_version.set(model.head_version)
            log.info(
                "serving model",
                extra={
                    "fields": {
                        "global_version": model.global_version,
                        "head_version": model.head_version,
                        "backbone": model.backbone.id,
                    }
                },
            )
            return model

    async def watch(self, interval: float) -> None:
        """Refresh now and then every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # noqa: BLE001 - a bug must not silently stop all reloads
                log.exception("model refresh failed unexpectedly")
            await asyncio.sleep(interval)

    def _wanted(self) -> Wanted:
        """The model that should be served now."""
        production = None
        if self.hub is not None:
            try:
                production = self.hub.sync()
            except (HubError, OSError, ModelBlobError) as exc:
                production = self.hub.production
                log.warning(
                    "cannot follow the hub's production version",
                    extra={
                        "fields": {
                            "error": str(exc),
                            "last_known": production.version if production else None,
                        }
                    },
                )
        try:
            current = self.store.current()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(f"cannot read the model store's current.json: {exc}") from exc
        if current is None:
            raise ModelUnavailable(
                f"the model store {self.store.root} has no current.json: no round has been "
                "trained at this site yet"
            )
        if current.head_version is None:
            raise ModelUnavailable("no private head has been trained at this site yet")
        if production is None:
            return Wanted(current.global_version, int(current.head_version))
        return Wanted(production.version, int(current.head_version), production.blob_sha256)

    @staticmethod
    def _read(kind: str, load: Callable[[int], _Stored], version: int) -> _Stored:
        try:
            return load(version)
        except (OSError, ModelBlobError) as exc:
            raise ModelLoadError(f"cannot read {kind} model version {version}: {exc}") from exc

    def _build(self, wanted: Wanted, previous: LoadedModel | None) -> LoadedModel:
        global_version, head_version = wanted.global_version, wanted.head_version
        stored_global = self._read("global", self.store.load_global, global_version)
        stored_head = self._read("head", self.store.load_head, head_version)
        if wanted.global_sha256 not in (None, stored_global.sha256):
            raise ModelLoadError(
                f"the stored global v{global_version} is not the hub's production blob "
                f"(sha256 {stored_global.sha256}, expected {wanted.global_sha256})"
            )
        if stored_global.meta.get("version") != global_version:
            raise ModelLoadError(
                f"global blob v{global_version} says it is version "
                f"{stored_global.meta.get('version')!r}"
            )
        try:
            task = TaskSpec.model_validate(stored_global.meta.get("task"))
        except ValidationError as exc:
            raise ModelLoadError(f"global v{global_version} carries no valid task: {exc}") from exc
        try:
            backbone = cached_backbone(task.backbone, self.weights, self.device)
        except BackboneError as exc:
            raise ModelLoadError(str(exc)) from exc
        config = task.adapter_config()
        adapter = SharedAdapter(config)
        try:
            adapter.load_state_dict(stored_global.tensors)
        except RuntimeError as exc:
            raise ModelLoadError(f"global v{global_version} does not fit its task: {exc}") from exc
        try:
            head, local = unpack_heads(stored_head.tensors, config, task.fam.seed)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"head h{head_version} does not fit the task of global v{global_version}: {exc}"
            ) from exc
        if stored_head.meta.combination.kind == "local" and local is None:
            raise ModelLoadError(
                f"head h{head_version} records the combination 'local' but holds no local head"
            )
        if stored_head.meta.combination.uses_statistics and (
            adapter.class_stats is None or adapter.class_stats.discriminant() is None
        ):
            raise ModelLoadError(
                f"head h{head_version} records the combination "
                f"{stored_head.meta.combination.kind!r} but global v{global_version} holds no "
                "usable class statistics"
            )
        adapter, head = adapter.to(backbone.device).eval(), head.to(backbone.device).eval()
        local = None if local is None else local.to(backbone.device)
        features = self._pairing_features(head_version)
        if features is not None:
            refresh_head_statistics(adapter, head, features)
        return LoadedModel(
            global_version=global_version,
            head_version=head_version,
            task=task,
            backbone=backbone,
            adapter=adapter,
            head=head,
            local=local,
            temperatures=stored_head.meta.temperatures,
            combination=stored_head.meta.combination,
            text_prototypes=self._text_prototypes(task, backbone, previous),
            global_sha256=stored_global.sha256,
            head_sha256=stored_head.sha256,
            head_trained_on=stored_head.meta.global_version,
            head_repaired=features is not None,
            reference_features=features,
            class_counts=stored_head.meta.class_counts,
        )

    def _pairing_features(self, head_version: int) -> torch.Tensor | None:
        try:
            return self.store.load_pairing_features(head_version)
        except (OSError, ModelBlobError) as exc:
            raise ModelLoadError(
                f"cannot read the pairing features of head h{head_version}: {exc}"
            ) from exc

    @staticmethod
    def _text_prototypes(
        task: TaskSpec, backbone: Backbone, previous: LoadedModel | None
    ) -> torch.Tensor:
        """Class text embeddings; reused when only the adapter or the head changed."""
        if (
            previous is not None
            and previous.backbone is backbone
            and previous.class_names == task.class_names
            and previous.task.prompt_template == task.prompt_template
        ):
            return previous.text_prototypes
        return backbone.text_prototypes(task.class_names, task.prompt_template)
