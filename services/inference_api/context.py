"""What one app instance holds: settings, metrics, the inference service, the PACS, auth.

Built once by the app factory (``InferenceContext.build``) and reached by the routers
through ``ContextDep`` (``services.inference_api.api.deps``), as in the other services.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmedclip.backbone import resolve_device
from fedmedclip.model_store import ModelStore
from services.common.auth import Authenticator
from services.inference_api.audit import AuditLog
from services.inference_api.auth import inference_authenticator
from services.inference_api.dicomweb import PacsClient, PacsLimits
from services.inference_api.feedback import FeedbackStore
from services.inference_api.hub import HubFollower
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import ModelManager
from services.inference_api.monitoring import MonitorLimits, SiteMonitor
from services.inference_api.service import InferenceService
from services.inference_api.settings import InferenceSettings


@dataclass(frozen=True)
class InferenceContext:
    settings: InferenceSettings
    metrics: InferenceMetrics
    service: InferenceService
    pacs: PacsClient | None
    """The site's PACS, when ``DICOMWEB_URL`` is set (only then is its route mounted)."""
    auth: Authenticator

    @classmethod
    def build(cls, settings: InferenceSettings) -> InferenceContext:
        metrics = InferenceMetrics()
        return cls(
            settings=settings,
            metrics=metrics,
            service=_service(settings, metrics),
            pacs=_pacs(settings),
            auth=inference_authenticator(settings),
        )


def _service(settings: InferenceSettings, metrics: InferenceMetrics) -> InferenceService:
    store = ModelStore(settings.model_store_dir)
    hub = (
        HubFollower(
            settings.aggregator_url,
            settings.live_token("node_token"),
            store,
            verify=settings.hub_tls(),
        )
        if settings.follows_hub
        else None
    )
    manager = ModelManager(
        store,
        weights=settings.backbone_weights,
        device=resolve_device(settings.device),
        metrics=metrics,
        hub=hub,
    )
    return InferenceService(
        manager,
        AuditLog(
            settings.audit_path,
            store_images=settings.audit_store_images,
            max_bytes=settings.audit_max_bytes,
            backup_count=settings.audit_backup_count,
        ),
        metrics,
        monitor=SiteMonitor(
            MonitorLimits(
                window=settings.monitor_window,
                min_samples=settings.monitor_min_samples,
                drift_alpha=settings.monitor_drift_alpha,
                permutations=settings.monitor_permutations,
                prior_threshold=settings.monitor_prior_threshold,
            ),
            metrics,
        ),
        feedback=FeedbackStore(settings.predictions_path),
        max_pixels=settings.max_pixels,
        max_concurrent_decodes=settings.max_concurrent_decodes,
        max_batch_size=settings.max_batch_size,
        batch_window_seconds=settings.batch_window_ms / 1000,
        reload_seconds=settings.reload_seconds,
    )


def _pacs(settings: InferenceSettings) -> PacsClient | None:
    if not settings.dicomweb_url:
        return None
    return PacsClient(
        settings.dicomweb_url,
        limits=PacsLimits(
            max_instances=settings.dicomweb_max_instances,
            max_instance_bytes=settings.max_upload_bytes,
            max_total_bytes=settings.dicomweb_max_total_bytes,
        ),
        timeout=settings.dicomweb_timeout_seconds,
        username=settings.dicomweb_username,
        password=settings.dicomweb_password.get_secret_value(),
        token=settings.dicomweb_token.get_secret_value(),
    )
