"""FastAPI app factory of the inference API.

The app starts answering /health at once; the model (backbone included) is loaded in the
background, and /ready and /predict answer 503 with the reason until it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fedmedclip import __version__
from services.common.api_docs import install_offline_docs
from services.common.problems import install_problem_handlers
from services.common.request_context import RequestContextMiddleware
from services.common.structured_logging import configure_logging
from services.inference_api.api import dicomweb, model, monitoring, ops, predict
from services.inference_api.context import InferenceContext
from services.inference_api.settings import InferenceSettings

JSON_BODY_LIMIT = 64 * 1024
"""Cap on any body but an upload's (no other route takes one)."""


def create_app(settings: InferenceSettings | None = None) -> FastAPI:
    """Build the app; ``settings`` default to the FEDMEDCLIP_INFERENCE_* environment."""
    settings = settings or InferenceSettings()
    configure_logging(settings.log_json, settings.log_level)
    context = InferenceContext.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await context.service.start()
        try:
            yield
        finally:
            await context.service.stop()
            if context.pacs is not None:
                await context.pacs.close()

    app = FastAPI(
        title="FedMedCLIP inference API",
        version=__version__,
        description="FAM + private-head ensemble predictions for PNG, JPEG and DICOM images.",
        lifespan=lifespan,
        max_body_size=JSON_BODY_LIMIT,
    )
    install_offline_docs(app)
    app.state.context = context
    install_problem_handlers(app, observe=lambda code: context.metrics.errors.labels(code).inc())
    app.add_middleware(
        RequestContextMiddleware,
        logger="services.inference_api.access",
        observe=context.metrics.http.observe,
    )
    predict.include(app, settings)
    if context.pacs is not None:  # the API describes what this deployment can do
        app.include_router(dicomweb.router)
    app.include_router(model.router)
    app.include_router(monitoring.router)
    app.include_router(ops.router)
    return app
