"""Parsing of an update's ``X-Local-Metrics`` header."""

from __future__ import annotations

import json

import pytest

from services.aggregator.updates import parse_local_metrics
from services.common.problems import InvalidRequest


def test_local_metrics_header_parsing() -> None:
    assert parse_local_metrics(None) == {}
    assert parse_local_metrics('{"acc": 1, "ece": 0.25}') == {"acc": 1.0, "ece": 0.25}
    for bad, message in [
        ('{"acc": NaN}', "finite"),
        ('{"acc": true}', "finite"),
        ('{"": 1}', "1 to 64"),
        ("[]", "JSON object"),
        ("{", "not valid JSON"),
        ('{"acc": ' + "[" * 5000 + "}", "nests 5001 levels"),
        ('{"acc": ' + "7" * 5000 + "}", "more than 20 digits"),
        ('{"acc": {"nested": 1}}', "nests 2 levels"),
        ('{"acc": "' + "x" * 9000 + '"}', "more than 8192"),
        (json.dumps({f"m{i}": i for i in range(65)}), "at most 64"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            parse_local_metrics(bad)
