"""The hub's web console at ``/console/``: federation overview, rounds, models, audit.

Every action calls the same domain function as the matching API route (``nodes``,
``rounds``, ``closing``, ``models_registry``) with the signed-in actor, so it is checked,
refused and audited exactly as an API call would be.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from fedmedclip.ids import DbId, VersionNumber
from fedmedclip.schemas import NodeCreate, NodeInfo, RoundCreate, RoundInfo
from services.aggregator import audit, models_registry, nodes, round_rows, rounds, tasks, updates
from services.aggregator.audit import ADMIN
from services.aggregator.closing import CLOSED_BY_ADMIN
from services.aggregator.context import AppContext
from services.aggregator.db.models import utcnow
from services.common.console.app import (
    CheckedForm,
    Console,
    NavItem,
    SignedIn,
    install_console,
    parse_form,
    sign_in_with,
)
from services.common.console.charts import line_chart
from services.common.console.session import Session
from services.common.problems import ServiceError
from services.common.settings import reveal

ONLINE_WITHIN = timedelta(minutes=2)
"""A node seen this recently counts as online (nodes poll every few seconds)."""
AUDIT_PAGE = 50

NAV = (
    NavItem("Overview", "/"),
    NavItem("Rounds", "/rounds"),
    NavItem("Models", "/models"),
    NavItem("Audit log", "/audit"),
)


def _context(request: Request) -> AppContext:
    return request.app.state.context


Context = Annotated[AppContext, Depends(_context)]


def node_state(node: NodeInfo, now: datetime) -> str:
    if node.revoked_at is not None:
        return "revoked"
    if node.last_seen is None:
        return "never seen"
    return "online" if now - node.last_seen <= ONLINE_WITHIN else "offline"


def _open_round(db_session, form: dict[str, str], settings, actor: str) -> str:
    hints = {k: form[k] for k in ("local_epochs", "batch_size", "lr") if form.get(k)}
    request = parse_form(
        RoundCreate,
        {
            "min_clients": form.get("min_clients"),
            "deadline_seconds": form.get("deadline_seconds"),
            "hints": hints,
        },
    )
    info = rounds.open_round(
        db_session,
        request,
        default_deadline_seconds=settings.default_deadline_seconds,
        max_upload_bytes=settings.max_upload_bytes,
        actor=actor,
    )
    return f"Round {info.id} opened on version {info.base_version}."


def _active_round(db_session) -> tuple[RoundInfo | None, list[updates.UpdateSummary]]:
    for info in rounds.list_infos(db_session, None, 1):
        if info.state.value in round_rows.ACTIVE_STATES:
            return info, updates.summaries(db_session, info.id)
    return None, []


def build_router() -> APIRouter:
    router = APIRouter()

    def console(request: Request) -> Console:
        return request.app.state.console

    @router.get("/")
    def overview(request: Request, session: SignedIn, ctx: Context) -> Response:
        with ctx.db.read() as db:
            task = tasks.get_task(db)
            node_list = nodes.list_nodes(db)
            active, arrived = _active_round(db)
        now = utcnow()
        return console(request).render(
            request,
            session,
            "overview.html",
            {
                "task": task,
                "nodes": [(n, node_state(n, now)) for n in node_list],
                "active": active,
                "arrived": arrived,
                "default_deadline": ctx.settings.default_deadline_seconds,
            },
        )

    @router.get("/fragments/open-round")
    def open_round_fragment(request: Request, session: SignedIn, ctx: Context) -> Response:
        with ctx.db.read() as db:
            active, arrived = _active_round(db)
        return console(request).render(
            request, session, "open_round.html", {"active": active, "arrived": arrived}
        )

    @router.post("/nodes")
    def register_node(
        request: Request, session: SignedIn, form: CheckedForm, ctx: Context
    ) -> Response:
        try:
            body = parse_form(NodeCreate, {"name": form.get("name")})
            with ctx.db.write() as db:
                created = nodes.create_node(db, body.name, _actor(session))
        except ServiceError as exc:  # refused as the API refuses it (400, 409)
            return console(request).redirect(request, session, "/console/", ("error", exc.detail))
        # The token is shown once, on this page; it is not put in a redirect or a cookie.
        return console(request).render(request, session, "node_created.html", {"node": created})

    @router.get("/nodes/{node_id}/revoke")
    def confirm_revoke(request: Request, session: SignedIn, node_id: DbId) -> Response:
        return console(request).confirm(
            request,
            session,
            question=f"Revoke node {node_id}?",
            consequence=("Its token stops working at once; the node can no longer join rounds."),
            action=f"/console/nodes/{node_id}/revoke",
            verb="Revoke",
            back="/console/",
        )

    @router.post("/nodes/{node_id}/revoke")
    def revoke(
        request: Request, session: SignedIn, _: CheckedForm, ctx: Context, node_id: DbId
    ) -> Response:
        def action() -> str:
            with ctx.db.write() as db:
                node = nodes.revoke_node(db, node_id, _actor(session))
            return f"Node {node.name} revoked."

        return console(request).act(request, session, "/console/", action)

    @router.post("/rounds")
    def open_round(
        request: Request, session: SignedIn, form: CheckedForm, ctx: Context
    ) -> Response:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}

        def action() -> str:
            with ctx.db.write() as db:
                return _open_round(db, fields, ctx.settings, _actor(session))

        return console(request).act(request, session, "/console/", action)

    @router.get("/rounds/{round_id}/close")
    def confirm_close(request: Request, session: SignedIn, round_id: DbId) -> Response:
        return console(request).confirm(
            request,
            session,
            question=f"Aggregate round {round_id} now?",
            consequence=(
                "The round closes with the updates received so far; it fails if fewer than its "
                "minimum arrived."
            ),
            action=f"/console/rounds/{round_id}/close",
            verb="Aggregate now",
            back=f"/console/rounds/{round_id}",
        )

    @router.post("/rounds/{round_id}/close")
    def close(
        request: Request, session: SignedIn, _: CheckedForm, ctx: Context, round_id: DbId
    ) -> Response:
        def action() -> str:
            state = ctx.closer.close(round_id, actor=_actor(session), cause=CLOSED_BY_ADMIN)
            return f"Round {round_id} is {state.value}."

        return console(request).act(request, session, f"/console/rounds/{round_id}", action)

    @router.get("/rounds/{round_id}/cancel")
    def confirm_cancel(request: Request, session: SignedIn, round_id: DbId) -> Response:
        return console(request).confirm(
            request,
            session,
            question=f"Cancel round {round_id}?",
            consequence=("Updates already received are kept but never aggregated."),
            action=f"/console/rounds/{round_id}/cancel",
            verb="Cancel the round",
            back=f"/console/rounds/{round_id}",
        )

    @router.post("/rounds/{round_id}/cancel")
    def cancel(
        request: Request, session: SignedIn, _: CheckedForm, ctx: Context, round_id: DbId
    ) -> Response:
        def action() -> str:
            with ctx.db.write() as db:
                rounds.cancel_round(db, round_id, _actor(session))
            return f"Round {round_id} cancelled."

        return console(request).act(request, session, f"/console/rounds/{round_id}", action)

    @router.get("/rounds")
    def round_history(request: Request, session: SignedIn, ctx: Context) -> Response:
        return console(request).render(request, session, "rounds.html", _history(ctx))

    @router.get("/fragments/rounds")
    def round_history_fragment(request: Request, session: SignedIn, ctx: Context) -> Response:
        return console(request).render(request, session, "rounds_table.html", _history(ctx))

    @router.get("/rounds/{round_id}")
    def round_detail(request: Request, session: SignedIn, ctx: Context, round_id: DbId) -> Response:
        return console(request).render(request, session, "round.html", _round(ctx, round_id))

    @router.get("/fragments/rounds/{round_id}")
    def round_fragment(
        request: Request, session: SignedIn, ctx: Context, round_id: DbId
    ) -> Response:
        return console(request).render(request, session, "round_body.html", _round(ctx, round_id))

    @router.get("/models")
    def model_list(request: Request, session: SignedIn, ctx: Context) -> Response:
        with ctx.db.read() as db:
            infos = models_registry.list_infos(db)
        names = sorted({name for info in infos for name in info.metrics})
        charts = [
            (
                name,
                line_chart(
                    [(i.version, i.metrics[name]) for i in infos if name in i.metrics], name
                ),
            )
            for name in names
        ]
        return console(request).render(
            request,
            session,
            "models.html",
            {"models": list(reversed(infos)), "charts": charts, "metric_names": names},
        )

    @router.get("/models/{version}/promote")
    def confirm_promote(request: Request, session: SignedIn, version: VersionNumber) -> Response:
        return console(request).confirm(
            request,
            session,
            question=f"Promote version {version} to production?",
            consequence=("Sites pull the production version and serve it to clinicians."),
            action=f"/console/models/{version}/promote",
            verb="Promote",
            back="/console/models",
        )

    @router.post("/models/{version}/promote")
    def promote(
        request: Request, session: SignedIn, _: CheckedForm, ctx: Context, version: VersionNumber
    ) -> Response:
        def action() -> str:
            with ctx.db.write() as db:
                models_registry.promote(db, version, _actor(session))
            return f"Version {version} is production."

        return console(request).act(request, session, "/console/models", action)

    @router.get("/models/rollback")
    def confirm_rollback(request: Request, session: SignedIn) -> Response:
        return console(request).confirm(
            request,
            session,
            question="Roll production back?",
            consequence=("Production returns to the version it had before the last promotion."),
            action="/console/models/rollback",
            verb="Roll back",
            back="/console/models",
        )

    @router.post("/models/rollback")
    def rollback(request: Request, session: SignedIn, _: CheckedForm, ctx: Context) -> Response:
        def action() -> str:
            with ctx.db.write() as db:
                info = models_registry.rollback(db, _actor(session))
            return f"Rolled back: version {info.version} is production."

        return console(request).act(request, session, "/console/models", action)

    @router.get("/audit")
    def audit_log(
        request: Request,
        session: SignedIn,
        ctx: Context,
        action: Annotated[str | None, Query(max_length=40)] = None,
        actor: Annotated[str | None, Query(max_length=120)] = None,
        before: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        with ctx.db.read() as db:
            events = audit.query(
                db, action=action, actor=actor, before=before, limit=AUDIT_PAGE + 1
            )
        more = len(events) > AUDIT_PAGE
        events = events[:AUDIT_PAGE]
        return console(request).render(
            request,
            session,
            "audit.html",
            {
                "events": events,
                "action": action or "",
                "actor": actor or "",
                "before": before,
                "older": events[-1].id if more and events else None,
            },
        )

    return router


def _actor(session: Session) -> str:
    return session.who or ADMIN


def _history(ctx: AppContext) -> dict:
    with ctx.db.read() as db:
        infos = rounds.list_infos(db, None, 100)
        sizes = updates.bytes_by_round(db, [i.id for i in infos])
    live = any(i.state.value in round_rows.ACTIVE_STATES for i in infos)
    return {"rounds": infos, "sizes": sizes, "live": live}


def _round(ctx: AppContext, round_id: int) -> dict:
    with ctx.db.read() as db:
        info = rounds.get_info(db, round_id)
        arrived = updates.summaries(db, round_id)
    return {
        "round": info,
        "arrived": arrived,
        "live": info.state.value in round_rows.ACTIVE_STATES,
        "total_bytes": sum(u.size_bytes for u in arrived),
    }


def install(app: FastAPI, context: AppContext) -> None:
    """Mount the hub console on ``app`` (one line in the app factory)."""
    settings = context.settings
    console = Console(
        service="hub",
        nav=NAV,
        template_package="services.aggregator.console",
        who_for_token=sign_in_with(context.auth),
        token_setting="FEDMEDCLIP_AGG_ADMIN_TOKEN",
        session_secret=reveal(settings.console_session_secret) or None,
    )
    install_console(app, console, build_router())
