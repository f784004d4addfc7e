"""The web console plumbing both services share: sign-in, CSRF, rendering, static assets.

A service builds a :class:`Console` with its own templates, navigation and credential
check, writes its pages as an ``APIRouter`` using the dependencies below, and calls
:func:`install_console` once in its app factory. Pages are server-rendered Jinja2
templates; htmx (vendored in ``static/``) only refreshes live fragments by polling, so
every page works, and every action can be taken, without JavaScript.

* Sign-in: a form posts the service's admin token; :attr:`Console.who_for_token` says who
  that is (the actor written to audit records) or refuses it. Single sign-on plugs in at
  the same point: a flow that verified a person stores ``new_session(who=..., via="oidc")``
  with :meth:`Console.begin` and everything after sign-in is unchanged.
* CSRF: a synchronizer token lives in the signed session and must come back as the
  ``csrf_token`` field of every POST (sign-in included, against login CSRF); a POST
  without it is refused with 403 before the route runs.
* Actions: :meth:`Console.act` runs the same domain function the API route calls,
  turning a domain error (``ServiceError``) into a message on the next page, and answers
  with a redirect (POST/redirect/GET), so reloading a page never repeats an action.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from services.common.auth import Authenticator
from services.common.console.charts import line_chart
from services.common.console.session import (
    Session,
    SessionCodec,
    new_session,
    with_flash,
)
from services.common.problems import InvalidRequest, ServiceError, Unauthenticated

log = logging.getLogger(__name__)


def sign_in_with(auth: Authenticator, role: str = "admin") -> Callable[[str], str | None]:
    """The console's credential check: the service's own :class:`Authenticator`, so the
    static admin token (read live from its secret file) and, where single sign-on is
    configured, a person's IdP token holding ``role`` both sign in; the session's actor
    is the caller's audit name (``admin``, or ``person:<sub> (<name>)``)."""

    def who(credential: str) -> str | None:
        try:
            caller = auth.identify(credential)
        except Unauthenticated:  # a JWT that fails verification: just not a valid credential
            return None
        return caller.actor if caller is not None and role in caller.roles else None

    return who


M = TypeVar("M", bound=BaseModel)

PREFIX = "/console"

SECURITY_HEADERS = {
    # Everything is served by the app itself: no script, style or font from anywhere else,
    # no inline script, no framing, forms post only back here.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """The request needs a signed-in console session and has none."""


class CsrfRejected(Exception):
    """A state-changing request came without the session's CSRF token."""


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str


@dataclass
class Console:
    """One service's console: its title, pages, and who a presented credential is."""

    service: str
    nav: Sequence[NavItem]
    template_package: str
    who_for_token: Callable[[str], str | None]
    """The actor for a correct admin credential, None for a wrong one."""
    token_setting: str
    """The variable that sets the admin credential, named on the sign-in page."""
    session_secret: str | None = None

    def __post_init__(self) -> None:
        self.codec = SessionCodec(self.session_secret)
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [
                    jinja2.PackageLoader(self.template_package, "templates"),
                    jinja2.PackageLoader("services.common.console", "templates"),
                ]
            ),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.globals["line_chart"] = line_chart
        self.templates = Jinja2Templates(env=env)

    def render(
        self,
        request: Request,
        session: Session,
        template: str,
        context: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> Response:
        """A page (or fragment) for ``session``; a pending flash message is shown once."""
        values = {
            "console": self,
            "session": session,
            "flash": session.flash,
            "prefix": PREFIX,
            **(context or {}),
        }
        response = self.templates.TemplateResponse(
            request, template, values, status_code=status_code, headers=SECURITY_HEADERS
        )
        if session.flash is not None:
            self.codec.write(request, response, replace(session, flash=None))
        return response

    def redirect(
        self, request: Request, session: Session, path: str, flash: tuple[str, str] | None = None
    ) -> Response:
        response = RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)
        if flash is not None:
            self.codec.write(request, response, with_flash(session, *flash))
        return response

    def begin(self, request: Request, session: Session, path: str) -> Response:
        """Store a freshly signed-in ``session`` and go to ``path``."""
        response = RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)
        self.codec.write(request, response, session)
        return response

    def confirm(
        self,
        request: Request,
        session: Session,
        *,
        question: str,
        consequence: str,
        action: str,
        verb: str,
        back: str,
    ) -> Response:
        """A confirmation page: the action happens only when its form is submitted."""
        values = {
            "question": question,
            "consequence": consequence,
            "action": action,
            "verb": verb,
            "back": back,
        }
        return self.render(request, session, "confirm.html", values)

    def act(
        self, request: Request, session: Session, back: str, action: Callable[[], str]
    ) -> Response:
        """Run ``action`` (which returns what was done) and go back to ``back``.

        A ``ServiceError`` from the domain code becomes an error message on that page,
        exactly the refusal the API would have answered.
        """
        try:
            message = action()
        except ServiceError as exc:
            return self.redirect(request, session, back, ("error", exc.detail))
        log.info("console action by %s: %s", session.who, message)
        return self.redirect(request, session, back, ("ok", message))


