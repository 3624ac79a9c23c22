"""Sustained load: webhooks per second, latency percentiles, and the retry worker's drain rate after an outage.

    .venv/bin/python -m benchmarks.load                       # 1, 4 and 8 containers, 15 s each at most
    .venv/bin/python -m benchmarks.load --containers 4 --seconds 30 --requests 2000

Everything runs on 127.0.0.1 and stops by itself: each level sends at most ``--requests`` webhooks and
lasts at most ``--seconds``; the drain sends ``--outage-jobs`` webhooks.

What is measured:

- **sustained webhooks per second**: ``--containers`` processes, each one a warm Lambda container of the
  API function (the app's Chalice handlers through Chalice's test client, one request at a time, as
  Lambda runs them), send signed webhooks of every platform in turn (a guest each: fetched from the
  platform's API emulator where the platform works that way, imported into Fullwhere, the identity
  ledger on moto's DynamoDB for guests without email or phone). The figure is the webhooks answered
  per second of wall time, all containers together, on this machine.
- **latency p50/p99**: of each webhook, from the request to the platform's acknowledgement, with the
  Fullwhere emulator answering every import after ``--latency`` seconds (50 ms by default).
- **drain rate after an outage**: Fullwhere answers 503 while ``--outage-jobs`` webhooks arrive (each
  event is queued for retry); then it recovers and ``--worker-containers`` processes, each the real
  retry-worker handler fed by ``sandbox.aws.LambdaSqsPoller`` (batches of 10, ``WORKER_CONCURRENCY``
  records at a time), empty the queue. Two figures: jobs per second from recovery to an empty queue
  (moto's SQS included: its receive and delete slow down as the queue grows, so this is a floor), and
  the worker's own rate, from the median time the handler takes for a batch of 10.

The performance benchmarks next to this file (cold start, per-event CPU, end-to-end, retry batch
speed-up) measure single requests; this one measures the bridge under a sustained, mixed stream.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAX_SECONDS = 300  # no level runs longer than this, whatever the arguments say
MAX_REQUESTS = 20_000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- one container (a child process) --------------------------------------------------------------------

def _container(environment: dict[str, str], deliveries: list[Any], warmups: list[Any], ready: Any, start: Any,
               deadline: Any, results: Any) -> None:
    """A warm API container: sends its deliveries one at a time until they run out or the deadline passes."""
    os.environ.update(environment)
    sys.stdout = open(os.devnull, "w")  # the bridge's log lines: written (their cost counts), not kept
    from chalice.test import Client

    from app import app

    timings: list[tuple[str, float, int]] = []
    with Client(app, project_dir=str(ROOT)) as client:
        for delivery in warmups:  # cold start, first connections, first tokens: not measured
            client.http.post(delivery.path, headers=delivery.headers, body=delivery.body)
        ready.set()
        start.wait()
        ends_at = deadline.value  # set by the parent once every container is ready
        for delivery in deliveries:
            if time.time() >= ends_at:
                break
            began = time.perf_counter()
            response = client.http.post(delivery.path, headers=delivery.headers, body=delivery.body)
            timings.append((delivery.platform, (time.perf_counter() - began) * 1000, response.status_code))
    results.put(timings)


def sustained(sandbox: Any, environment: dict[str, str], containers: int, requests: int, seconds: float) -> dict[str, Any]:
    """One load level: ``containers`` processes sharing ``requests`` webhooks, for ``seconds`` at most."""
    from sandbox.samples import webhook_samples

    platforms = [sample for sample in webhook_samples()]
    counter = iter(range(_next_guest(), 10**9))
    deliveries = [platforms[i % len(platforms)].prepare(sandbox, next(counter)) for i in range(requests)]
    warmups = [[sample.prepare(sandbox, next(counter)) for sample in platforms] for _ in range(containers)]
    _next_guest(next(counter))

    context = multiprocessing.get_context("spawn")  # a clean interpreter per container, like Lambda's
    ready = [context.Event() for _ in range(containers)]
    start = context.Event()
    results = context.Queue()
    deadline = context.Value("d", 0.0)
    processes = []
    for index in range(containers):
        share = deliveries[index::containers]
        process = context.Process(target=_container, args=(
            environment, share, warmups[index], ready[index], start, deadline, results), daemon=True)
        process.start()
        processes.append(process)
    for event in ready:
        if not event.wait(timeout=120):
            raise RuntimeError("a container did not start within 2 minutes")
    began = time.time()
    deadline.value = began + seconds
    start.set()
    timings: list[tuple[str, float, int]] = []
    for _ in processes:
        timings += results.get(timeout=seconds + 120)
    wall = time.time() - began
    for process in processes:
        process.join(timeout=30)
    latencies = [ms for _, ms, _ in timings]
    by_platform: dict[str, list[float]] = defaultdict(list)
    for platform, ms, _ in timings:
        by_platform[platform].append(ms)
    return {
        "containers": containers,
        "webhooks": len(timings),
        "seconds": wall,
        "per_second": len(timings) / wall if wall else 0.0,
        "p50": percentile(latencies, 0.50),
        "p90": percentile(latencies, 0.90),
        "p99": percentile(latencies, 0.99),
        "statuses": dict(Counter(status for _, _, status in timings)),
        "platform_p50": {platform: statistics.median(values) for platform, values in sorted(by_platform.items())},
    }


_GUEST = [1_000_000]


def _next_guest(value: int | None = None) -> int:
    if value is not None:
        _GUEST[0] = value
    return _GUEST[0]


# -- the retry worker after an outage ---------------------------------------------------------------------

def _worker_container(environment: dict[str, str], ready: Any, start: Any, deadline: Any, results: Any) -> None:
    """A warm retry-worker container: Lambda's SQS poller hands it batches until the queue is empty."""
    os.environ.update(environment)
    sys.stdout = open(os.devnull, "w")
    from chalice.local import LambdaContext

    from app import app
    from sandbox.aws import LambdaSqsPoller

    batches: list[tuple[int, float]] = []  # (records, handler milliseconds) of each invocation

    def worker(event: dict[str, Any]) -> Any:
        began = time.perf_counter()
        try:
            return app.handler_map["retry_worker"](event, LambdaContext("retry_worker", 512, max_runtime_ms=120_000))
        finally:
            batches.append((len(event["Records"]), (time.perf_counter() - began) * 1000))

    poller = LambdaSqsPoller(environment["RETRY_QUEUE_URL"], worker, endpoint_url=environment["AWS_ENDPOINT_URL_SQS"])
    ready.set()
    start.wait()
    idle = 0
    while time.time() < deadline.value and idle < 3:  # three empty receives in a row: the queue is drained
        idle = 0 if poller.poll_once() else idle + 1
    results.put({"invocations": poller.invocations, "deleted": poller.deleted, "failed": poller.failed,
                 "finished": time.time(), "batches": batches})


