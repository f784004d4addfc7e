"""Every refusal is a JSON ``{"detail": "..."}`` with a status that names the problem.

Domain errors (a bad image, no model yet) are mapped to HTTP here, once, and each error
is counted by kind in the metrics. Anything unexpected is logged with the request id and
answered 500 without internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from fedmedclip.data.images import ImageDecodeError
from services.common.validation import validation_body
from services.inference_api.batcher import BatcherStopped
from services.inference_api.metrics import InferenceMetrics
from services.inference_api.model_loader import ModelUnavailable

log = logging.getLogger(__name__)

_KIND_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An HTTP refusal with a metrics ``kind`` (defaults to one derived from the status)."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.kind = kind or _KIND_BY_STATUS.get(status_code, f"http_{status_code}")


def install_error_handlers(app: FastAPI, metrics: InferenceMetrics) -> None:
    """Register the handlers that turn exceptions into counted JSON answers."""

    def answer(
        status: int, detail: str | dict, kind: str, headers: dict | None = None
    ) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        body = detail if isinstance(detail, dict) else {"detail": detail}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = getattr(exc, "kind", None) or _KIND_BY_STATUS.get(exc.status_code, "http_error")
        return answer(exc.status_code, str(exc.detail), kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(422, validation_body(exc), "invalid_request")

    @app.exception_handler(ImageDecodeError)
    async def _bad_image(_: Request, exc: ImageDecodeError) -> JSONResponse:
        return answer(422, f"cannot use this image: {exc}", "bad_image")

    @app.exception_handler(ModelUnavailable)
    async def _no_model(_: Request, exc: ModelUnavailable) -> JSONResponse:
        return answer(503, str(exc), "no_model", {"Retry-After": "10"})

    @app.exception_handler(BatcherStopped)
    async def _stopping(_: Request, exc: BatcherStopped) -> JSONResponse:
        return answer(503, str(exc), "shutting_down")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return answer(500, "internal error; see the service log for this request id", "internal")
