"""GET /model (what answers predictions) and POST /model/reload (operators)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from services.common.problems import problem_responses
from services.inference_api.api.deps import AdminDep, ReaderDep, ServiceDep

router = APIRouter(tags=["model"], responses=problem_responses(401, 403, 503))


@router.get("/model")
async def current_model(_: ReaderDep, service: ServiceDep) -> dict[str, Any]:
    """Versions, checksums, backbone, weights and classes of the model being served."""
    return service.serving_model().describe()


@router.post("/model/reload")
async def reload_model(_: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Check the model store (and the hub) now instead of at the next poll.

    Also retries a model that failed to load before, e.g. after a fixed checkpoint path.
    """
    await asyncio.to_thread(service.manager.refresh, True)
    return service.serving_model().describe()