def drain_after_outage(sandbox: Any, environment: dict[str, str], jobs: int, worker_containers: int,
                       seconds: float) -> dict[str, Any]:
    """Queue ``jobs`` events while Fullwhere is down, then time ``worker_containers`` worker processes
    emptying the queue once it is back."""
    from chalice.test import Client

    from app import app
    from sandbox.aws import client as aws_client
    from sandbox.emulators.base import Fault
    from sandbox.samples import webhook_samples
    from sandbox.scenarios import bridge_environment

    platforms = [sample for sample in webhook_samples() if sample.imports]
    counter = iter(range(_next_guest(), 10**9))
    deliveries = [platforms[i % len(platforms)].prepare(sandbox, next(counter)) for i in range(jobs)]
    _next_guest(next(counter))
    sqs = aws_client("sqs", environment["AWS_ENDPOINT_URL_SQS"])
    queue = environment["RETRY_QUEUE_URL"]

    def depth() -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    before = len(sandbox.fullwhere.customers("sandbox-key"))
    with bridge_environment(environment), _silenced():
        sandbox.fullwhere.faults.always(Fault("status", status=503))
        with Client(app, project_dir=str(ROOT)) as client:
            statuses = Counter(client.http.post(d.path, headers=d.headers, body=d.body).status_code for d in deliveries)
        sandbox.fullwhere.faults.clear()
    queued = depth()

    context = multiprocessing.get_context("spawn")
    ready = [context.Event() for _ in range(worker_containers)]
    start, deadline, results = context.Event(), context.Value("d", 0.0), context.Queue()
    processes = [context.Process(target=_worker_container, args=(environment, ready[index], start, deadline, results),
                                 daemon=True) for index in range(worker_containers)]
    for process in processes:
        process.start()
    for event in ready:
        if not event.wait(timeout=120):
            raise RuntimeError("a worker container did not start within 2 minutes")
    began = time.time()
    deadline.value = began + seconds
    start.set()
    reports = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    # The last container stops after a few empty receives: the drain ended with the last deleted batch.
    elapsed = max(report["finished"] for report in reports) - began
    imported = len(sandbox.fullwhere.customers("sandbox-key")) - before
    full = [ms for report in reports for records, ms in report["batches"] if records == 10]
    handler_ms = statistics.median(full) if full else float("nan")
    return {"webhooks": jobs, "answers": dict(statuses), "queued": queued, "imported": imported, "left": depth(),
            "seconds": elapsed, "per_second": queued / elapsed if elapsed else 0.0,
            "invocations": sum(report["invocations"] for report in reports), "worker_containers": worker_containers,
            "handler_ms": handler_ms, "handler_per_second": worker_containers * 10 * 1000 / handler_ms}


