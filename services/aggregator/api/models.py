"""``/api/v1/models``: global model versions, their blobs, and the production pointer."""

from __future__ import annotations

from fastapi import APIRouter, Response

from fedmedclip.ids import VersionNumber
from fedmedclip.schemas import ModelInfo
from services.aggregator import models_registry
from services.aggregator.api.deps import AdminDep, CallerDep, SessionDep

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("", response_model=list[ModelInfo], summary="All versions, oldest first")
def list_models(_: CallerDep, session: SessionDep) -> list[ModelInfo]:
    return models_registry.list_infos(session)


@router.get("/production", response_model=ModelInfo, summary="The version sites should serve")
def production(_: CallerDep, session: SessionDep) -> ModelInfo:
    return models_registry.production_info(session)


@router.post("/rollback", response_model=ModelInfo, summary="Undo the last promotion")
def rollback(admin: AdminDep, session: SessionDep) -> ModelInfo:
    return models_registry.rollback(session, admin.actor)


@router.get("/{version}", response_model=ModelInfo, summary="One version's metadata")
def get_model(version: VersionNumber, _: CallerDep, session: SessionDep) -> ModelInfo:
    return models_registry.get_info(session, version)


@router.get(
    "/{version}/blob",
    response_class=Response,
    summary="One version's weights (safetensors)",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_blob(version: VersionNumber, _: CallerDep, session: SessionDep) -> Response:
    """The safetensors bytes; ``X-Model-SHA256`` lets the site verify them."""
    blob, sha256 = models_registry.get_blob(session, version)
    return Response(
        content=blob,
        media_type="application/octet-stream",
        headers={"X-Model-SHA256": sha256, "X-Model-Version": str(version), "ETag": f'"{sha256}"'},
    )


@router.post("/{version}/promote", response_model=ModelInfo, summary="Make a version production")
def promote(version: VersionNumber, admin: AdminDep, session: SessionDep) -> ModelInfo:
    return models_registry.promote(session, version, admin.actor)
