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
from services.inference_api.api import model, ops, predict
from services.inference_api.audit import AuditLog
from services.inference_api.auth import TokenRegistry
from services.inference_api.hub import HubFollower
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import ModelManager
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
            settings.node_token.get_secret_value(),
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
        max_pixels=settings.max_pixels,
        max_concurrent_decodes=settings.max_concurrent_decodes,
        max_batch_size=settings.max_batch_size,
        batch_window_seconds=settings.batch_window_ms / 1000,
        reload_seconds=settings.reload_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

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
    app.state.tokens = TokenRegistry(
        (t.get_secret_value() for t in settings.clinician_tokens),
        settings.admin_token.get_secret_value(),
    )
    install_problem_handlers(app, observe=lambda code: metrics.errors.labels(code).inc())
    app.add_middleware(
        RequestContextMiddleware,
        logger="services.inference_api.access",
        observe=metrics.http.observe,
    )
    predict.include(app, settings)
    app.include_router(model.router)
    app.include_router(ops.router)
    return app
