"""End-to-end: one webhook imported inline, against the bare HTTP calls it needs (issue 6, target 3).

The sandbox runs every emulator on loopback, Fullwhere answering each request after 10 ms
(``--fullwhere-latency``; the platforms' APIs answer at once unless ``--platform-latency`` says
otherwise), and moto's server for the identity ledger. The bridge runs in a child process of its own,
as on Lambda: the emulators' threads (in this process) never compete with it for the GIL. For each
platform that imports a guest, each iteration:

1. prepares a new guest (``sandbox.samples``) and has the child hand its signed webhook to the app's
   Lambda handler (``app(event, context)``, with the API Gateway proxy event Lambda would receive),
   timed there. ``--via test-client`` posts it through chalice's test client instead, which adds its
   own local emulation (it copies and patches ``os.environ`` around every request);
2. has the same child replay, with a bare ``httpx.Client`` (kept alive, like the bridge's), exactly the
   calls the bridge made: the same fetch request(s) to the platform's API, when the platform needs one,
   and the same ``POST /partners/customer`` body to Fullwhere, timed. For Deliveroo and Uber Eats
   (relay phones, no email: their guests go through the DynamoDB identity ledger) the floor also has
   the ledger's two ``UpdateItem`` calls (claim and record), replayed with the same parameters on a key
   of their own with a bare boto3 client.

The figure is the median of (1), the floor the median of (2), over ``--iterations``. Each line also
gives the CPU time of the child's thread for both (``time.thread_time``): the part of the wall time
the bridge's own work accounts for, and the part most inflated when the machine is busy.

Run: ``.venv/bin/python -m benchmarks.end_to_end [--iterations 40]``
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks._common import ROOT, Figure, configure_bridge, median, report, say, summary

LIMIT = 1.10
HOP_BY_HOP = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}


class Bridge:
    """The child process running the bridge (``python -m benchmarks.end_to_end --child``)."""

    def __init__(self, environment: dict[str, str], via: str):
        env = {**os.environ, **environment, "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen([sys.executable, "-m", "benchmarks.end_to_end", "--child", via],
                                         cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **command: Any) -> dict[str, Any]:
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the bridge process ended (exit status {self._process.wait()})")
        return json.loads(answer)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=30)


def run(iterations: int = 40, fullwhere_latency: float = 0.01, platform_latency: float = 0.0,
        platforms: list[str] | None = None, via: str = "lambda-handler") -> list[Figure]:
    from sandbox.samples import webhook_samples
    from sandbox.stack import Sandbox

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    figures = []
    with Sandbox(fullwhere_latency=fullwhere_latency) as sandbox:
        for emulator in sandbox.platforms.values():
            emulator.latency = platform_latency
        bridge = Bridge(sandbox.environment(), via)
        try:
            for sample in webhook_samples():
                if not sample.imports or (platforms and sample.platform not in platforms):
                    continue
                upstream = sandbox.platforms.get(sample.platform)
                bridge_s, floor_s, bridge_cpu, floor_cpu = [], [], [], []
                calls: list[dict[str, Any]] = []
                for n in range(-3, iterations):  # three warm-up deliveries: tokens, deferred models, pools
                    guest = 10_000 + n
                    delivery = sample.prepare(sandbox, guest)
                    # Every other iteration replays the previous guest's calls first, so neither side
                    # always runs right after the other (warm caches) or right after an idle wait.
                    bare_first = n % 2 == 1
                    if bare_first:
                        floor = bridge.ask(op="bare", calls=calls)
                    fullwhere_before = len(sandbox.fullwhere.requests)
                    upstream_before = len(upstream.requests) if upstream else 0

                    answer = bridge.ask(op="webhook", platform=delivery.platform, headers=delivery.headers,
                                        query=delivery.query, body=base64.b64encode(delivery.body).decode())
                    imports = [r for r in sandbox.fullwhere.requests[fullwhere_before:] if r.path == "/partners/customer"]
                    if answer["status"] != 200 or len(imports) != 1:
                        raise RuntimeError(f"{sample.platform}: webhook answered {answer['status']} "
                                           f"with {len(imports)} imports: {answer['body'][:200]!r}")
                    # The same calls, in the bridge's order: fetch(es), the ledger's claim, the import, its record.
                    calls = [_http(call, upstream.url) for call in (upstream.requests[upstream_before:] if upstream else [])]
                    ledger = [{"kind": "dynamodb", **call} for call in answer["dynamodb"]]
                    calls += ledger[:1] + [_http(imports[0], sandbox.fullwhere.url)] + ledger[1:]
                    if not bare_first:
                        floor = bridge.ask(op="bare", calls=calls)
                    if n >= 0:
                        bridge_s.append(answer["elapsed"])
                        floor_s.append(floor["elapsed"])
                        bridge_cpu.append(answer["cpu"])
                        floor_cpu.append(floor["cpu"])
                kinds = [call["kind"] for call in calls]
                what = ["fetch"] * (kinds.count("http") - 1) + [f"ledger x{len(ledger)}"] * bool(ledger) + ["import"]
                figures.append(report(Figure(
                    "end-to-end", sample.platform, median(bridge_s) * 1000, median(floor_s) * 1000, "ms", LIMIT,
                    note=f"floor: {' + '.join(what)}; CPU {median(bridge_cpu) * 1000:.2f} vs {median(floor_cpu) * 1000:.2f} ms")))
        finally:
            bridge.close()
    say(f"(via the {via}; Fullwhere answers after {fullwhere_latency * 1000:g} ms, "
        f"platform APIs after {platform_latency * 1000:g} ms)")
    return figures


def _http(request, base_url: str) -> dict[str, Any]:
    return {"kind": "http", "method": request.method, "url": base_url + request.path,
            "headers": {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP},
            "body": base64.b64encode(request.raw or b"").decode()}


# -- the child process: the bridge, and the bare calls, away from the emulators' threads -------------

def api_gateway_event(platform: str, body: bytes, headers: dict[str, str], query: dict[str, str]) -> dict:
    """The REST API proxy event API Gateway hands the API function (the fields Chalice reads)."""
    return {
        "resource": "/webhooks/{platform}",
        "path": f"/webhooks/{platform}",
        "httpMethod": "POST",
        "headers": dict(headers),
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": dict(query) or None,
        "multiValueQueryStringParameters": {key: [value] for key, value in query.items()} or None,
        "pathParameters": {"platform": platform},
        "stageVariables": None,
        "requestContext": {"resourcePath": "/webhooks/{platform}", "httpMethod": "POST",
                           "path": f"/api/webhooks/{platform}", "stage": "api", "identity": {"sourceIp": "127.0.0.1"}},
        "body": body.decode("utf-8"),
        "isBase64Encoded": False,
    }


def child(via: str) -> int:
    from urllib.parse import urlencode

    import httpx
    from botocore import xform_name
    from chalice.local import LambdaContext

    from chalicelib.infra import aws
    from sandbox import aws as local_aws

    replies = os.fdopen(os.dup(1), "w")
    sys.stdout = open(os.devnull, "w")  # the bridge's log lines: still built and written, not read
    configure_bridge({})  # the environment came with the process
    from app import app

    client = None
    if via == "test-client":
        from chalice.test import Client

        client = Client(app)
    bare = httpx.Client(timeout=10)
    dynamodb = local_aws.client("dynamodb", os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    replays = 0
    ledger_calls: list[dict[str, Any]] = []
    watched: set[int] = set()

    def capture(params: dict[str, Any], model, **_: Any) -> None:
        ledger_calls.append({"operation": model.name, "params": json.loads(json.dumps(params))})

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "webhook":
            body = base64.b64decode(command["body"])
            ledger_calls.clear()
            if client is not None:
                path = f"/webhooks/{command['platform']}" + (f"?{urlencode(command['query'])}" if command["query"] else "")
                start, cpu = time.perf_counter(), time.thread_time()
                response = client.http.post(path, headers=command["headers"], body=body)
                status, answer = response.status_code, response.body.decode("utf-8", "replace")
            else:
                # The event and the context come from the Lambda runtime: built before the clock starts.
                event = api_gateway_event(command["platform"], body, command["headers"], command["query"])
                context = LambdaContext("api_handler", 512)
                start, cpu = time.perf_counter(), time.thread_time()
                response = app(event, context)
                status, answer = response["statusCode"], response["body"]
            reply = {"elapsed": time.perf_counter() - start, "cpu": time.thread_time() - cpu, "status": status,
                     "body": answer, "dynamodb": list(ledger_calls)}
            bridge_dynamodb = aws._clients.get("dynamodb")  # created on the ledger's first call
            if bridge_dynamodb is not None and id(bridge_dynamodb) not in watched:
                watched.add(id(bridge_dynamodb))
                bridge_dynamodb.meta.events.register("provide-client-params.dynamodb.*", capture)
        else:
            replays += 1
            start, cpu = time.perf_counter(), time.thread_time()
            for call in command["calls"]:
                if call["kind"] == "http":
                    bare.request(call["method"], call["url"], headers=call["headers"],
                                 content=base64.b64decode(call["body"]) or None)
                else:  # a ledger call or the sent record's put, on a key of its own (its conditions hold there too)
                    field = "Key" if "Key" in call["params"] else "Item"
                    key = f"bench#{replays}#" + call["params"][field]["pk"]["S"]
                    params = {**call["params"], field: {**call["params"][field], "pk": {"S": key}}}
                    getattr(dynamodb, xform_name(call["operation"]))(**params)
            reply = {"elapsed": time.perf_counter() - start, "cpu": time.thread_time() - cpu}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=40, help="timed webhooks per platform")
    parser.add_argument("--fullwhere-latency", type=float, default=0.01, help="seconds before Fullwhere answers")
    parser.add_argument("--platform-latency", type=float, default=0.0, help="seconds before a platform API answers")
    parser.add_argument("--platform", action="append", help="only these platforms (repeatable)")
    parser.add_argument("--via", choices=("lambda-handler", "test-client"), default="lambda-handler")
    args = parser.parse_args()
    run(args.iterations, args.fullwhere_latency, args.platform_latency, args.platform, args.via)
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
