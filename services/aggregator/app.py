"""The aggregator (federation hub) as a FastAPI app.

``create_app`` is the factory for tests and for ASGI servers
(``uvicorn --factory services.aggregator.app:create_app``). Start-up migrates or checks the
schema (SQLite always migrates itself; PostgreSQL only with ``AUTO_MIGRATE``, otherwise an
unmigrated database stops the start with a message saying what to run) and starts the
deadline watcher, which first closes every round whose deadline passed while the hub was
down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from fedmedclip import __version__
from services.aggregator import console
from services.aggregator.api import audit, models, nodes, ops, rounds, secagg, task, updates
from services.aggregator.context import AppContext
from services.aggregator.db.migrate import prepare_schema
from services.aggregator.deadlines import DeadlineWatcher
from services.aggregator.settings import AggregatorSettings
from services.common.api_docs import install_offline_docs
from services.common.problems import COMMON_RESPONSES, install_problem_handlers
from services.common.request_context import RequestContextMiddleware
from services.common.structured_logging import configure_logging

log = logging.getLogger(__name__)

JSON_BODY_LIMIT = 1024 * 1024
"""Cap on every body but an update's: far above any legitimate JSON body here (a task with
1000 class names is ~100 KB). Update uploads get ``MAX_UPLOAD_BYTES`` instead."""

DESCRIPTION = """Federation hub of FedMedCLIP: registers hospital nodes, runs training rounds,
receives compressed FAM updates, aggregates them into versioned global models and keeps
an audit trail. Authenticate with `Authorization: Bearer <admin or node token>`."""


def create_app(settings: AggregatorSettings | None = None) -> FastAPI:
    settings = settings or AggregatorSettings()
    configure_logging(settings.log_json, settings.log_level)
    context = AppContext.build(settings)
    watcher = DeadlineWatcher(context.closer)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        migrate = functools.partial(
            prepare_schema, context.db.engine, auto_migrate=settings.auto_migrate
        )
        await to_thread.run_sync(migrate)
        if settings.admin_token_value() is None and context.auth.verifier is None:
            log.warning(
                "neither FEDMEDCLIP_AGG_ADMIN_TOKEN nor single sign-on is set: admin routes "
                "answer 503"
            )
        await watcher.start()
        log.info("aggregator ready on %s", context.db.engine.url.render_as_string())
        try:
            yield
        finally:
            await watcher.stop()
            context.db.dispose()

    app = FastAPI(
        title="FedMedCLIP aggregator",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=JSON_BODY_LIMIT,
    )
    install_offline_docs(app)
    app.state.context = context
    app.add_middleware(RequestContextMiddleware, logger="services.aggregator.access")
    install_problem_handlers(app)
    for module in (task, nodes, rounds, models, audit):
        app.include_router(module.router, responses=COMMON_RESPONSES)
    for module in (updates, secagg):  # bodies that carry a whole update vector
        app.include_router(
            module.router, responses=COMMON_RESPONSES, max_body_size=settings.max_upload_bytes
        )
    app.include_router(ops.router)  # health, readiness, metrics: open, no input to validate
    console.install(app, context)  # the web console at /console/, signed in with a session
    return app
