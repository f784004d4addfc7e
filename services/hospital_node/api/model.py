"""``/api/v1/model``: the FAM version and private head version the site serves."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from services.hospital_node.api.deps import AdminOnly, ContextDep
from services.hospital_node.api.schemas import HeadOut, ModelOut

router = APIRouter(prefix="/api/v1/model", tags=["model"], dependencies=AdminOnly)


@router.get("", response_model=ModelOut)
def current_model(ctx: ContextDep) -> ModelOut:
    store = ctx.store
    current = store.current()
    if current is None:
        return ModelOut(global_version=None, head_version=None, head=None)
    head = None
    if current.head_version is not None:
        stored = store.load_head(current.head_version)
        head = HeadOut(
            version=stored.version,
            global_version=stored.meta.global_version,
            round_id=stored.meta.round_id,
            metrics=stored.meta.metrics,
            temperatures=asdict(stored.meta.temperatures),
            sha256=stored.sha256,
        )
    return ModelOut(
        global_version=current.global_version, head_version=current.head_version, head=head
    )
