"""Per-event CPU: verify + parse + map + serialise one event, for every connector (issue 6, target 2).

For each platform (the built-in connectors, the declarative sources of the sandbox, and OPERA Cloud's
pulled events), ``--events`` distinct signed deliveries are built with ``sandbox.samples`` and the
guests behind them are fetched once from the sandbox's emulators beforehand, so no network is timed.
Then each delivery goes through what the webhook does with it, in the bridge's own code:

    verify (signature on the raw bytes) → parse (JSON + payload models) → route to the tenant →
    map (normalise names, emails, phones) → serialise (the import body, re-validated as the pipeline
    does, and JSON-encoded as httpx sends it)

timed with ``time.process_time_ns`` (CPU of this process) one delivery at a time; the figure is the
median per event. The floor, from the same run: the same bytes decoded as JSON, HMAC-SHA256'd, and the
resulting customer body JSON-encoded, i.e. what any bridge must do per event.

Run: ``.venv/bin/python -m benchmarks.per_event [--events 300]``
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
from typing import Any

from benchmarks._common import Figure, Silenced, configure_bridge, median, report, summary

LIMIT_MS = 0.5


def _encode(payload: dict[str, Any]) -> bytes:
    # What httpx does with json= (httpx._content.encode_json, 0.28).
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def run(events: int = 300) -> list[Figure]:
    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import Context, WebhookRequest
    from chalicelib.connectors.oracle import pipeline_event, pulled_event
    from chalicelib.domain.fullwhere.models import CustomerImport
    from chalicelib.domain.tenants import get_directory
    from chalicelib.flow import pipeline
    from chalicelib.infra.http import Deadline
    from chalicelib.infra.settings import get_settings
    from sandbox.platforms import guest_uuid
    from sandbox.platforms.oracle import HOTEL as ORACLE_HOTEL
    from sandbox.platforms.oracle import make_event
    from sandbox.samples import SAMPLES
    from sandbox.stack import Sandbox

    figures = []
    with Sandbox(with_aws=False) as sandbox, Silenced():
        configure_bridge(sandbox.environment())
        settings, directory = get_settings(), get_directory()

        def context_for(platform: str, account_id: str | None) -> Context:
            return Context(settings=settings, tenant=directory.route(platform, account_id),
                           deadline=Deadline(30, call_timeout=10))

        for sample in SAMPLES.values():
            connector = get_connector(sample.platform)
            work: list[tuple[Any, dict[str, Any]]] = []  # (delivery or OPERA item, prefetched guests)
            for n in range(1, events + 1):
                delivery = sample.prepare(sandbox, n)
                if sample.pulled:  # OPERA: the dequeued business event stands for the webhook body
                    delivery = make_event(guest_uuid("oracle-event", n), "NEW PROFILE", str(5000000 + n), hotel_id=ORACLE_HOTEL)
                    parsed_events = [pipeline_event(pulled_event(delivery, ORACLE_HOTEL), ORACLE_HOTEL)]
                else:
                    request = WebhookRequest(sample.platform, delivery.body,
                                             {k.lower(): v for k, v in delivery.headers.items()}, delivery.query)
                    parsed_events = connector.parse(request).events
                guests = {event.event_id: connector.fetch(event, context_for(sample.platform, event.account_id))
                          for event in parsed_events}  # the network part, not timed
                work.append((delivery, guests))

            def handle(delivery: Any, guests: dict[str, Any]) -> list[dict[str, Any]]:
                """Everything the webhook does with one delivery but the HTTP calls; the import bodies."""
                if sample.pulled:
                    parsed_events = [pipeline_event(pulled_event(delivery, ORACLE_HOTEL), ORACLE_HOTEL)]
                else:
                    request = WebhookRequest(sample.platform, delivery.body,
                                             {k.lower(): v for k, v in delivery.headers.items()}, delivery.query)
                    connector.verify(request)
                    parsed_events = connector.parse(request).events
                seen, bodies = set(), []
                for event in parsed_events:
                    if event.guest_key and event.guest_key in seen:
                        continue
                    seen.add(event.guest_key)
                    context = Context(settings=settings, tenant=directory.route(sample.platform, event.account_id),
                                      deadline=Deadline(30, call_timeout=10))
                    guest = guests[event.event_id]
                    if guest is None:
                        continue
                    customer = pipeline._map(connector, guest, event, context)
                    if not customer.has_identity():
                        continue
                    customer = CustomerImport.model_validate(customer.payload())  # the pipeline's "import" stage
                    body = customer.payload()
                    _encode(body)
                    bodies.append(body)
                return bodies

            def floor(raw: bytes, bodies: list[dict[str, Any]]) -> None:
                json.loads(raw)
                hmac.new(b"a webhook secret of 32 bytes....", raw, hashlib.sha256).hexdigest()
                for body in bodies:
                    _encode(body)

            # Untimed first pass: builds the deferred models, warms caches, and keeps each delivery's
            # import bodies for the floor.
            expected = [handle(delivery, guests) for delivery, guests in work]
            bridge_ns, floor_ns = [], []
            for (delivery, guests), bodies in zip(work, expected):
                start = time.process_time_ns()
                handle(delivery, guests)
                bridge_ns.append(time.process_time_ns() - start)
                raw = delivery.body if not sample.pulled else json.dumps(delivery).encode()
                start = time.process_time_ns()
                floor(raw, bodies)
                floor_ns.append(time.process_time_ns() - start)
            imported = sum(1 for bodies in expected if bodies)
            note = "" if sample.imports else "verified and acknowledged: nothing to map"
            if sample.imports and imported < len(work):
                note = f"{imported} of {len(work)} deliveries produced a body"
            figures.append(report(Figure("per-event CPU", sample.platform, median(bridge_ns) / 1e6,
                                         median(floor_ns) / 1e6, "ms", LIMIT_MS, kind="absolute", note=note)))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="distinct deliveries per platform")
    args = parser.parse_args()
    run(args.events)
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
