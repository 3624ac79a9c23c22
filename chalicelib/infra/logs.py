"""Structured JSON logs: one line per outcome, no secrets, no personal data.

Lines written inside a :func:`log_context` (one webhook event, one retry job) carry its fields, so even a
line written deep in the pipeline says which event it is about, and every line of a Lambda invocation
carries its request id and cold-start flag (:func:`invocation`). Personal data appears only through the
``mask_*`` helpers, and every string field is scrubbed again. Each line is also counted as a metric
(:mod:`chalicelib.infra.metrics`). The fields and guarantees: docs/reliability.md, "Logs".
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chalicelib.infra import metrics

# Lines are written straight to stdout (Lambda ships it to CloudWatch; tests capture it) rather than
# through a logging.Logger: a LogRecord and the handler chain were the dearest part of a line
# (docs/performance.md), and nothing here needs handlers.
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}
_level = logging.INFO


def set_level(level: str | int) -> None:
    global _level
    _level = _LEVELS.get(level.upper(), logging.INFO) if isinstance(level, str) else level


# One encoder for every line (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def _write(level: int, message: str, fields: dict[str, Any], exc_info: bool) -> None:
    line: dict[str, Any] = {"ts": round(time.time(), 3), "level": logging.getLevelName(level), "message": message}
    line.update(fields)
    if exc_info:
        exc_type = sys.exc_info()[0]
        if exc_type is not None:
            # The exception type only: tracebacks and messages can quote payloads.
            line["exception"] = exc_type.__name__
    try:
        sys.stdout.write(_ENCODER.encode(line) + "\n")
    except Exception:  # a log line must never break the request
        pass


_EMAIL_IN_TEXT = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
_PHONE_IN_TEXT = re.compile(r"\+?\d[\d .()-]{6,}\d")


def scrub(text: str) -> str:
    """Mask anything that looks like an email or a phone number in free text (error reasons quote APIs)."""
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group(0)) or "", _scrub_emails(text))


# Fields that are identifiers: phone-shaped digits there are ids (Meta lead ids, OPERA profile ids),
# not phone numbers. Emails are masked in them all the same.
_ID_FIELDS = frozenset({"outcome", "platform", "tenant", "event_id", "message_id", "customer_id", "account_id",
                        "hotel_id", "stage", "kind", "status", "request_id"})


MAX_FIELD_LENGTH = 300


def _scrub_emails(text: str) -> str:
    # No "@", no email: checked first because the pattern backtracks over every long run without one
    # (quadratic in the field's length: docs/performance.md).
    if "@" not in text:
        return text
    return _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)) or "", text)


def log(outcome: str, message: str = "", *, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Write one structured line and count it as a metric. ``fields`` should already be log-safe
    (masked, ids only); string values are scrubbed again here."""
    context = _context.get()
    merged: dict[str, Any] = dict(context.fields) if context else dict(_invocation)
    merged.update((key, value) for key, value in fields.items() if value is not None)
    if context and "latency_ms" not in merged:
        merged["latency_ms"] = context.watch.ms()
    merged["outcome"] = outcome
    for key, value in merged.items():
        if isinstance(value, str):
            if len(value) > MAX_FIELD_LENGTH:  # ids and event types come from payloads: bound what a sender writes
                value = value[:MAX_FIELD_LENGTH] + "…"
            merged[key] = _scrub_emails(value) if key in _ID_FIELDS else scrub(value)
    metrics.record(outcome, merged.get("platform"), merged.get("latency_ms"), merged.get("reason"))
    if level >= _level:
        _write(level, message or outcome, merged, exc_info)


class _Context:
    __slots__ = ("fields", "watch")

    def __init__(self, fields: dict[str, Any]):
        self.fields = fields
        self.watch = Stopwatch()


_context: ContextVar[_Context | None] = ContextVar("fullwhere_bridge_log_context", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Lines written inside carry ``fields`` (those of an enclosing context too) and, unless they give
    their own, the milliseconds since this context opened as ``latency_ms``.

    Context variables are per thread: the retry worker opens one in each of its record threads, which
    starts from the invocation's fields (:func:`invocation`).
    """
    outer = _context.get()
    inherited = dict(outer.fields) if outer else dict(_invocation)
    inherited.update((key, value) for key, value in fields.items() if value is not None)
    token = _context.set(_Context(inherited))
    try:
        yield
    finally:
        _context.reset(token)


# The fields of the Lambda invocation under way (request id, cold start). A module variable, not a context
# variable: threads do not inherit context variables, and the lines of the threads an invocation starts
# (the retry worker's records, a bundle's jobs) must carry them too. Lambda runs one invocation at a
# time per process, so there is only ever one.
_invocation: dict[str, Any] = {}


@contextmanager
def invocation(**fields: Any) -> Iterator[None]:
    """One Lambda invocation: every line written until it ends, in any thread, carries ``fields``, and
    lines written in this thread share one :func:`log_context`."""
    global _invocation
    outer = _invocation
    _invocation = {key: value for key, value in fields.items() if value is not None}
    try:
        with log_context(**_invocation):
            yield
    finally:
        _invocation = outer


def bind(**fields: Any) -> None:
    """Add fields to the current :func:`log_context` (e.g. once a job's platform and tenant are read)."""
    context = _context.get()
    if context is not None:
        context.fields.update((key, value) for key, value in fields.items() if value is not None)


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
