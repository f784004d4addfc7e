"""GET /monitoring (how the served models fit this site) and clinician feedback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from services.common.problems import problem_responses
from services.inference_api.api.deps import ClinicianDep, ReaderDep, ServiceDep
from services.inference_api.api.schemas import FeedbackIn, FeedbackOut

router = APIRouter(tags=["monitoring"], responses=problem_responses(401, 403))

PredictionId = Path(pattern=r"^[0-9a-f]{32}$", description="The id of a prediction answer.")


@router.get("/monitoring")
async def monitoring(_: ReaderDep, service: ServiceDep) -> dict[str, Any]:
    """Per model version: predicted classes against the training prior, confidence,
    entropy, ensemble-weight and input histograms, embedding drift and feedback metrics.

    Open to clinicians and the admin: both need to know whether the model still fits.
    """
    return await run_in_threadpool(service.monitoring)


@router.post(
    "/predictions/{prediction_id}/feedback",
    response_model=FeedbackOut,
    responses=problem_responses(404, 422),
)
async def feedback(
    body: FeedbackIn,
    caller: ClinicianDep,
    service: ServiceDep,
    prediction_id: str = PredictionId,
) -> FeedbackOut:
    """Record the label a clinician confirmed for a prediction (a later one replaces it)."""
    del caller  # clinicians only; who confirmed is not needed by the metrics
    result = await run_in_threadpool(service.feedback.confirm, prediction_id, body.label)
    return FeedbackOut(**result)
