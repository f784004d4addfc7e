"""POST /predict/dicomweb: predict a study (or series) straight from the site's PACS.

The instances are listed (QIDO-RS) and retrieved (WADO-RS) from
``FEDMEDCLIP_INFERENCE_DICOMWEB_URL``; instances without pixel data (an earlier SR, a
presentation state) are skipped and listed as such; the images go through the same decode
and predict path as ``POST /predict``. The answer has one result per instance and one for
the study (the class with the highest mean probability). On request the result is also
stored back to the PACS as a DICOM SR (STOW-RS) and returned as a FHIR DiagnosticReport.
The route exists only when a PACS is configured.
"""

from __future__ import annotations

import io
import time
from typing import Annotated, Any, Literal

import pydicom
from fastapi import APIRouter
from pydantic import BaseModel, Field
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool

from services.common.problems import Unprocessable, problem_responses
from services.common.structured_logging import request_id_var
from services.inference_api.api.deps import ClinicianDep, PacsDep, ServiceDep
from services.inference_api.api.schemas import ModelRef, PredictionOut
from services.inference_api.clinical_reports import (
    InstanceResult,
    StudyResult,
    fhir_report,
    structured_report,
)
from services.inference_api.uploads import Upload

router = APIRouter(
    tags=["predict"], responses=problem_responses(401, 403, 404, 413, 422, 502, 503, 504)
)

Uid = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class DicomWebRequest(BaseModel):
    study_instance_uid: Uid
    series_instance_uid: Uid | None = None
    store_sr: bool = Field(False, description="Store the result in the PACS as a DICOM SR.")
    fhir: bool = Field(False, description="Add a FHIR R4 DiagnosticReport to the answer.")


class InstanceOut(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    status: Literal["predicted", "skipped"]
    reason: str | None = None
    prediction: PredictionOut | None = None


class StudyOut(BaseModel):
    study_instance_uid: str
    label: str
    confidence: float
    probabilities: dict[str, float]


class DicomWebOut(BaseModel):
    study: StudyOut
    instances: list[InstanceOut]
    model: ModelRef
    structured_report: dict[str, str] | None = Field(
        None, description="UIDs of the SR stored in the PACS (store_sr)."
    )
    fhir: dict[str, Any] | None = Field(None, description="FHIR DiagnosticReport (fhir).")
    latency_ms: float


def _read(data: bytes) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except (InvalidDicomError, ValueError, EOFError, OSError):
        return None


@router.post("/predict/dicomweb", response_model=DicomWebOut)
async def predict_dicomweb(
    body: DicomWebRequest, caller: ClinicianDep, service: ServiceDep, pacs: PacsDep
) -> DicomWebOut:
    """Predict every image instance of a study (or one series) held by the site's PACS."""
    started = time.perf_counter()
    study = body.study_instance_uid
    blobs = await pacs.retrieve(study, body.series_instance_uid)
    datasets = await run_in_threadpool(lambda: [_read(b) for b in blobs])
    images: list[tuple[pydicom.Dataset, bytes]] = []
    skipped: list[InstanceOut] = []
    for number, (ds, data) in enumerate(zip(datasets, blobs, strict=True), start=1):
        if ds is None:
            skipped.append(_skip(f"part-{number}", "", "not a DICOM Part 10 instance"))
        elif not any(tag in ds for tag in PIXEL_TAGS):
            reason = f"no pixel data (SOP class {ds.get('SOPClassUID', 'unknown')})"
            skipped.append(
                _skip(ds.get("SOPInstanceUID", ""), ds.get("SeriesInstanceUID", ""), reason)
            )
        else:
            images.append((ds, data))
    if not images:
        raise Unprocessable(
            f"the study has no image instance to predict ({len(skipped)} instances without "
            "pixel data)",
            code="no_image_instances",
        )
    model = service.serving_model()
    uploads = [Upload(str(ds.get("SOPInstanceUID", "")), data) for ds, data in images]
    answers = await service.classify(model, uploads, caller, request_id_var.get())
    latency = round((time.perf_counter() - started) * 1000, 2)
    predicted = [
        InstanceOut(
            sop_instance_uid=str(ds.SOPInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            status="predicted",
            prediction=PredictionOut.of(answer, model, latency),
        )
        for (ds, _), answer in zip(images, answers, strict=True)
    ]
    result = StudyResult.of(
        study,
        [
            InstanceResult(
                i.sop_instance_uid,
                i.series_instance_uid,
                a.prediction.label,
                a.prediction.probabilities,
            )
            for i, a in zip(predicted, answers, strict=True)
        ],
    )
    stored = None
    if body.store_sr:
        evidence = [ds for ds, _ in images]
        sr, stored = await run_in_threadpool(structured_report, result, model, evidence)
        await pacs.store([sr])
    return DicomWebOut(
        study=StudyOut(
            study_instance_uid=study,
            label=result.label,
            confidence=result.confidence,
            probabilities=result.probabilities,
        ),
        instances=predicted + skipped,
        model=ModelRef.of(model),
        structured_report=stored,
        fhir=fhir_report(result, model) if body.fhir else None,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _skip(sop: str, series: str, reason: str) -> InstanceOut:
    return InstanceOut(
        sop_instance_uid=str(sop), series_instance_uid=str(series), status="skipped", reason=reason
    )
