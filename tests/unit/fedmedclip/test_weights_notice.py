"""The random-weights warning is logged as a warning once per user-facing process only."""

from __future__ import annotations

import logging

import pytest

from fedmedclip.weights_notice import RANDOM_WEIGHTS_ANNOUNCED_ENV, random_weights_level


def test_random_weights_are_a_warning_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RANDOM_WEIGHTS_ANNOUNCED_ENV, raising=False)
    assert random_weights_level() == logging.WARNING


def test_a_caller_with_its_own_warning_gets_an_info_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RANDOM_WEIGHTS_ANNOUNCED_ENV, raising=False)
    assert random_weights_level(warn=False) == logging.INFO


@pytest.mark.parametrize(("value", "level"), [("1", logging.INFO), ("0", logging.WARNING)])
def test_a_process_started_after_the_announcement_logs_info(
    monkeypatch: pytest.MonkeyPatch, value: str, level: int
) -> None:
    monkeypatch.setenv(RANDOM_WEIGHTS_ANNOUNCED_ENV, value)
    assert random_weights_level() == level
