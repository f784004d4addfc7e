"""Config fields that describe themselves: what a command reads, what the config checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fedmedclip.config_fields import (
    Topic,
    check_minimums,
    coerce_choices,
    described_fields,
    setting,
)
from fedmedclip.enums import AggregationRule


@dataclass(frozen=True)
class Example:
    rounds: int = setting(3, "Rounds.", topic=Topic.method, minimum=1)
    preset: float = 0.5
    rule: AggregationRule = setting(AggregationRule.median, "Rule.", flag="--rule-name")
    clip: float | None = setting(None, "Clip.", minimum=0)

    def __post_init__(self) -> None:
        coerce_choices(self)
        check_minimums(self)


def test_described_fields_are_the_declared_ones_in_order_with_resolved_types() -> None:
    fields = described_fields(Example)
    assert [f.name for f in fields] == ["rounds", "rule", "clip"]  # the preset is not offered
    assert [f.type for f in fields] == [int, AggregationRule, float | None]
    assert [f.default for f in fields] == [3, AggregationRule.median, None]
    assert fields[0].description.topic is Topic.method and fields[0].description.minimum == 1
    assert fields[1].description.flag == "--rule-name"


def test_a_choice_given_as_text_becomes_its_member_and_an_unknown_one_is_refused() -> None:
    assert Example(rule="trimmed_mean").rule is AggregationRule.trimmed_mean  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown rule 'mode'; use one of weighted_mean"):
        Example(rule="mode")  # type: ignore[arg-type]


def test_minimums_are_checked_and_an_unset_optional_value_passes() -> None:
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        Example(rounds=0)
    with pytest.raises(ValueError, match="clip must be at least 0"):
        Example(clip=-1.0)
    assert Example(clip=None, rounds=1).clip is None
