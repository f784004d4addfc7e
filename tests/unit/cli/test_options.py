"""Typer options generated from a config's described fields (``services.commands.options``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fedmedclip.config_fields import Topic, setting
from fedmedclip.enums import AggregationRule
from services.commands.options import config_from, with_config_options

runner = CliRunner()


@dataclass(frozen=True)
class Toy:
    rounds: int = setting(3, "Rounds to run.", topic=Topic.method, minimum=1)
    rule: AggregationRule = setting(AggregationRule.median, "The rule.", flag="--rule-name")
    factors: tuple[float, ...] = setting((1.0, 2.0), "Factors.", topic=Topic.method)
    secure: bool = setting(False, "Secure.")
    preset: int = 7


def _app(seen: list[Toy], **command_defaults: Any) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_config_options(Toy, **command_defaults)
    def run(settings: dict[str, Any], name: str = "x") -> None:
        """Run the toy."""
        seen.append(config_from(Toy, settings))

    return app


def test_every_described_field_is_an_option_with_the_configs_default() -> None:
    seen: list[Toy] = []
    result = runner.invoke(_app(seen), [])
    assert result.exit_code == 0, result.output
    assert seen == [Toy()]


def test_options_take_the_fields_names_flags_types_and_bounds() -> None:
    seen: list[Toy] = []
    app = _app(seen)
    args = ["--rounds", "5", "--rule-name", "trimmed_mean", "--factors", "0.5, 3", "--secure"]
    assert runner.invoke(app, args).exit_code == 0
    assert seen == [
        Toy(rounds=5, rule=AggregationRule.trimmed_mean, factors=(0.5, 3.0), secure=True)
    ]
    too_few = runner.invoke(app, ["--rounds", "0"])
    assert too_few.exit_code == 2 and "greater than or equal to 1" in too_few.output
    assert runner.invoke(app, ["--preset", "1"]).exit_code == 2  # not described: no option


def test_help_shows_the_help_texts_in_their_topics_panels() -> None:
    output = runner.invoke(_app([]), ["--help"]).output
    titles = re.findall(r"╭─ (.+?) ─", output)
    assert titles == ["Options", "Method"]
    assert "Rounds to run." in output and "--rule-name" in output
    assert "Run the toy." in output


def test_a_command_default_replaces_the_configs_and_an_unknown_one_is_refused() -> None:
    seen: list[Toy] = []
    assert runner.invoke(_app(seen, rounds=9), []).exit_code == 0
    assert seen == [Toy(rounds=9)]
    with pytest.raises(TypeError, match="no described field"):
        _app([], preset=1)


def test_a_list_of_numbers_is_parsed_where_the_config_is_built() -> None:
    given = {"rounds": 3, "rule": "median", "secure": False}
    assert config_from(Toy, given | {"factors": ""}).factors == (1.0, 2.0)  # empty: default
    with pytest.raises(ValueError, match="could not convert"):
        config_from(Toy, given | {"factors": "1,x"})
