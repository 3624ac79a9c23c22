"""Retry throughput: a batch of 10 retry jobs against a batch of one (issue 6, target 4).

The sandbox's Fullwhere emulator answers every request after 100 ms (``--latency``). Retry jobs are
sent to the retry queue on moto's server with the bridge's own ``retry_queue.enqueue``, received in one
batch by ``sandbox.aws.LambdaSqsPoller`` (Lambda's SQS event source mapping: it deletes what the
worker reports done), and handed to the app's ``retry_worker`` handler; only the handler is timed.

Two kinds of jobs:

- ``import``: resumes at the Fullwhere import (what a Fullwhere outage leaves behind), one call each;
- ``fetch`` (Mews): resumes at the fetch, so each job makes two calls, the Mews API answering after
  the same latency.

For each kind, the figure is the median time of a 10-job batch, the floor the median time of a 1-job
batch, from the same run (``--rounds`` of each, interleaved). Every batch must come back with no
failed item and every job's customer in Fullwhere. With ``WORKER_CONCURRENCY=1`` (records one after
the other) the 10-job batch would take 10x; the line's note gives that figure too.

Run: ``.venv/bin/python -m benchmarks.retry_throughput [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid

from benchmarks._common import Figure, Silenced, configure_bridge, median, report, summary

LIMIT = 2.0
BATCH = 10


def run(rounds: int = 5, latency: float = 0.1) -> list[Figure]:
    from chalice.local import LambdaContext

    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import Event, WebhookRequest
    from chalicelib.domain import retry_queue
    from sandbox.aws import LambdaSqsPoller
    from sandbox.platforms.mews import ENTERPRISE as MEWS_ENTERPRISE
    from sandbox.platforms.mews import make_customer
    from sandbox.stack import FULLWHERE_KEY, Sandbox

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    figures = []
    with Sandbox(fullwhere_latency=latency) as sandbox, Silenced():
        sandbox.platforms["mews"].latency = latency
        from app import app

        timings: list[float] = []

        def worker(event: dict) -> dict:
            context = LambdaContext("retry_worker", 512, max_runtime_ms=120_000)
            start = time.perf_counter()
            response = app.handler_map["retry_worker"](event, context)
            timings.append(time.perf_counter() - start)
            if response["batchItemFailures"]:
                raise RuntimeError(f"the worker reported failures: {response}")
            return response

        def job(kind: str, n: int) -> retry_queue.RetryJob:
            """A job as the webhook would have queued it: a real Mews event, or a mapped customer."""
            guest = f"retry-{kind}-{n}-{uuid.uuid4().hex[:8]}"
            if kind == "fetch":
                sandbox.platforms["mews"].add_customer(MEWS_ENTERPRISE, make_customer(
                    guest, FirstName=f"Retry{n}", LastName="Mews", Email=f"{guest}@mews.sandbox.example", Phone=None))
                body = json.dumps({"EnterpriseId": MEWS_ENTERPRISE,
                                   "Events": [{"Discriminator": "CustomerAdded", "Value": {"Id": guest}}]}).encode()
                event = get_connector("mews").parse(WebhookRequest("mews", body, {})).events[0]
                return retry_queue.RetryJob(platform="mews", tenant="default", event_id=event.event_id, stage="fetch",
                                            event=event.to_dict(), attempt=1, last_error="benchmark")
            event = Event(event_id=f"partouche-{guest}", kind="customer.created", account_id=None, data={})
            customer = {"firstName": f"Retry{n}", "email": f"{guest}@retry.sandbox.example", "partoucheId": guest,
                        "metadata": {"source": "partouche"}}
            return retry_queue.RetryJob(platform="partouche", tenant="default", event_id=event.event_id, stage="import",
                                        event=event.to_dict(), payload={"customer": customer}, attempt=1,
                                        last_error="benchmark")

        for concurrency in ("10", "1"):
            configure_bridge(sandbox.environment(), WORKER_CONCURRENCY=concurrency)
            poller = LambdaSqsPoller(sandbox.retry_queue_url, worker, endpoint_url=sandbox.aws_endpoint)
            results: dict[tuple[str, int], list[float]] = {}
            for kind in ("import", "fetch"):
                for round_ in range(-1, rounds if concurrency == "10" else 1):  # round -1 warms up
                    for size in (1, BATCH):
                        before = len(sandbox.fullwhere.customers(FULLWHERE_KEY))
                        for n in range(size):
                            retry_queue.enqueue(job(kind, n))
                        timings.clear()
                        handled = poller.poll_once()
                        if handled != size or len(timings) != 1:
                            raise RuntimeError(f"expected one batch of {size}, handled {handled} in {len(timings)}")
                        imported = len(sandbox.fullwhere.customers(FULLWHERE_KEY)) - before
                        if imported != size:
                            raise RuntimeError(f"{size} jobs imported {imported} customers")
                        if round_ >= 0:
                            results.setdefault((kind, size), []).append(timings[0])
            if concurrency == "1":
                sequential = {kind: median(results[(kind, BATCH)]) for kind in ("import", "fetch")}
            else:
                concurrent = results
        for kind, calls in (("import", "1 call per job"), ("fetch", "2 calls per job")):
            figures.append(report(Figure(
                "retry batch", f"10 {kind} jobs (floor: 1 job)", median(concurrent[(kind, BATCH)]) * 1000,
                median(concurrent[(kind, 1)]) * 1000, "ms", LIMIT,
                note=f"{calls}; 10 jobs one at a time (WORKER_CONCURRENCY=1): {sequential[kind] * 1000:.0f} ms")))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed batches of each size and kind")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before the emulators answer")
    args = parser.parse_args()
    run(args.rounds, args.latency)
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
