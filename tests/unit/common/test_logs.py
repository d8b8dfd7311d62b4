"""Log lines: one per event, in text or JSON, with the exception when there is one."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from fluidcache.common.logs import JsonFormatter, TextFormatter, redact


def record_with_exception() -> logging.LogRecord:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "fluidcache.worker", logging.ERROR, __file__, 1, "fetch %s\nfailed", ("b1",), exc_info
    )


def test_json_line_has_the_fields_and_the_exception() -> None:
    line = JsonFormatter("worker").format(record_with_exception())
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["level"] == "ERROR"
    assert fields["logger"] == "fluidcache.worker"
    assert fields["process"] == "worker"
    assert fields["message"] == "fetch b1\nfailed"
    assert "ZeroDivisionError: division by zero" in fields["exception"]
    assert fields["time"].endswith("+00:00")


def test_json_line_without_exception_has_no_exception_key() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    assert "exception" not in json.loads(JsonFormatter("master").format(record))


def test_text_line_keeps_a_traceback_on_one_line() -> None:
    line = TextFormatter("worker").format(record_with_exception())
    assert "\n" not in line
    assert " worker ERROR fluidcache.worker: fetch b1\\nfailed" in line
    assert "ZeroDivisionError" in line


def test_unknown_format_is_refused() -> None:
    from fluidcache.common import logs

    with pytest.raises(ValueError, match="xml"):
        logs.setup("master", fmt="xml")


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        (
            "'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY/20260101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=0123456789abcdef'",
            ["AKIAEXAMPLEKEY", "0123456789abcdef"],
        ),
        ('headers={"authorization": "Bearer hf_Secret123"}', ["hf_Secret123"]),
        ("Authorization: Basic YWxpY2U6cHc=", ["YWxpY2U6cHc="]),
        ("{'aws_access_key_id': 'AKIA1', 'aws_secret_access_key': 'xyz/Q+'}", ["AKIA1", "xyz/Q+"]),
        ("GET /x?token=abc123&y=1", ["abc123"]),
    ],
)
def test_credentials_in_a_line_are_masked(message: str, secret: list[str]) -> None:
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, message, (), None)
    text = TextFormatter("master").format(record)
    message = json.loads(JsonFormatter("master").format(record))["message"]
    for line in (text, message):
        assert not [s for s in secret if s in line], line
        assert "***" in line


def test_ordinary_words_are_left_alone() -> None:
    text = "Basic authentication failed; token bucket full; Bearer of news"
    assert redact(text) == text
