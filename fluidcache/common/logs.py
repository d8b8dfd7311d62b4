"""Logging set-up for fluidcache processes: one line per event, as text or as JSON.

Every process (``master``, ``worker``, ``mount``, ``up``) calls :func:`setup` once at start with
its role and the ``--log-format`` it was given. A text line is
``TIME ROLE LEVEL LOGGER: MESSAGE``; a JSON line is an object with ``time`` (ISO 8601, UTC),
``level``, ``logger``, ``process`` (the role), ``message`` and, when the record carries one,
``exception`` (the formatted traceback). Newlines inside a message or a traceback are escaped in
text lines, so a log reader never sees one event split over several lines.

Libraries log request headers at DEBUG (botocore prints each signed request), so every line is
passed through :func:`redact` first: credentials in the shapes HTTP and AWS carry them are masked.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re

FORMATS = ("text", "json")
MASK = "***"

# Credentials as requests carry them: an Authorization header's value (Bearer or Basic and a
# token that is not a plain lowercase word, AWS SigV4's Credential=KEY-ID/... and Signature=...),
# and key, token and password fields by name.
_SECRETS = re.compile(
    r"(?P<pre>\b(?:(?:Bearer|Basic)\s+(?=[^\s,'\"}&]*[^a-z\s,'\"}&])|Credential=|Signature=))"
    r"[^\s,'\"}&]+"
    r"|(?P<field>\b(?:aws_access_key_id|aws_secret_access_key|aws_session_token|"
    r"x-amz-security-token|token|password)\b['\"]?\s*[:=]\s*b?['\"]?)[^\s,'\"}&]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with credentials masked (see :data:`_SECRETS`)."""
    return _SECRETS.sub(lambda m: (m.group("pre") or m.group("field")) + MASK, text)


class TextFormatter(logging.Formatter):
    """``TIME ROLE LEVEL LOGGER: MESSAGE`` on one line (tracebacks included, newlines escaped)."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record)).replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message[, exception]."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "process": self.role,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(
            {k: redact(v) if isinstance(v, str) else v for k, v in line.items()},
            ensure_ascii=False,
            default=str,
        )


def setup(name: str, level: str | None = None, fmt: str = "text") -> None:
    """Log to stderr, one line per record, in ``fmt`` (``text`` or ``json``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(name) if fmt == "json" else TextFormatter(name))
    logging.basicConfig(
        level=(level or os.environ.get("FLUIDCACHE_LOG", "INFO")).upper(),
        handlers=[handler],
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a warning is one record too, not lines of its own on stderr
