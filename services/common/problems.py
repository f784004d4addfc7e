"""One error model for every service: RFC 9457 problem details.

Domain code raises a :class:`ServiceError` subclass naming the problem; routers never build
error responses. :func:`install_problem_handlers` turns those, request validation errors,
Starlette's own HTTP errors (unknown path, wrong method, a body over the cap) and anything
unexpected into one body, served as ``application/problem+json``::

    {"type": "urn:fedmedclip:problem:not_found", "title": "Not Found", "status": 404,
     "detail": "round 7 does not exist", "code": "not_found", "errors": [],
     "request_id": "3f2c..."}

``code`` is stable and meant for programs; ``detail`` is one sentence meant for people.
``errors`` lists field problems (validation). A few errors carry extension members (a
rejected dataset's report); RFC 9457 allows them. Input values are never echoed back: they
may be large or sensitive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from services.common.structured_logging import request_id_var

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
CLIENT_CLOSED_REQUEST = 499
"""Status recorded (never sent: nobody is listening) when the client left mid-request."""
TYPE_PREFIX = "urn:fedmedclip:problem:"
"""A URN, not a URL: the type names the problem without pretending to be a web page."""


class FieldError(BaseModel):
    """One problem with the request: where it is, what is wrong, and its pydantic type."""

    loc: list[str | int] = Field(description="Path to the value, e.g. ['body', 'min_clients'].")
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error answer of the aggregator, the node and the inference API."""

    type: str = Field(description="URN naming the kind of problem: urn:fedmedclip:problem:<code>.")
    title: str = Field(description="Short summary of the status (the HTTP reason phrase).")
    status: int
    detail: str = Field(description="One sentence naming the problem (every problem for a 422).")
    code: str = Field(description="Stable machine-readable code, e.g. not_found, too_large.")
    errors: list[FieldError] = Field(default_factory=list, description="Field problems (422).")
    request_id: str = Field("-", description="The request id, as in the X-Request-ID header.")


