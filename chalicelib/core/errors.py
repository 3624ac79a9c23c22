"""The few exception types the bridge uses to decide what happens to an event.

A failure's kind alone decides the event's fate: :class:`RetryableError` can heal (retry queue),
:class:`Held` is the operator's to fix (retry queue, alarmed), :class:`PermanentError` never will (dead-letter
queue). :class:`RejectedRequest` refuses a webhook before any
event was accepted. The kinds in full: docs/architecture.md, "Error kinds".
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base class: ``reason`` is a short, log-safe sentence (never personal data or secrets)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RetryableError(BridgeError):
    """A failure that may heal. ``retry_after`` is the server's hint in seconds, when it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class OutcomeUnknown(RetryableError):
    """The request went out but no answer says what became of it: a read timeout, a connection closed
    before the answer, or a 5xx other than 503. The callee may have applied it. Repeating it is harmless
    where the callee deduplicates, and a duplicate where it cannot (a Fullwhere customer without email
    or phone): the pipeline checks Fullwhere before importing such a guest again."""


class Held(RetryableError):
    """Not the event's fault: the bridge's own configuration or credentials (``cause``: ``credentials_rejected``,
    ``not_configured`` or ``unrouted``). Held on the retry queue for the whole retry horizon, counted and alarmed
    as ``held``, so that fixing the configuration is the only step (docs/reliability.md, "Holding")."""

    CAUSES = ("credentials_rejected", "not_configured", "unrouted")

    def __init__(self, reason: str, cause: str, retry_after: float | None = None):
        super().__init__(reason, retry_after)
        self.cause = cause


class BudgetExhausted(RetryableError):
    """The inline time budget of the webhook request is spent: finish the event from the queue."""


class PermanentError(BridgeError):
    """A failure that retrying cannot fix."""


class QueueUnavailable(BridgeError):
    """Neither the retry queue nor the dead-letter queue could take the event: the platform must redeliver."""


class SettingsError(RuntimeError):
    """The configuration is unusable; the message names the setting, never its value."""


class RejectedRequest(Exception):
    """A webhook refused before any event was accepted; ``status`` is the HTTP answer (400/401/404/413)."""

    def __init__(self, status: int, error: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def unauthorized(reason: str) -> RejectedRequest:
    return RejectedRequest(401, "unauthorized", reason)


def malformed(reason: str) -> RejectedRequest:
    return RejectedRequest(400, "malformed", reason)


def describe_validation_error(exc: Any, limit: int = 10, upper: bool = False) -> str:
    """A pydantic ``ValidationError`` as ``field: problem; ...``: locations and messages, never the values
    (they can be secrets or personal data)."""
    problems = []
    for error in exc.errors()[:limit]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{location.upper() if upper else location}: {error['msg']}")
    return "; ".join(problems)
