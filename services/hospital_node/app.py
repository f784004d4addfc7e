"""The hospital node API: ``create_app(settings)`` builds one independent app instance.

Jobs run in a Celery worker when a broker is configured, else one at a time in a
background thread of this process (the embedded default). The agent (job monitor, and
round follower with auto-join) runs in a thread for the app's lifetime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.common.api_docs import install_offline_docs
from services.common.request_context import RequestContextMiddleware
from services.common.structured_logging import request_id_var
from services.common.validation import VALIDATION_RESPONSES, validation_body
from services.hospital_node.agent import Agent
from services.hospital_node.api import datasets, health, jobs, model, privacy
from services.hospital_node.context import NodeContext
from services.hospital_node.db import Database
from services.hospital_node.jobs import JobRunner, ThreadRunner, execute_job, recover_embedded_jobs
from services.hospital_node.metrics import NodeMetrics
from services.hospital_node.settings import NodeSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
"""The node API takes small JSON bodies only; anything bigger is refused unread."""


class SettingsError(ValueError):
    """The node cannot start with these settings; the message names the variable."""


def _check_settings(settings: NodeSettings) -> None:
    missing = [
        f"FEDMEDCLIP_NODE_{name.upper()}"
        for name in ("admin_token", "node_token")
        if not getattr(settings, name)
    ]
    if missing:
        raise SettingsError(f"set {' and '.join(missing)} before starting the node API")


def _runner(settings: NodeSettings, db: Database) -> JobRunner:
    if settings.broker_url:
        from services.hospital_node.worker import CeleryRunner

        return CeleryRunner(settings)

    def run(job_id: int, cancel: threading.Event) -> None:
        execute_job(settings, db, job_id, cancel)

    return ThreadRunner(run)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content=validation_body(exc),
        )

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            content={"detail": f"internal error (request {request_id_var.get()})"},
        )


async def _cap_body(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Refuse, unread, any body above :data:`MAX_BODY_BYTES` or without a declared length."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            content={"detail": f"request body larger than {MAX_BODY_BYTES} bytes"},
        )
    if length is None and request.headers.get("transfer-encoding"):
        return JSONResponse(
            status_code=status.HTTP_411_LENGTH_REQUIRED,
            content={"detail": "send a Content-Length with the request body"},
        )
    return await call_next(request)


def create_app(settings: NodeSettings | None = None) -> FastAPI:
    """Build the node API for ``settings`` (read from the environment when omitted)."""
    settings = settings or NodeSettings()
    _check_settings(settings)
    db = Database(settings.sqlalchemy_url())
    metrics = NodeMetrics(db)
    ctx = NodeContext(settings=settings, db=db, runner=_runner(settings, db), metrics=metrics)
    agent = Agent(ctx)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if isinstance(ctx.runner, ThreadRunner):
            for job_id in recover_embedded_jobs(db):
                ctx.runner.submit(job_id)
        agent.start()
        try:
            yield
        finally:
            agent.stop()
            ctx.runner.close()
            db.dispose()

    app = FastAPI(
        title="FedMedCLIP hospital node",
        description="Local datasets, training jobs and the site's model versions.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_offline_docs(app)
    app.state.node = ctx
    _install_handlers(app)
    app.middleware("http")(_cap_body)
    app.add_middleware(RequestContextMiddleware, logger=__name__, observe=metrics.http.observe)
    app.include_router(health.router)  # health, readiness, metrics: no input to validate
    for router in (datasets.router, jobs.router, model.router, privacy.router):
        app.include_router(router, responses=VALIDATION_RESPONSES)
    return app
