"""Log lines carry the request id; LOG_JSON gives one parseable JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from services.common.structured_logging import (
    JsonFormatter,
    RequestIdFilter,
    configure_logging,
    request_id_var,
)


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("root_logging")
def test_json_lines_have_the_request_id_and_fields(capsys):
    configure_logging(json_logs=True)
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("fedmedclip.test").info("served", extra={"fields": {"ms": 3.5}})
    finally:
        request_id_var.reset(token)
    logging.getLogger("fedmedclip.test").warning("outside a request")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["request_id"] == "req-42" and lines[0]["ms"] == 3.5
    assert lines[0]["message"] == "served" and lines[0]["level"] == "info"
    assert lines[1]["request_id"] == "-"


@pytest.mark.usefixtures("root_logging")
def test_configuring_twice_keeps_one_handler_and_text_mode_is_readable(capsys):
    configure_logging(json_logs=True)
    configure_logging(json_logs=False)
    logging.getLogger("fedmedclip.test").info("hello", extra={"fields": {"status": 200}})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("[-] hello status=200")


def test_json_log_lines_carry_the_request_id_and_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.fields = {"status": 201}
    token = request_id_var.set("req-1")
    try:
        assert RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "req-1"
    assert line["status"] == 201 and line["level"] == "info"
