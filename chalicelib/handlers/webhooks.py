"""The HTTP side: one webhook request in, one acknowledgement out.

Verify, parse, route, run each event inline within the request's budget, then answer what the platform
expects; or 503 when an event could be neither finished nor queued, so that the platform delivers again.
The steps and the answer at each: docs/architecture.md, "The flow of one webhook".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from chalice import Response

from chalicelib.connectors import get_connector
from chalicelib.connectors.base import WebhookRequest
from chalicelib.core.errors import RejectedRequest, SettingsError
from chalicelib.domain.tenants import get_directory, signing_tenant
from chalicelib.flow import dispatch
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import Stopwatch, log
from chalicelib.infra.settings import get_settings

MAX_BODY_BYTES = 256 * 1024
# The answer leaves at least this long before Lambda would end the invocation (a killed invocation answers
# nothing the platform can act on, and API Gateway still has to relay the answer).
LAMBDA_SAFETY_SECONDS = 1.0
# After the inline budget, the time to queue what is left (a few SQS calls: docs/architecture.md, "The queues").
QUEUE_SECONDS = 1.0
# What deferring one event costs (a job document, its share of a bundle; about 17 µs measured on a laptop
# core, a 512 MB Lambda has a fraction of one): a webhook of tens of thousands of events tries fewer inline,
# or none, so that the rest is always queued in time and a redelivery never meets the same wall.
DEFER_SECONDS_PER_EVENT = 40e-6


def json_response(status: int, body: dict) -> Response:
    return Response(body=json.dumps(body), status_code=status, headers={"Content-Type": "application/json"})


def error_response(status: int, error: str, reason: str) -> Response:
    return json_response(status, {"error": error, "reason": reason})


def handle_webhook(platform: str, raw_body: bytes | None, headers: dict, query: dict | None,
                   remaining_ms: Callable[[], float] | None = None) -> Response:
    """``remaining_ms`` is the Lambda context's clock, when there is one: the answer must leave before it ends."""
    try:
        return _handle_webhook(platform, raw_body, headers, query, remaining_ms)
    except SettingsError as exc:
        return _misconfigured(platform, exc)
    except Exception:  # a bug, or a payload nobody anticipated: the platform delivers again, never a 500
        return _unexpected(platform)