class _silenced:
    """The bridge's log lines in this process go nowhere (the figures are what we print)."""

    def __enter__(self) -> None:
        self._stdout, sys.stdout = sys.stdout, io.StringIO()

    def __exit__(self, *exc_info: Any) -> None:
        sys.stdout = self._stdout


# -- the run ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sustained load on the bridge, loopback only, bounded.")
    parser.add_argument("--containers", default="1,4,8",
                        help="API containers (processes) per level, comma-separated (default 1,4,8)")
    parser.add_argument("--requests", type=int, default=1500, help="most webhooks per level (default 1500)")
    parser.add_argument("--seconds", type=float, default=15, help="longest a level lasts (default 15 s)")
    parser.add_argument("--latency", type=float, default=0.05, help="Fullwhere emulator's answer time (s)")
    parser.add_argument("--outage-jobs", type=int, default=300, help="webhooks queued during the outage")
    parser.add_argument("--worker-containers", type=int, default=2,
                        help="retry-worker containers (processes) draining the queue (default 2)")
    args = parser.parse_args(argv)
    levels = [max(1, min(32, int(level))) for level in args.containers.split(",") if level.strip()]
    requests = max(1, min(MAX_REQUESTS, args.requests))
    seconds = max(1.0, min(MAX_SECONDS, args.seconds))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from sandbox.scenarios import private_aws
    from sandbox.stack import Sandbox

    print(f"# load: containers {levels}, at most {requests} webhooks and {seconds:g} s per level, "
          f"Fullwhere answering in {args.latency * 1000:.0f} ms; {os.cpu_count()} CPUs", flush=True)
    rows = []
    with Sandbox(with_aws=False, fullwhere_latency=args.latency) as sandbox, \
            private_aws("fullwhere-bridge-load", max_receive_count=20, visibility_timeout=30) as aws_settings:
        environment = {**sandbox.environment(), **aws_settings, "LOG_LEVEL": "INFO"}
        for level in levels:
            result = sustained(sandbox, environment, level, requests, seconds)
            rows.append(result)
            print(f"containers {level:>2}: {result['webhooks']:>5} webhooks in {result['seconds']:5.1f} s = "
                  f"{result['per_second']:6.1f}/s   p50 {result['p50']:6.1f} ms   p90 {result['p90']:6.1f} ms   "
                  f"p99 {result['p99']:6.1f} ms   answers {result['statuses']}", flush=True)
        drain = drain_after_outage(sandbox, {**environment, "RETRY_BASE_SECONDS": "0"}, args.outage_jobs,
                                   max(1, min(10, args.worker_containers)), seconds=seconds * 4)
    print(f"drain: {drain['webhooks']} webhooks during the outage (answers {drain['answers']}), "
          f"{drain['queued']} jobs queued; {drain['imported']} guests imported in {drain['seconds']:.1f} s = "
          f"{drain['per_second']:.1f} jobs/s by {drain['worker_containers']} worker container(s), "
          f"{drain['invocations']} invocations, {drain['left']} left; the handler takes {drain['handler_ms']:.0f} ms "
          f"for a batch of 10 (median): {drain['handler_per_second']:.0f} jobs/s for the worker itself", flush=True)
    print()
    print("| API containers | webhooks | seconds | webhooks/s | p50 ms | p90 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['containers']} | {row['webhooks']} | {row['seconds']:.1f} | {row['per_second']:.1f} | "
              f"{row['p50']:.1f} | {row['p90']:.1f} | {row['p99']:.1f} |")
    print()
    print("| platform | " + " | ".join(f"p50 ms ({row['containers']} containers)" for row in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for platform in rows[0]["platform_p50"]:
        print(f"| {platform} | " + " | ".join(f"{row['platform_p50'].get(platform, float('nan')):.1f}" for row in rows)
              + " |")
    ok = all(set(row["statuses"]) == {200} for row in rows) and drain["left"] == 0 and \
        drain["imported"] >= drain["queued"]
    print(json.dumps({"levels": rows, "drain": drain}, default=str), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
