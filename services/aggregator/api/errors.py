"""Exception handlers: every failure becomes ``{"detail": "<what is wrong>"}``.

Validation errors get one readable sentence (``body.min_clients: Input should be ...``)
next to the field list (``services.common.validation``), database conflicts become 409 and an
unreachable database 503, so a client never gets a bare 500 for something it or the
environment did.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError

from services.aggregator.errors import ServiceError, Unauthenticated
from services.common.structured_logging import request_id_var
from services.common.validation import validation_body

log = logging.getLogger(__name__)


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(validation_body(exc), status_code=422)


async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
    log.warning("integrity error: %s", exc.orig)
    return JSONResponse(
        {"detail": "the request conflicts with stored data (a concurrent change?)"},
        status_code=409,
    )


async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
    log.error("database error: %s", exc.orig)
    return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error (request id {request_id_var.get()})"}, status_code=500
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