def _handle_webhook(platform: str, raw_body: bytes | None, headers: dict, query: dict | None,
                    remaining_ms: Callable[[], float] | None) -> Response:
    watch = Stopwatch()
    started, received_at = time.monotonic(), time.time()
    lambda_left = remaining_ms() / 1000 if remaining_ms else None
    connector = get_connector(platform)
    if connector is None:
        log("rejected", platform=platform[:40], status=404, reason="unknown platform")
        return error_response(404, "unknown_platform", f"no connector for platform {platform[:40]!r}")
    body = raw_body or b""
    log("received", platform=platform, bytes=len(body))
    if len(body) > MAX_BODY_BYTES:
        log("rejected", platform=platform, status=413, reason="body too large")
        return error_response(413, "too_large", f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    request = WebhookRequest(
        platform=platform,
        body=body,
        headers={key.lower(): value for key, value in (headers or {}).items()},
        query=dict(query or {}),
    )
    try:
        settings = get_settings()
        directory = get_directory()
        if connector.own_webhook_secrets() and not any(t.owns_every_account for t in directory.tenants()):
            # Each tenant registered this platform's webhook with its own secret: the body names the accounts, and
            # only the secret of the one tenant owning them all may verify it. The parse is the usual one (size
            # and nesting limits); nothing it found is acted on, or logged, unless the verification passes.
            parsed = connector.parse(request)
            connector.verify(request, signing_tenant(directory, platform, parsed.account_ids()))
        else:
            connector.verify(request)
            parsed = connector.parse(request)
    except RejectedRequest as rejected:
        log("rejected", platform=platform, status=rejected.status, reason=rejected.reason, latency_ms=watch.ms())
        return error_response(rejected.status, rejected.error, rejected.reason)

    log("verified", platform=platform, events=len(parsed.events), ignored=len(parsed.ignored))
    for kind in parsed.ignored:
        log("ignored", platform=platform, event_type=kind[:80], reason="event type not imported")

    # Every event is imported or queued by answer_at: within the platform's wait (the inline budget, then
    # QUEUE_SECONDS to queue the rest) and before Lambda would end the invocation. Events run inline only
    # until QUEUE_SECONDS before that, less what deferring every event would take; the rest are queued
    # without being tried (docs/architecture.md, "The flow of one webhook").
    answer_in = settings.inline_budget_seconds + QUEUE_SECONDS
    if lambda_left is not None:
        answer_in = min(answer_in, lambda_left - LAMBDA_SAFETY_SECONDS)
    answer_at = started + answer_in
    inline_until = (started + min(settings.inline_budget_seconds, answer_in - QUEUE_SECONDS)
                    - len(parsed.events) * DEFER_SECONDS_PER_EVENT)
    deadline = Deadline(inline_until - time.monotonic(), call_timeout=settings.inline_budget_seconds)
    sends = dispatch.Sends()
    seen_guests: set[str] = set()
    all_safe = True
    for event in parsed.events:
        if time.monotonic() > answer_at:  # even deferring the events took too long (tens of thousands of them)
            return _unavailable(platform, "no time left to queue every event", watch)
        if event.guest_key and event.guest_key in seen_guests:
            log("duplicate", platform=platform, event_id=event.event_id, reason="same guest earlier in this webhook")
            continue
        if event.guest_key:
            seen_guests.add(event.guest_key)
        tenant = directory.route(platform, event.account_id)
        if tenant is None:
            dispatch.unrouted(connector, event, settings, sends)
        elif deadline.remaining() < Deadline.MINIMUM_CALL_SECONDS:
            dispatch.defer(connector, event, tenant, sends, received_at)  # no time to try it: the worker will
        else:
            all_safe &= dispatch.first_attempt(connector, event, tenant, settings, deadline, sends)
    # Inline work that overran its budget (a slow DynamoDB call is not bounded by it) still leaves the send up
    # to QUEUE_SECONDS, as long as Lambda would not end first: a late 200 beats a 503 and a redelivery.
    lambda_end = started + lambda_left - LAMBDA_SAFETY_SECONDS if lambda_left is not None else float("inf")
    now = time.monotonic()
    all_safe &= sends.send(max(answer_at - now, min(QUEUE_SECONDS, lambda_end - now)))

    if not all_safe:
        return _unavailable(platform, "an event could be neither imported nor queued", watch)
    log("acknowledged", platform=platform, status=connector.ack_status, latency_ms=watch.ms())
    return Response(body=connector.ack_body, status_code=connector.ack_status,
                    headers={"Content-Type": connector.ack_content_type})


def _unavailable(platform: str, reason: str, watch: Stopwatch) -> Response:
    # Events already imported are imported again when the platform redelivers: harmless (Fullwhere merges on
    # email/phone, the identity ledger keeps guests without either once).
    log("failed", platform=platform, status=503, reason=reason, latency_ms=watch.ms(), level=logging.ERROR)
    return error_response(503, "unavailable", f"{reason}; deliver again")


def _unexpected(platform: str) -> Response:
    # The exception's type only: its message can quote the payload.
    log("failed", "unexpected error in the webhook handler", platform=platform[:40], status=503,
        level=logging.ERROR, exc_info=True)
    return error_response(503, "unavailable", "the bridge could not handle this webhook; deliver again")


def _misconfigured(platform: str, exc: SettingsError) -> Response:
    # A configuration mistake must not lose events: 503 makes the platform deliver again later. Counted as
    # ``misconfigured`` (its own metric and alarm): the operator fixes it, the platform's retries recover it.
    log("misconfigured", platform=platform[:40], status=503, reason=str(exc), level=logging.ERROR)
    return error_response(503, "misconfigured", "the bridge is misconfigured; see its logs")


def handle_handshake(platform: str, headers: dict, query: dict | None) -> Response:
    """A ``GET`` on a webhook URL: the platform's verification handshake, where it has one."""
    try:
        connector = get_connector(platform)
        if connector is None:
            return error_response(404, "unknown_platform", f"no connector for platform {platform[:40]!r}")
        request = WebhookRequest(platform=platform, body=b"", headers={k.lower(): v for k, v in (headers or {}).items()},
                                 query=dict(query or {}))
        status, body, content_type = connector.handshake(request)
    except SettingsError as exc:
        return _misconfigured(platform, exc)
    except Exception:  # the platform asks again later, never a 500
        return _unexpected(platform)
    log("handshake", platform=platform, status=status)
    return Response(body=body, status_code=status, headers={"Content-Type": content_type})
