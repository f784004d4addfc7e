"""The hospital node API: ``create_app(settings)`` builds one independent app instance.

Jobs run in a Celery worker when a broker is configured, else one at a time in a
background thread of this process (the embedded default). The agent (job monitor, and
round follower with auto-join) runs in a thread for the app's lifetime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fedmedclip import __version__
from services.common.api_docs import install_offline_docs
from services.common.problems import install_problem_handlers, problem_responses
from services.common.request_context import RequestContextMiddleware
from services.common.settings import SettingsRefused
from services.common.structured_logging import configure_logging
from services.hospital_node import console
from services.hospital_node.agent import Agent
from services.hospital_node.api import datasets, health, jobs, model, privacy
from services.hospital_node.context import NodeContext
from services.hospital_node.jobs import ThreadRunner, recover_embedded_jobs
from services.hospital_node.settings import NodeSettings

MAX_BODY_BYTES = 64 * 1024
"""The node API takes small JSON bodies only; anything bigger is refused (413), declared
or streamed."""

API_RESPONSES = problem_responses(401, 404, 409, 413, 422, 502, 503)
"""What the admin routes may answer besides success (404 for unknown jobs and rounds, 502
and 503 for a hub that refused or is away)."""


class SettingsError(SettingsRefused):
    """The node cannot start with these settings; the message names the variable."""


def _check_settings(settings: NodeSettings) -> None:
    missing = [
        f"FEDMEDCLIP_NODE_{name.upper()}"
        for name in ("admin_token", "node_token")
        if not getattr(settings, name)
    ]
    if missing:
        raise SettingsError(f"set {' and '.join(missing)} before starting the node API")


def create_app(settings: NodeSettings | None = None) -> FastAPI:
    """Build the node API for ``settings`` (read from the environment when omitted)."""
    settings = settings or NodeSettings()
    configure_logging(settings.log_json, settings.log_level)
    _check_settings(settings)
    ctx = NodeContext.build(settings)
    agent = Agent(ctx)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if isinstance(ctx.runner, ThreadRunner):
            with ctx.db.write() as session:
                queued = recover_embedded_jobs(session)
            for job_id in queued:
                ctx.runner.submit(job_id)
        agent.start()
        try:
            yield
        finally:
            agent.stop()
            ctx.runner.close()
            ctx.db.dispose()

    app = FastAPI(
        title="FedMedCLIP hospital node",
        description="Local datasets, training jobs and the site's model versions.",
        version=__version__,
        lifespan=lifespan,
        max_body_size=MAX_BODY_BYTES,
    )
    install_offline_docs(app)
    app.state.context = ctx
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, logger=__name__, observe=ctx.metrics.http.observe)
    app.include_router(health.router)  # health, readiness, metrics: open, no input to validate
    for router in (datasets.router, jobs.router, model.router, privacy.router):
        app.include_router(router, responses=API_RESPONSES)
    console.install(app, ctx)  # the web console at /console/, signed in with a session
    return app
