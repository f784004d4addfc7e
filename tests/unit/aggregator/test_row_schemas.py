"""The hub's wire schemas read from its rows (``from_attributes``): a schema field that is
neither a column of the row nor one of the few the domain code derives would silently keep
its default, so each schema is checked against its table here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from fedmedclip.schemas import AuditEntry, ModelInfo, NodeInfo, RoundInfo, UpdateReceipt
from services.aggregator.db.models import AuditEvent, Base, ModelVersion, Node, Round, Update
from services.aggregator.rounds import to_info


@pytest.mark.parametrize(
    ("schema", "row", "derived"),
    [
        (RoundInfo, Round, {"updates_received", "secagg_phase_deadline", "participants"}),
        (ModelInfo, ModelVersion, {"is_production"}),
        (UpdateReceipt, Update, set()),
        (NodeInfo, Node, set()),
        (AuditEntry, AuditEvent, set()),
    ],
)
def test_every_schema_field_is_a_column_of_its_row_or_derived(
    schema: type[BaseModel], row: type[Base], derived: set[str]
) -> None:
    assert schema.model_config.get("from_attributes") is True
    assert set(schema.model_fields) - set(row.__table__.columns.keys()) == derived


def _round(**values: object) -> Round:
    now = datetime(2025, 1, 2, tzinfo=UTC)
    return Round(
        id=7,
        state="open",
        base_version=0,
        min_clients=2,
        deadline=now,
        hints={"local_epochs": 3},
        aggregation_rule="weighted_mean",
        created_at=now,
        secure_aggregation=False,
        **values,
    )


def test_a_plain_round_reads_as_its_row_says_with_the_update_count_beside_it() -> None:
    info = to_info(_round(norm_bound_factor=3.0, base_reason="production"), 4)
    assert info.updates_received == 4
    assert info.state.value == "open" and info.aggregation_rule.value == "weighted_mean"
    assert info.hints.local_epochs == 3 and info.hints.batch_size == 64  # defaults filled in
    assert (info.norm_bound_factor, info.base_reason) == (3.0, "production")
    assert info.secure_aggregation is False
    assert info.participants is None and info.secagg_phase_deadline is None
