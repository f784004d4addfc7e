"""Open routes: ``/health`` (alive), ``/ready`` (database and broker), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from services.common.metrics import metrics_response
from services.hospital_node.api.deps import ContextDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
def ready(ctx: ContextDep) -> JSONResponse:
    """Ready when the node database answers and jobs can be run (the broker, if configured)."""
    checks: dict[str, str] = {}
    try:
        ctx.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", reported as such
        checks["database"] = f"error: {exc}"
    try:
        ctx.runner.check()
        checks[ctx.runner.kind] = "ok"
    except Exception as exc:  # kombu raises several unrelated types
        checks[ctx.runner.kind] = f"error: {type(exc).__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"status": "ready" if ok else "not ready", "checks": checks},
    )


@router.get("/metrics", response_class=Response)
def metrics(ctx: ContextDep) -> Response:
    return metrics_response(ctx.metrics.registry)
