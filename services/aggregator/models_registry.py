"""Global model versions: storage, metadata, and the production pointer.

Every version is a safetensors blob (via :func:`fedmedclip.model_store.encode_blob`) whose
JSON metadata names its version, parent and task, stored with its sha256 so that sites can
verify what they download. Production is the newest row of ``production_events``.

Changes of production (promote, rollback, reset) are serialised, so that the events form
one chain: each change reads the current event and appends its successor while no other
change can. SQLite gets that from ``BEGIN IMMEDIATE`` (one writer at a time); PostgreSQL
from a transaction-scoped advisory lock taken before the current event is read. (A row
lock on the newest event would not do: a waiter would wake up holding the old newest row.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from fedmedclip.model import adapter_state, build_adapter
from fedmedclip.model_store import blob_sha256, decode_blob, encode_blob
from fedmedclip.schemas import ModelInfo, TaskSpec
from services.aggregator import audit
from services.aggregator.db.models import ModelVersion, ProductionEvent
from services.common.problems import Conflict, NotFound


def _info(model: ModelVersion, production: int | None) -> ModelInfo:
    return ModelInfo.model_validate(model).model_copy(
        update={"is_production": model.version == production}
    )


PRODUCTION_LOCK_KEY = 0x46_4D_43_50  # "FMCP": the hub's one advisory lock


def _lock_production(session: Session) -> None:
    """Hold the production lock until the transaction ends (PostgreSQL; SQLite already is)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PRODUCTION_LOCK_KEY})


def _current_event(session: Session) -> ProductionEvent | None:
    stmt = select(ProductionEvent).order_by(ProductionEvent.id.desc()).limit(1)
    return session.scalars(stmt).first()


def production_version(session: Session) -> int | None:
    event = _current_event(session)
    return None if event is None else event.version


def latest_version(session: Session) -> int | None:
    return session.scalar(select(func.max(ModelVersion.version)))


def _get(session: Session, version: int) -> ModelVersion:
    model = session.get(ModelVersion, version)
    if model is None:
        raise NotFound(f"model version {version} does not exist")
    return model


def get_info(session: Session, version: int) -> ModelInfo:
    return _info(_get(session, version), production_version(session))


def production_info(session: Session) -> ModelInfo:
    version = production_version(session)
    if version is None:
        raise NotFound("no model yet: PUT /api/v1/task creates version 0")
    return get_info(session, version)


def list_infos(session: Session) -> list[ModelInfo]:
    production = production_version(session)
    models = session.scalars(select(ModelVersion).order_by(ModelVersion.version))
    return [_info(m, production) for m in models]


def get_blob(session: Session, version: int) -> tuple[bytes, str]:
    """The blob bytes and their sha256."""
    model = _get(session, version)
    return model.blob, model.blob_sha256


def load_state(session: Session, version: int) -> dict[str, torch.Tensor]:
    tensors, _ = decode_blob(_get(session, version).blob)
    return tensors


def store_version(
    session: Session,
    state: Mapping[str, torch.Tensor],
    *,
    version: int,
    parent_version: int | None,
    task: TaskSpec,
    round_id: int | None = None,
    contributors: Sequence[str] = (),
    update_hashes: Sequence[str] = (),
    metrics: Mapping[str, float] | None = None,
) -> ModelVersion:
    """Encode ``state`` with its metadata and add it as ``version``."""
    meta = {
        "version": version,
        "parent_version": parent_version,
        "round_id": round_id,
        "task": task.model_dump(mode="json"),
        "contributors": list(contributors),
        "update_hashes": list(update_hashes),
        "metrics": dict(metrics or {}),
    }
    blob = encode_blob(state, meta)
    model = ModelVersion(
        version=version,
        parent_version=parent_version,
        round_id=round_id,
        contributors=list(contributors),
        update_hashes=list(update_hashes),
        metrics=dict(metrics or {}),
        blob_sha256=blob_sha256(blob),
        blob=blob,
    )
    session.add(model)
    session.flush()
    return model


def reset_to_version_zero(session: Session, task: TaskSpec) -> ModelVersion:
    """Replace every version by a fresh version 0 for ``task`` and make it production.

    Only called before the first round, when nothing refers to the old versions.
    """
    _lock_production(session)
    session.execute(delete(ProductionEvent))
    session.execute(delete(ModelVersion))
    adapter = build_adapter(task.adapter_config(), seed=task.fam.seed)
    model = store_version(
        session, adapter_state(adapter), version=0, parent_version=None, task=task
    )
    session.add(ProductionEvent(version=0, previous_id=None, action="initial"))
    return model


def promote(session: Session, version: int, actor: str) -> ModelInfo:
    """Make ``version`` production; promoting the current one again changes nothing."""
    model = _get(session, version)
    _lock_production(session)
    current = _current_event(session)
    if current is None or current.version != version:
        session.add(
            ProductionEvent(
                version=version,
                previous_id=None if current is None else current.id,
                action="promote",
            )
        )
        audit.record(
            session,
            actor,
            "model.promote",
            f"model:{version}",
            previous=None if current is None else current.version,
        )
        session.flush()
    return _info(model, version)


def rollback(session: Session, actor: str) -> ModelInfo:
    """Return production to the version it had before the last promotion."""
    _lock_production(session)
    current = _current_event(session)
    if current is None or current.previous_id is None:
        raise Conflict("nothing to roll back to: no earlier production version")
    previous = session.get(ProductionEvent, current.previous_id)
    assert previous is not None  # foreign key
    session.add(
        ProductionEvent(
            version=previous.version, previous_id=previous.previous_id, action="rollback"
        )
    )
    audit.record(
        session, actor, "model.rollback", f"model:{previous.version}", previous=current.version
    )
    session.flush()
    return _info(_get(session, previous.version), previous.version)
