"""Structured JSON logs: one line per outcome, no secrets, no personal data.

Each line carries ``outcome`` (received, verified, ignored, imported, duplicate, skipped, queued,
retried, dead_lettered, rejected, failed) with the platform, tenant, event id and attempt when known.
Personal data never reaches a log line in clear: :func:`mask_email`, :func:`mask_phone` and
:func:`mask_name` are the only way it may appear, and :func:`redact_url` strips query values (Mews and
TheFork put their webhook token in the URL).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LOGGER_NAME = "fullwhere_bridge"


class _StdoutHandler(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at emit time (Lambda ships stdout to CloudWatch; tests capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
        except Exception:  # a log line must never break the request
            self.handleError(record)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: tracebacks and messages can quote payloads.
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, default=str, ensure_ascii=False)


def _build_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(_JsonFormatter())
        logger.addHandler(handler)
        # Lambda's runtime puts its own handler on the root logger: don't print every line twice.
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


_logger = _build_logger()


def set_level(level: str) -> None:
    _logger.setLevel(level.upper() if isinstance(level, str) else level)


_EMAIL_IN_TEXT = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
_PHONE_IN_TEXT = re.compile(r"\+?\d[\d .()-]{6,}\d")


def scrub(text: str) -> str:
    """Mask anything that looks like an email or a phone number in free text (error reasons quote APIs)."""
    text = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)) or "", text)
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group(0)) or "", text)


def log(outcome: str, message: str = "", *, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Write one structured line. ``fields`` must already be log-safe (masked, ids only)."""
    fields = {key: value for key, value in fields.items() if value is not None}
    fields["outcome"] = outcome
    if isinstance(fields.get("reason"), str):
        fields["reason"] = scrub(fields["reason"])
    _logger.log(level, message or outcome, extra={"fields": fields}, exc_info=exc_info)


def mask_email(email: str | None) -> str | None:
    """``jane.doe@example.com`` → ``j***@e***.com``: enough to tell two guests apart in a log, no more."""
    if not email:
        return None
    local, _, domain = email.partition("@")
    host, dot, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***{dot}{tld}" if host else f"{local[:1]}***@***"


def mask_phone(phone: str | None) -> str | None:
    """``+33612345678`` → ``+33*******78``."""
    if not phone:
        return None
    visible_head = 3 if phone.startswith("+") else 0
    if len(phone) <= visible_head + 2:
        return "***"
    return phone[:visible_head] + "*" * (len(phone) - visible_head - 2) + phone[-2:]


def mask_name(name: str | None) -> str | None:
    return f"{name[:1]}***" if name else None


def redact_url(url: str) -> str:
    """Replace every query value with ``REDACTED``: tokens travel in query strings."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = urlencode([(key, "REDACTED") for key, _ in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit(parts._replace(query=query))


class Stopwatch:
    """Milliseconds since creation, for the ``latency_ms`` field."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def ms(self) -> float:
        return round((time.monotonic() - self._start) * 1000, 1)
