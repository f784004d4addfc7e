"""Pure pieces of the aggregator: tokens, header parsing, metric summaries, log format."""

from __future__ import annotations

import json
import logging

import pytest

from services.aggregator.auth import bearer_token
from services.aggregator.closing import StoredUpdate, metrics_summary
from services.aggregator.errors import InvalidRequest, Unauthenticated
from services.aggregator.updates import parse_local_metrics
from services.common.structured_logging import JsonFormatter, RequestIdFilter, request_id_var
from services.common.tokens import hash_token, new_token


def test_tokens_are_random_and_stored_only_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 40
    assert hash_token(first) != hash_token(second)
    assert len(hash_token(first)) == 64 and first not in hash_token(first)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_bearer_header_must_carry_a_token(header) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(header)


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("bearer abc.DEF-1") == "abc.DEF-1"


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


def test_metrics_summary_is_sample_weighted_per_metric() -> None:
    updates = [
        StoredUpdate(1, "a", "x", 10, {"acc": 0.2, "f1": 0.5}),
        StoredUpdate(2, "b", "y", 30, {"acc": 0.6}),
        StoredUpdate(3, "c", "z", 60, {}),
    ]
    summary = metrics_summary(updates)
    assert summary == {"acc": pytest.approx((0.2 * 10 + 0.6 * 30) / 40), "f1": 0.5}
    assert metrics_summary([]) == {}


def test_json_log_lines_carry_the_request_id_and_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.fields = {"status": 201}
    token = request_id_var.set("req-1")
    try:
        assert RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter(upper_levels=True).format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "req-1"
    assert line["status"] == 201 and line["level"] == "INFO"


def test_metrics_summary_keeps_the_worst_privacy_budget() -> None:
    updates = [
        StoredUpdate(1, "a", "x", 90, {"acc": 0.5, "dp_epsilon_total": 1.5}),
        StoredUpdate(2, "b", "y", 10, {"acc": 0.9, "dp_epsilon_total": 8.0}),
    ]
    summary = metrics_summary(updates)
    assert summary["dp_epsilon_total"] == 8.0
    assert summary["acc"] == pytest.approx(0.54)
