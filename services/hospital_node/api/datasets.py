"""``/api/v1/datasets``: register a dataset that is already on the node's disk."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import JSONResponse
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from services.common.hub_client import HubError, HubRejected
from services.hospital_node.api.deps import AdminOnly, Context
from services.hospital_node.api.schemas import DatasetIn, DatasetOut
from services.hospital_node.datasets import DatasetRejected, confine, inspect_dataset
from services.hospital_node.db import Dataset
from services.hospital_node.hub_client import connect_hub

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"], dependencies=AdminOnly)


def _rejected(exc: DatasetRejected) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={
            "detail": f"the dataset cannot be used: {exc}",
            "problems": exc.problems,
            "report": exc.report,
        },
    )


def _class_names(ctx: Context) -> list[str]:
    """The federation's classes, which a dataset is validated against."""
    try:
        with connect_hub(ctx.settings, interactive=True) as hub:
            return hub.get_task().class_names
    except HubRejected as exc:
        if exc.status_code == status.HTTP_404_NOT_FOUND:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "the federation has no task yet, so there are no classes to check the "
                "dataset against; register it once the hub admin has set the task",
            ) from exc
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from exc
    except HubError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut)
def register_dataset(body: DatasetIn, ctx: Context) -> DatasetOut | JSONResponse:
    """Validate a dataset against the federation's classes and record it (422 lists problems)."""
    roots = ctx.settings.data_roots
    try:
        path = confine(body.path, roots)
    except DatasetRejected as exc:
        return _rejected(exc)
    name = body.name or path.stem
    with ctx.db.session() as session:
        clash = session.scalar(
            select(Dataset).where(or_(Dataset.name == name, Dataset.path == str(path)))
        )
    if clash is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"dataset {clash.name!r} (id {clash.id}) already uses this name or path",
        )
    class_names = _class_names(ctx)
    try:
        records, report = inspect_dataset(path, roots, class_names)
    except DatasetRejected as exc:
        return _rejected(exc)
    try:
        with ctx.db.session() as session:
            dataset = Dataset(name=name, path=str(path), n_images=len(records), report=report)
            session.add(dataset)
            session.flush()
            return DatasetOut.model_validate(dataset)
    except IntegrityError as exc:  # registered concurrently under the same name
        raise HTTPException(status.HTTP_409_CONFLICT, f"dataset {name!r} already exists") from exc


@router.get("", response_model=list[DatasetOut])
def list_datasets(ctx: Context) -> list[DatasetOut]:
    with ctx.db.session() as session:
        rows = session.scalars(select(Dataset).order_by(Dataset.id)).all()
        return [DatasetOut.model_validate(r) for r in rows]