class ServiceError(Exception):
    """A request that cannot be honoured: status, stable code and a sentence for people.

    Subclasses fix the status and the default code; ``code`` may be narrowed per raise
    (``Conflict("...", code="round_closed")``). ``extra`` adds extension members.
    """

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: Iterable[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class InvalidRequest(ServiceError):
    status, default_code = 400, "bad_request"


class Unauthenticated(ServiceError):
    status, default_code = 401, "unauthenticated"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(ServiceError):
    status, default_code = 403, "forbidden"


class NotFound(ServiceError):
    status, default_code = 404, "not_found"


class Conflict(ServiceError):
    status, default_code = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, default_code = 413, "too_large"


class UnsupportedMediaType(ServiceError):
    status, default_code = 415, "unsupported_media_type"


class Unprocessable(ServiceError):
    status, default_code = 422, "invalid_request"


class BadGateway(ServiceError):
    status, default_code = 502, "bad_gateway"


class Unavailable(ServiceError):
    status, default_code = 503, "unavailable"


class GatewayTimeout(ServiceError):
    status, default_code = 504, "gateway_timeout"


_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    CLIENT_CLOSED_REQUEST: "client_disconnected",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


def code_for_status(status: int) -> str:
    return _CODE_BY_STATUS.get(status, f"http_{status}")


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: Iterable[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` answer; the one place such a body is built."""
    code = code or code_for_status(status)
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = f"HTTP {status}"
    body = Problem(
        type=TYPE_PREFIX + code,
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=list(errors),
        request_id=request_id_var.get(),
    ).model_dump()
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _describe(error: Mapping[str, Any]) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid":
        return f"body: invalid JSON ({cause})" if cause else "body: invalid JSON"
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    message = error.get("msg", "invalid value")
    if cause:
        message = f"{message} ({cause})"
    return f"{where}: {message}" if where else message


def validation_problem(exc: RequestValidationError) -> tuple[str, list[FieldError]]:
    """``invalid request: body.field: message; ...`` naming every problem, and the fields."""
    problems = exc.errors()
    sentence = "invalid request: " + ("; ".join(_describe(e) for e in problems) or "unknown")
    fields = [
        FieldError(
            loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            msg=str(e.get("msg", "invalid value")),
            type=str(e.get("type", "value_error")),
        )
        for e in problems
    ]
    return sentence, fields


ErrorObserver = Callable[[str], None]
"""``observe(code)`` for each error answer (services count them in their metrics)."""


def install_problem_handlers(app: FastAPI, *, observe: ErrorObserver | None = None) -> None:
    """Register the handlers that turn every failure into a problem-details answer."""

    def answer(status: int, detail: str, **kwargs: Any) -> JSONResponse:
        response = problem_response(status, detail, **kwargs)
        if observe is not None:
            observe(kwargs.get("code") or code_for_status(status))
        return response

    async def service_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return answer(
            exc.status,
            exc.detail,
            code=exc.code,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail, fields = validation_problem(exc)
        return answer(422, detail, code="invalid_request", errors=fields)

    async def client_left(request: Request, _: Exception) -> JSONResponse:
        # Not an internal error: one line, no traceback (a dropped upload is cheap to
        # repeat, so a traceback per drop would be a cheap way to flood the logs).
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return answer(
            CLIENT_CLOSED_REQUEST,
            "the client disconnected before the request was read",
            code="client_disconnected",
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI wraps it while parsing forms
            return await client_left(request, exc.__cause__)
        if exc.status_code == 413:
            _keep_this_answer(request.scope)
            limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
            detail = (
                f"request body is larger than the limit of {limit} bytes"
                if isinstance(limit, int)
                else "request body is too large"
            )
        elif exc.status_code == 404 and exc.detail == "Not Found":
            detail = f"no route {request.url.path!r} on this service"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path!r}"
        else:
            detail = str(exc.detail)
        return answer(exc.status_code, detail, headers=exc.headers)

    async def conflict(_: Request, exc: Exception) -> JSONResponse:
        log.warning("integrity error: %s", getattr(exc, "orig", exc))
        return answer(409, "the request conflicts with stored data (a concurrent change?)")

    async def database_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("database error: %s", getattr(exc, "orig", exc))
        return answer(503, "database unavailable, retry later", headers={"Retry-After": "5"})

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return answer(
            500, f"internal error; see the service log for request id {request_id_var.get()}"
        )

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, client_left)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(IntegrityError, conflict)
    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(Exception, unexpected)
    _document_problem_schema(app)


_BODY_LIMIT_RESPONDER_SCOPE_KEY = "starlette._body_limit_responder"


def _keep_this_answer(scope: Scope) -> None:
    """Let our 413 problem reach the client when the body's declared length is over the cap.

    Starlette's body limiter (the one cap mechanism, ``max_body_size``) swaps any answer to a
    request whose ``Content-Length`` exceeds the limit for a plain-text 413 as the answer
    starts. Our answer *is* that 413, with the limit named, so the swap is switched off for
    it; every other answer to such a request is still swapped.
    """
    responder = scope.get(_BODY_LIMIT_RESPONDER_SCOPE_KEY)
    if responder is not None and hasattr(responder, "content_length"):
        responder.content_length = None


def _document_problem_schema(app: FastAPI) -> None:
    """Put ``Problem`` (and ``FieldError``) into the OpenAPI components.

    :func:`problem_responses` documents error answers as ``application/problem+json`` only,
    by reference; FastAPI would add ``application/json`` next to it had they named a model.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" not in components:
            problem = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="serialization"
            )
            components.update(problem.pop("$defs", {}))
            components["Problem"] = problem
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


_DESCRIPTIONS = {
    401: "No or an unknown credential.",
    403: "The credential is valid but not allowed here.",
    404: "The named resource does not exist.",
    409: "The request conflicts with the current state.",
    413: "The request body is larger than this route's limit.",
    415: "The body's media type is not accepted here.",
    422: "The request does not match its schema; `detail` names every problem.",
    502: "An upstream service answered with an error.",
    503: "A dependency is unavailable; retry later.",
    504: "An upstream service did not answer in time.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for routers and apps: each status documented with the problem body.

    Only ``application/problem+json`` is listed (what the handlers send); the ``Problem``
    schema it refers to is added by :func:`install_problem_handlers`.
    """
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


COMMON_RESPONSES = problem_responses(401, 403, 404, 409, 413, 422, 503)
"""The answers every protected route may give, documented once for all three services."""