def get_console(request: Request) -> Console:
    return request.app.state.console


ConsoleDep = Annotated[Console, Depends(get_console)]


def signed_in(request: Request, console: ConsoleDep) -> Session:
    """The signed-in session, else :class:`SignInRequired` (a redirect to sign-in)."""
    session = console.codec.read(request)
    if session is None or not session.signed_in:
        raise SignInRequired
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def _token_matches(form: FormData, session: Session | None) -> bool:
    given = form.get("csrf_token")
    return (
        session is not None
        and isinstance(given, str)
        and hmac.compare_digest(given.encode(), session.csrf.encode())
    )


async def checked_form(request: Request, session: SignedIn) -> FormData:
    """The POSTed form of a signed-in session, once its CSRF token has been checked."""
    form = await request.form()
    if not _token_matches(form, session):
        raise CsrfRejected
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def parse_form(model: type[M], data: dict[str, Any]) -> M:
    """Validate form fields with the API's own body model; a 400 naming each bad field."""
    clean = {key: value for key, value in data.items() if value not in ("", None)}
    try:
        return model.model_validate(clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidRequest(f"invalid form: {problems}") from exc


def _safe_next(path: str | None) -> str:
    """Where to go after sign-in: only a console page of this service (no open redirect)."""
    if path and path.startswith(f"{PREFIX}/") and not path.startswith("//") and "\\" not in path:
        return path
    return f"{PREFIX}/"


def _sign_in_page(
    request: Request, console: Console, session: Session, next_path: str, error: str | None
) -> Response:
    response = console.render(
        request,
        session,
        "signin.html",
        {"next": next_path, "error": error},
        status_code=401 if error else 200,
    )
    console.codec.write(request, response, replace(session, flash=None))
    return response


def auth_router() -> APIRouter:
    """Sign-in and sign-out, the only console routes open without a session."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("/signin", response_class=HTMLResponse)
    def sign_in_form(request: Request, console: ConsoleDep, next: str | None = None) -> Response:
        session = console.codec.read(request) or new_session()
        return _sign_in_page(request, console, session, _safe_next(next), None)

    @router.post("/signin", response_class=HTMLResponse)
    async def sign_in(
        request: Request,
        console: ConsoleDep,
        token: Annotated[str, Form(max_length=1000)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        session = console.codec.read(request)
        if not _token_matches(await request.form(), session):
            raise CsrfRejected
        assert session is not None
        # The check may fetch the IdP's keys: off the event loop.
        who = await run_in_threadpool(console.who_for_token, token) if token else None
        if who is None:
            log.warning("console sign-in refused: wrong credential")
            return _sign_in_page(
                request, console, session, _safe_next(next), "That credential is not valid."
            )
        log.info("console sign-in: %s", who)
        return console.begin(request, new_session(who=who, via="token"), _safe_next(next))

    @router.post("/signout")
    def sign_out(request: Request, console: ConsoleDep, _: CheckedForm) -> Response:
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303, headers=SECURITY_HEADERS)
        console.codec.clear(request, response)
        return response

    return router


def install_console(app: FastAPI, console: Console, pages: APIRouter) -> None:
    """Mount the console on ``app``: static assets, sign-in, the service's pages."""
    app.state.console = console

    @app.exception_handler(SignInRequired)
    async def _sign_in_first(request: Request, _: SignInRequired) -> Response:
        target = f"{PREFIX}/signin?next={quote(request.url.path)}"
        if request.method == "GET" and "hx-request" not in request.headers:
            return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        # A fragment or a POST: no page to come back to; htmx follows HX-Redirect.
        headers = SECURITY_HEADERS | {"HX-Redirect": target}
        return HTMLResponse("Sign in first.", status_code=401, headers=headers)

    @app.exception_handler(CsrfRejected)
    async def _csrf_refused(request: Request, _: CsrfRejected) -> Response:
        log.warning("console request refused: missing or wrong CSRF token (%s)", request.url.path)
        session = console.codec.read(request) or new_session()
        return console.render(request, session, "refused.html", status_code=403)

    app.mount(
        f"{PREFIX}/static",
        StaticFiles(packages=[("services.common.console", "static")]),
        name="console-static",
    )
    app.include_router(auth_router())
    app.include_router(pages, prefix=PREFIX, include_in_schema=False)
