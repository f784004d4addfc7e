"""POST /predict and POST /predict/batch: images in, traceable ensemble predictions out.

Each route has a router of its own so that :func:`include` can give it the body cap its
settings allow (one file, or ``MAX_FILES_PER_REQUEST`` files). A route reads its upload
before it picks the model: a malformed or oversized request is named as such (4xx) even
while no model is loaded (503).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request

from services.common.problems import problem_responses
from services.common.structured_logging import request_id_var
from services.inference_api.api.deps import ClinicianDep, ServiceDep, SettingsDep
from services.inference_api.api.schemas import BatchPredictionOut, ModelRef, PredictionOut
from services.inference_api.settings import InferenceSettings
from services.inference_api.uploads import body_limit, read_uploads

_ERRORS = problem_responses(401, 403, 413, 415, 422, 503)
single = APIRouter(tags=["predict"], responses=_ERRORS)
batch = APIRouter(tags=["predict"], responses=_ERRORS)


def include(app: FastAPI, settings: InferenceSettings) -> None:
    """Mount both routes, each capped to the body its settings allow."""
    most = settings.max_upload_bytes
    app.include_router(single, max_body_size=body_limit(1, most))
    app.include_router(batch, max_body_size=body_limit(settings.max_files_per_request, most))


def _multipart_body(field: str, many: bool) -> dict:
    """OpenAPI description of the multipart body (it is parsed by hand, to cap its size)."""
    file_schema = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": file_schema} if many else file_schema
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: schema},
                    }
                }
            },
        }
    }


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@single.post(
    "/predict",
    response_model=PredictionOut,
    openapi_extra=_multipart_body("file", many=False),
)
async def predict_one(
    request: Request, caller: ClinicianDep, service: ServiceDep, settings: SettingsDep
) -> PredictionOut:
    """Classify one PNG, JPEG or DICOM image sent as multipart field ``file``."""
    started = time.perf_counter()
    uploads = await read_uploads(
        request, field="file", max_files=1, max_bytes=settings.max_upload_bytes
    )
    model = service.serving_model()
    answers = await service.classify(model, uploads, caller, request_id_var.get())
    return PredictionOut.of(answers[0], model, _elapsed_ms(started))


@batch.post(
    "/predict/batch",
    response_model=BatchPredictionOut,
    openapi_extra=_multipart_body("files", many=True),
)
async def predict_batch(
    request: Request, caller: ClinicianDep, service: ServiceDep, settings: SettingsDep
) -> BatchPredictionOut:
    """Classify several images sent as repeated multipart field ``files``, in order.

    All or nothing: if one file cannot be decoded, the answer names it and nothing is
    predicted, so a caller never has to match partial results to its inputs.
    """
    started = time.perf_counter()
    uploads = await read_uploads(
        request,
        field="files",
        max_files=settings.max_files_per_request,
        max_bytes=settings.max_upload_bytes,
    )
    model = service.serving_model()
    answers = await service.classify(model, uploads, caller, request_id_var.get())
    latency = _elapsed_ms(started)
    return BatchPredictionOut(
        predictions=[PredictionOut.of(a, model, latency) for a in answers],
        model=ModelRef.of(model),
        latency_ms=latency,
    )
