"""The HTTP side: one webhook request in, one acknowledgement out.

Verify, parse, route, run each event inline within the request's budget, then answer what the platform
expects; or 503 when an event could be neither finished nor queued, so that the platform delivers again.
The steps and the answer at each: docs/architecture.md, "The flow of one webhook".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from chalice import Response

from chalicelib.connectors import get_connector
from chalicelib.connectors.base import WebhookRequest
from chalicelib.core.errors import RejectedRequest, SettingsError
from chalicelib.domain.tenants import get_directory
from chalicelib.flow import dispatch
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import Stopwatch, log
from chalicelib.infra.settings import get_settings

MAX_BODY_BYTES = 256 * 1024


def json_response(status: int, body: dict) -> Response:
    return Response(body=json.dumps(body), status_code=status, headers={"Content-Type": "application/json"})


def error_response(status: int, error: str, reason: str) -> Response:
    return json_response(status, {"error": error, "reason": reason})


def handle_webhook(platform: str, raw_body: bytes | None, headers: dict, query: dict | None,
                   remaining_ms: Callable[[], float] | None = None) -> Response:
    watch = Stopwatch()
    try:
        connector = get_connector(platform)
    except SettingsError as exc:
        return _misconfigured(platform, exc)
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
        connector.verify(request)
        parsed = connector.parse(request)
        directory = get_directory()
    except RejectedRequest as rejected:
        log("rejected", platform=platform, status=rejected.status, reason=rejected.reason, latency_ms=watch.ms())
        return error_response(rejected.status, rejected.error, rejected.reason)
    except SettingsError as exc:
        return _misconfigured(platform, exc)

    log("verified", platform=platform, events=len(parsed.events), ignored=len(parsed.ignored))
    for kind in parsed.ignored:
        log("ignored", platform=platform, event_type=kind[:80], reason="event type not imported")

    deadline = Deadline(settings.inline_budget_seconds, call_timeout=settings.inline_budget_seconds)
    seen_guests: set[str] = set()
    all_safe = True
    for event in parsed.events:
        if event.guest_key and event.guest_key in seen_guests:
            log("duplicate", platform=platform, event_id=event.event_id, reason="same guest earlier in this webhook")
            continue
        if event.guest_key:
            seen_guests.add(event.guest_key)
        tenant = directory.route(platform, event.account_id)
        if tenant is None:
            all_safe &= dispatch.unrouted(connector, event)
            continue
        all_safe &= dispatch.first_attempt(connector, event, tenant, settings, deadline)

    if not all_safe:
        return error_response(503, "unavailable", "an event could be neither imported nor queued; deliver again")
    log("acknowledged", platform=platform, status=connector.ack_status, latency_ms=watch.ms())
    return Response(body=connector.ack_body, status_code=connector.ack_status,
                    headers={"Content-Type": connector.ack_content_type})


def _misconfigured(platform: str, exc: SettingsError) -> Response:
    # A configuration mistake must not lose events: 503 makes the platform deliver again later.
    log("failed", platform=platform[:40], status=503, reason=str(exc), level=logging.ERROR)
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
    log("handshake", platform=platform, status=status)
    return Response(body=body, status_code=status, headers={"Content-Type": content_type})


def health() -> dict:
    """Version and which platforms can be received (whether their secret is set; never the secret)."""
    from chalicelib import __version__
    from chalicelib.connectors import all_connectors

    try:
        settings = get_settings()
        # A platform's own settings load here too: an invalid one makes the bridge misconfigured.
        platforms = {connector.name: {"configured": connector.configured()} for connector in all_connectors()}
    except SettingsError as exc:
        return {"status": "misconfigured", "version": __version__, "reason": str(exc)}
    return {
        "status": "ok",
        "version": __version__,
        "platforms": platforms,
        "retry_queue": bool(settings.retry_queue_url),
        "dead_letter_queue": bool(settings.dead_letter_queue_url),
        "identity_ledger": bool(settings.identity_table),
    }
