"""The hospital node's web console at ``/console/``: datasets, jobs, privacy, model.

Actions call the same functions as the node API (``datasets.register_dataset``,
``job_requests.request_job``); the node keeps no audit table, so each action is written
to the node's log with who did it (``services.common.console.app`` logs every action).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from fedmedclip.enums import ACTIVE_JOB_STATES
from services.common.console.app import (
    CheckedForm,
    Console,
    NavItem,
    SignedIn,
    install_console,
    parse_form,
    sign_in_with,
)
from services.common.settings import reveal
from services.hospital_node import datasets, job_requests
from services.hospital_node.api.model import current_model
from services.hospital_node.api.privacy import privacy_budget
from services.hospital_node.api.schemas import DatasetIn, JobIn
from services.hospital_node.context import NodeContext

NAV = (
    NavItem("Overview", "/"),
    NavItem("Datasets", "/datasets"),
    NavItem("Jobs", "/jobs"),
)
LIVE_JOB_STATES = {state.value for state in ACTIVE_JOB_STATES}


def _context(request: Request) -> NodeContext:
    return request.app.state.context


Context = Annotated[NodeContext, Depends(_context)]


def _jobs(ctx: NodeContext) -> dict:
    jobs = job_requests.list_jobs(ctx.db, limit=50, state=None)
    return {"jobs": jobs, "live": any(j.state in LIVE_JOB_STATES for j in jobs)}


def build_router() -> APIRouter:
    router = APIRouter()

    def console(request: Request) -> Console:
        return request.app.state.console

    @router.get("/")
    def overview(request: Request, session: SignedIn, ctx: Context) -> Response:
        values = {
            "model": current_model(ctx),
            "privacy": privacy_budget(ctx),
            "hub": ctx.settings.aggregator_url,
            **_jobs(ctx),
        }
        return console(request).render(request, session, "node_overview.html", values)

    @router.get("/datasets")
    def dataset_list(request: Request, session: SignedIn, ctx: Context) -> Response:
        values = {"datasets": datasets.list_datasets(ctx.db), "roots": ctx.settings.data_roots}
        return console(request).render(request, session, "datasets.html", values)

    @router.post("/datasets")
    def register(request: Request, session: SignedIn, form: CheckedForm, ctx: Context) -> Response:
        def action() -> str:
            body = parse_form(DatasetIn, {"path": form.get("path"), "name": form.get("name")})
            dataset = datasets.register_dataset(ctx.settings, ctx.db, body.path, body.name)
            return f"Dataset {dataset.name} registered: {dataset.n_images} images."

        return console(request).act(request, session, "/console/datasets", action)

    @router.get("/jobs")
    def job_list(request: Request, session: SignedIn, ctx: Context) -> Response:
        return console(request).render(request, session, "jobs.html", _jobs(ctx))

    @router.get("/fragments/jobs")
    def job_fragment(request: Request, session: SignedIn, ctx: Context) -> Response:
        return console(request).render(request, session, "jobs_table.html", _jobs(ctx))

    @router.post("/jobs")
    def start_job(request: Request, session: SignedIn, form: CheckedForm, ctx: Context) -> Response:
        def action() -> str:
            body = parse_form(JobIn, {"round_id": form.get("round_id")})
            job = job_requests.request_job(ctx.settings, ctx.db, ctx.runner, body.round_id)
            return f"Job {job.id} queued for round {job.round_id}."

        return console(request).act(request, session, "/console/jobs", action)

    return router


def install(app: FastAPI, ctx: NodeContext) -> None:
    """Mount the node console on ``app`` (one line in the app factory)."""
    console = Console(
        service="hospital node",
        nav=NAV,
        template_package="services.hospital_node.console",
        who_for_token=sign_in_with(ctx.auth),
        token_setting="FEDMEDCLIP_NODE_ADMIN_TOKEN",
        session_secret=reveal(ctx.settings.console_session_secret) or None,
    )
    install_console(app, console, build_router())
