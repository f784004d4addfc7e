"""The closed value sets: their wire values, and how they refuse an unknown value."""

import json

import pytest

from fedmedclip.enums import (
    AggregationRule,
    JobState,
    Quantization,
    RoundState,
    SimulationCodec,
    SimulationMethod,
    parse_choice,
)
from fedmedclip.schemas import TaskSpec


def test_wire_values_are_the_strings_services_and_stores_already_hold():
    values = {
        kind.__name__: [member.value for member in kind]
        for kind in (Quantization, AggregationRule, SimulationMethod, RoundState, JobState)
    }
    assert values == {
        "Quantization": ["fp16", "int8", "int4"],
        "AggregationRule": ["weighted_mean", "median", "trimmed_mean"],
        "SimulationMethod": ["fedmedclip", "fedclip", "local", "zeroshot", "fedavg"],
        "RoundState": ["open", "aggregating", "published", "failed", "cancelled"],
        "JobState": ["queued", "running", "uploading", "done", "failed"],
    }


def test_members_serialise_as_their_plain_string():
    assert json.dumps({"q": Quantization.int4}) == '{"q": "int4"}'
    assert TaskSpec(class_names=["a", "b"]).model_dump(mode="json")["fam"]["quantization"] == "int4"
    assert RoundState.open == "open" and f"{JobState.done}" == "done"


def test_the_simulator_offers_every_quantisation_and_raw_deltas():
    assert {c.value for c in SimulationCodec} == {q.value for q in Quantization} | {"none"}


def test_parse_choice_accepts_values_and_names_the_choices_otherwise():
    assert parse_choice(AggregationRule, "median", "rule") is AggregationRule.median
    with pytest.raises(ValueError, match="unknown codec 'int2'; use one of fp16, int8, int4, none"):
        parse_choice(SimulationCodec, "int2", "codec")
