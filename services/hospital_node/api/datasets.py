"""``/api/v1/datasets``: register a dataset that is already on the node's disk."""

from __future__ import annotations

from fastapi import APIRouter, status

from services.hospital_node import datasets
from services.hospital_node.api.deps import AdminOnly, ContextDep, SessionDep
from services.hospital_node.api.schemas import DatasetIn, DatasetOut

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], dependencies=AdminOnly)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def register_dataset(body: DatasetIn, ctx: ContextDep) -> DatasetOut:
    """Validate a dataset against the federation's classes and record it (422 lists problems)."""
    dataset = datasets.register_dataset(ctx.settings, ctx.db, body.path, body.name)
    return DatasetOut.model_validate(dataset)


@router.get("", response_model=list[DatasetOut])
def list_datasets(session: SessionDep) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in datasets.list_datasets(session)]
