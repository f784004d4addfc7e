"""The site's dataset registry: confine datasets to the allowed data roots and validate them.

A node reads images only from folders the site admin allowed (``DATA_ROOTS``). Every
path is resolved (``..`` collapsed, symlinks followed) before the check, and so is every
image a manifest or folder lists, so neither a crafted path nor a symlink inside a root can
make the node read, embed or train on a file outside them.

:func:`register_dataset` is what ``POST /api/v1/datasets`` does; it raises the service
errors of :mod:`services.common.problems`, a rejected dataset as a 422 that keeps the list
of ``problems`` and the validation ``report`` as extension members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedmedclip.data.datasets import (
    DatasetError,
    DatasetReport,
    ImageRecord,
    read_dataset,
    validate_dataset,
)
from services.common.problems import Conflict, Unprocessable
from services.hospital_node.db import Database, Dataset
from services.hospital_node.hub_client import federation_classes
from services.hospital_node.settings import NodeSettings

_LISTED = 5


class DatasetRejected(ValueError):
    """A dataset cannot be registered or used; ``problems`` says why, one sentence each."""

    def __init__(self, problems: Sequence[str], report: dict[str, Any] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
        self.report = report


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset as a job sees it."""

    id: int
    name: str
    path: Path


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root.resolve()) for root in roots)


def confine(path_text: str, roots: Sequence[Path]) -> Path:
    """Resolve ``path_text`` (absolute, or relative to a data root) inside the allowed roots."""
    if not roots:
        raise DatasetRejected(
            ["No data roots are configured (FEDMEDCLIP_NODE_DATA_ROOTS); the node reads no data."]
        )
    if "\x00" in path_text:  # the OS cannot name such a file; Path would raise ValueError
        raise DatasetRejected(["The path contains a NUL character."])
    raw = Path(path_text).expanduser()
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, RuntimeError) as exc:  # symlink loops, permission problems
            raise DatasetRejected([f"{path_text} cannot be resolved: {exc}"]) from exc
        if not _inside(resolved, roots):
            allowed = ", ".join(str(r) for r in roots)
            message = f"{path_text} resolves to {resolved}, outside the data roots ({allowed})."
            raise DatasetRejected([message])
        return resolved
    raise DatasetRejected([f"{path_text} does not exist."])


def _outside_roots(records: Sequence[ImageRecord], roots: Sequence[Path]) -> list[str]:
    outside = [str(r.path) for r in records if not _inside(r.path.resolve(), roots)]
    if not outside:
        return []
    listed = ", ".join(outside[:_LISTED]) + (
        f" and {len(outside) - _LISTED} more" if len(outside) > _LISTED else ""
    )
    return [
        f"{len(outside)} images lie outside the data roots (through symlinks or ../): {listed}."
    ]


def report_dict(report: DatasetReport) -> dict[str, Any]:
    return asdict(report)


def inspect_dataset(
    path: Path, roots: Sequence[Path], class_names: Sequence[str], *, check_images: bool = True
) -> tuple[list[ImageRecord], dict[str, Any]]:
    """Read and validate a dataset; raise :class:`DatasetRejected` listing every problem."""
    try:
        records = read_dataset(path)
    except DatasetError as exc:
        raise DatasetRejected([str(exc)]) from exc
    escaped = _outside_roots(records, roots)
    inside = records if not escaped else [r for r in records if _inside(r.path.resolve(), roots)]
    report = validate_dataset(inside, class_names, check_images=check_images)
    problems = escaped + report.problems
    summary = report_dict(report) | {"problems": problems}
    if problems:
        raise DatasetRejected(problems, summary)
    return records, summary


def load_site_records(
    sources: Sequence[DatasetSource], roots: Sequence[Path], class_names: Sequence[str]
) -> list[ImageRecord]:
    """Every registered dataset's records, re-checked (the folders may have changed).

    Patient ids are qualified by dataset, so two datasets that both number patients from
    1 do not merge unrelated patients into one split group.
    """
    if not sources:
        raise DatasetRejected(
            ["No dataset is registered; register one with POST /api/v1/datasets."]
        )
    records: list[ImageRecord] = []
    for source in sources:
        try:
            found, _ = inspect_dataset(source.path, roots, class_names, check_images=False)
        except DatasetRejected as exc:
            raise DatasetRejected([f"dataset {source.name!r}: {p}" for p in exc.problems]) from exc
        records += [
            ImageRecord(r.path, r.label, f"{source.id}:{r.patient_id}" if r.patient_id else None)
            for r in found
        ]
    return records


def _unusable(exc: DatasetRejected) -> Unprocessable:
    return Unprocessable(
        f"the dataset cannot be used: {exc}",
        code="dataset_rejected",
        extra={"problems": exc.problems, "report": exc.report},
    )


def register_dataset(
    settings: NodeSettings, db: Database, path_text: str, name: str | None
) -> Dataset:
    """Validate a dataset against the federation's classes and record it.

    422 listing every problem for an unusable dataset; 409 for a name or path already
    registered, or while the federation has no task to check the classes against. Takes
    the ``Database``: validation reads every image and asks the hub for the classes, which
    must not hold a transaction open (on SQLite it would stall a running job's progress).
    """
    roots = settings.data_roots
    try:
        path = confine(path_text, roots)
    except DatasetRejected as exc:
        raise _unusable(exc) from exc
    name = name or path.stem
    with db.read() as session:
        clash = session.scalar(
            select(Dataset).where(or_(Dataset.name == name, Dataset.path == str(path)))
        )
    if clash is not None:
        raise Conflict(
            f"dataset {clash.name!r} (id {clash.id}) already uses this name or path",
            code="dataset_exists",
        )
    try:
        records, report = inspect_dataset(path, roots, federation_classes(settings))
    except DatasetRejected as exc:
        raise _unusable(exc) from exc
    try:
        with db.write() as session:
            dataset = Dataset(name=name, path=str(path), n_images=len(records), report=report)
            session.add(dataset)
            return dataset
    except IntegrityError as exc:  # registered concurrently under the same name
        raise Conflict(f"dataset {name!r} already exists", code="dataset_exists") from exc


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.id)))


def has_datasets(session: Session) -> bool:
    """Whether any dataset is registered: without one a node has nothing to train on."""
    return bool(session.scalar(select(func.count()).select_from(Dataset)))
