"""POST /predict and POST /predict/batch: images in, traceable ensemble predictions out."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from services.common.structured_logging import request_id_var
from services.inference_api.api.deps import ClinicianDep, ServiceDep, SettingsDep
from services.inference_api.api.schemas import BatchPredictionOut, ModelRef, PredictionOut
from services.inference_api.uploads import read_uploads

router = APIRouter(tags=["predict"])

_ERRORS = {
    401: {"description": "Missing or unknown bearer token."},
    403: {"description": "The token is not a clinician token."},
    413: {"description": "Upload over the size cap."},
    415: {"description": "Not a multipart/form-data request."},
    422: {"description": "Missing file, or not a decodable PNG, JPEG or DICOM image."},
    503: {"description": "No model loaded yet."},
}


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


@router.post(
    "/predict",
    response_model=PredictionOut,
    responses=_ERRORS,
    openapi_extra=_multipart_body("file", many=False),
)
async def predict_one(
    request: Request, caller: ClinicianDep, service: ServiceDep, settings: SettingsDep
) -> PredictionOut:
    """Classify one PNG, JPEG or DICOM image sent as multipart field ``file``."""
    started = time.perf_counter()
    model = service.manager.require()
    uploads = await read_uploads(
        request, field="file", max_files=1, max_bytes=settings.max_upload_bytes
    )
    answers = await service.classify(model, uploads, caller, request_id_var.get())
    return PredictionOut.of(answers[0], model, _elapsed_ms(started))


@router.post(
    "/predict/batch",
    response_model=BatchPredictionOut,
    responses=_ERRORS,
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
    model = service.manager.require()
    uploads = await read_uploads(
        request,
        field="files",
        max_files=settings.max_files_per_request,
        max_bytes=settings.max_upload_bytes,
    )
    answers = await service.classify(model, uploads, caller, request_id_var.get())
    latency = _elapsed_ms(started)
    return BatchPredictionOut(
        predictions=[PredictionOut.of(a, model, latency) for a in answers],
        model=ModelRef.of(model),
        latency_ms=latency,
    )
