"""FastAPI app factory of the inference API.

The app starts answering /health at once; the model (backbone included) is loaded in the
background, and /ready and /predict answer 503 with the reason until it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fedmedclip import __version__
from fedmedclip.backbone import resolve_device
from fedmedclip.model_store import ModelStore
from services.common.api_docs import install_offline_docs
from services.common.problems import install_problem_handlers
from services.common.request_context import RequestContextMiddleware
from services.common.structured_logging import configure_logging
from services.inference_api.api import dicomweb, model, monitoring, ops, predict
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

JSON_BODY_LIMIT = 64 * 1024
"""Cap on any body but an upload's (no other route takes one)."""


def create_app(settings: InferenceSettings | None = None) -> FastAPI:
    """Build the app; ``settings`` default to the FEDMEDCLIP_INFERENCE_* environment."""
    settings = settings or InferenceSettings()
    configure_logging(settings.log_json, settings.log_level)
    metrics = InferenceMetrics()
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
    service = InferenceService(
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

    pacs = (
        PacsClient(
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
        if settings.dicomweb_url
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            if pacs is not None:
                await pacs.close()

    app = FastAPI(
        title="FedMedCLIP inference API",
        version=__version__,
        description="FAM + private-head ensemble predictions for PNG, JPEG and DICOM images.",
        lifespan=lifespan,
        max_body_size=JSON_BODY_LIMIT,
    )
    install_offline_docs(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = service
    app.state.pacs = pacs
    app.state.auth = inference_authenticator(settings)
    install_problem_handlers(app, observe=lambda code: metrics.errors.labels(code).inc())
    app.add_middleware(
        RequestContextMiddleware,
        logger="services.inference_api.access",
        observe=metrics.http.observe,
    )
    predict.include(app, settings)
    if pacs is not None:  # the API describes what this deployment can do
        app.include_router(dicomweb.router)
    app.include_router(model.router)
    app.include_router(monitoring.router)
    app.include_router(ops.router)
    return app
