"""Operational routes, open to all: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from services.aggregator import rounds
from services.aggregator.api.deps import ContextDep
from services.aggregator.db.migrate import SchemaNotCurrentError, check_current, head_revision
from services.common.metrics import metrics_response

router = APIRouter(tags=["operations"])


@router.get("/health", summary="The process is alive")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Database reachable and migrated", responses={503: {}})
def ready(context: ContextDep) -> JSONResponse:
    """200 once the database is reachable and migrated.

    ``checks.aggregation_leases`` is informational and never makes the hub unready: it
    names rounds another (or a dead) instance is aggregating, which answer 409 to close,
    cancel and new rounds until the lease ends or an admin recovers them. Every other
    route works, so taking the hub out of service would only stop the uploads too.
    """
    try:
        check_current(context.db.engine)
    except SchemaNotCurrentError as exc:
        return JSONResponse({"status": "not ready", "detail": str(exc)}, status_code=503)
    except SQLAlchemyError as exc:
        detail = f"database unreachable: {type(exc).__name__}"
        return JSONResponse({"status": "not ready", "detail": detail}, status_code=503)
    with context.db.read() as session:
        leases = rounds.lease_report(session)
    return JSONResponse(
        {
            "status": "ready",
            "schema_revision": head_revision(),
            "checks": {"aggregation_leases": leases},
        }
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(context: ContextDep) -> Response:
    return metrics_response(context.metrics.registry)
