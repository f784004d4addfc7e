"""The simulator's config: closed value sets are members, bounds are the declared ones,
and the module loads without torch (``fedmedclip simulate --help`` is built from it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedmedclip.enums import (
    AggregationRule,
    DPMode,
    OptimizerSettings,
    SimulationCodec,
    SimulationCombination,
)
from fedmedclip.simulator.config import SimulationConfig


def test_closed_value_sets_are_enum_members_also_when_given_as_text() -> None:
    config = SimulationConfig(
        codec="fp16",  # type: ignore[arg-type]
        aggregation_rule="median",  # type: ignore[arg-type]
        combination="head",  # type: ignore[arg-type]
        settings="reference",  # type: ignore[arg-type]
    )
    assert config.codec is SimulationCodec.fp16
    assert config.aggregation_rule is AggregationRule.median
    assert config.combination is SimulationCombination.head
    assert config.settings is OptimizerSettings.reference
    assert config.dp_mode is DPMode.local
    assert config.to_dict()["combination"] == "head"  # a member is its string on the wire


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"combination": "vote"}, "unknown combination 'vote'"),
        ({"settings": "paper"}, "unknown settings 'paper'"),
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"fedavg_batch_size": 1}, "fedavg_batch_size must be at least 2"),
        ({"prune_weight": -0.1}, "prune_weight must be at least 0"),
    ],
)
def test_refused_settings_are_named(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**settings)


def test_the_config_loads_without_torch() -> None:
    code = (
        "import sys; from fedmedclip.simulator.config import SimulationConfig; "
        "SimulationConfig(); print('torch' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"


def test_the_simulator_trains_with_the_defaults_a_hub_sends_and_a_node_uses() -> None:
    """One table (fedmedclip.training_defaults) holds them: a benchmark run with default
    options trains as a hospital does in a round opened with default hints."""
    from fedmedclip.schemas import TrainingHints
    from fedmedclip.site_round import train_config

    simulation, hints = SimulationConfig(), TrainingHints()
    shared = set(TrainingHints.model_fields) & set(SimulationConfig.__dataclass_fields__)
    assert shared >= {"local_epochs", "lr", "batch_size", "kd_weight", "prune_weight"}
    assert {n: getattr(simulation, n) for n in shared} == {n: getattr(hints, n) for n in shared}
    node = train_config(hints, device="cpu")
    assert (node.epochs, node.lr, node.batch_size, node.kd_weight, node.kd_temperature) == (
        hints.local_epochs,
        hints.lr,
        hints.batch_size,
        hints.kd_weight,
        hints.kd_temperature,
    )
