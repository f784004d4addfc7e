"""What the demo prints: 80-column rounds table, one live view, the improvement sentence."""

from __future__ import annotations

import io
import re

from rich.console import Console

from fedmedclip.enums import RoundState
from services.commands.demo.view import (
    MAX_COLUMNS,
    HeldOutResult,
    RoundRecord,
    RoundsView,
    improvement_sentence,
    plain_header,
    plain_row,
    rounds_table,
)


def _record(round_id: int, bacc: float, acc: float = 0.5, f1: float = 0.4) -> RoundRecord:
    scores = {"accuracy": acc, "balanced_accuracy": bacc, "macro_f1": f1}
    return RoundRecord(
        round_id=round_id,
        version=round_id,
        state=RoundState.published,
        seconds=123.4,
        site_metrics={
            "hospital_0": {k: v - 0.1 for k, v in scores.items()},
            "hospital_1": {k: v + 0.1 for k, v in scores.items()},
        },
        bytes_sent={"hospital_0": 120_000, "hospital_1": 130_000},
    )


RECORDS = [_record(1, 0.41), _record(2, 0.6), _record(3, 0.78, acc=0.8, f1=0.4)]


def test_plain_rows_fit_80_columns_and_show_the_site_means() -> None:
    lines = [plain_header(), *(plain_row(r) for r in RECORDS)]
    assert max(len(line) for line in lines) <= MAX_COLUMNS
    assert plain_row(RECORDS[2]).split() == ["3", "0.800", "0.780", "0.400", "122", "3", "123.4"]


def test_the_rich_table_fits_80_columns_even_on_a_wide_terminal() -> None:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(rounds_table(RECORDS, sites=2))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= MAX_COLUMNS
    assert any("0.780" in line for line in lines)


def test_without_a_terminal_each_round_is_printed_once() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with RoundsView(console, sites=2) as view:
        for record in RECORDS:
            view.add(record)
    lines = out.getvalue().splitlines()
    assert lines.count(plain_header()) == 1
    for record in RECORDS:
        assert lines.count(plain_row(record)) == 1
    assert max(len(line) for line in lines) <= MAX_COLUMNS


def test_on_a_terminal_the_table_is_one_live_view() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    with RoundsView(console, sites=2) as view:
        for record in RECORDS:
            view.add(record)
    # A live view redraws in place (cursor movements), a re-printed table would not.
    assert "\x1b[" in out.getvalue()
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue().split("\x1b[2K")[-1])
    assert final.count("Rounds:") == 1


def test_improvement_sentence_states_the_first_and_last_means() -> None:
    sentence = improvement_sentence(RECORDS)
    assert sentence.startswith("The federation learned")
    assert "balanced accuracy rose from 0.41 to 0.78" in sentence
    assert "accuracy rose from 0.50 to 0.80" in sentence
    assert "macro-F1 stayed at 0.40" in sentence


def test_improvement_sentence_says_so_when_nothing_improved() -> None:
    sentence = improvement_sentence([_record(1, 0.6), _record(2, 0.5)])
    assert sentence.startswith("The federation did not improve")
    assert "balanced accuracy fell from 0.60 to 0.50" in sentence


def test_held_out_check_reports_balanced_scores_and_the_confusion() -> None:
    classes = ["nevus", "melanoma", "keratosis", "carcinoma"]
    truths = [c for c in classes for _ in range(4)]
    labels = ["nevus"] * 4 + ["melanoma"] * 3 + ["nevus"] + ["keratosis"] * 4 + ["nevus"] * 4
    result = HeldOutResult(classes, truths, labels)
    assert result.accuracy == 11 / 16
    assert result.balanced_accuracy == (1 + 0.75 + 1 + 0) / 4
    assert result.chance == 0.25
    assert result.confusion()["carcinoma"] == {
        "nevus": 4,
        "melanoma": 0,
        "keratosis": 0,
        "carcinoma": 0,
    }
    lines = result.lines()
    assert max(len(line) for line in lines) <= MAX_COLUMNS
    assert "balanced accuracy 0.69" in lines[1] and "3 classes predicted" in lines[1]
