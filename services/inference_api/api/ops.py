"""Operational routes, open to probes and scrapers: /health, /ready, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from services.common.metrics import metrics_response
from services.inference_api.api.deps import ContextDep, ServiceDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (it may still be loading its model)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "No model loaded yet."}})
async def ready(service: ServiceDep) -> JSONResponse:
    """200 once a model is loaded and predictions can be answered, 503 before."""
    model = service.manager.model
    if model is None:
        detail = service.manager.unavailable_reason
        return JSONResponse({"status": "not ready", "detail": detail}, status_code=503)
    return JSONResponse(
        {
            "status": "ready",
            "global_version": model.global_version,
            "head_version": model.head_version,
        }
    )


@router.get("/metrics", response_class=Response)
async def metrics(context: ContextDep) -> Response:
    """Prometheus text format (drift and feedback gauges are refreshed first)."""
    await run_in_threadpool(context.service.monitoring)
    return metrics_response(context.metrics.registry)
