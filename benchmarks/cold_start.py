"""Cold start and package size, on the package ``make package`` builds (issue 6, targets 1 and 5).

1. ``make package`` into a temporary directory (or ``--package-dir``, an existing output): the size of
   ``deployment.zip`` plus ``layer-deployment.zip`` against the 5 MB budget, beside the zips as
   ``chalice package`` wrote them (sources only, before ``deploy/precompile.py``).
2. Both zips are extracted as Lambda does (``task/`` = ``/var/task``, ``opt/`` = ``/opt``), and boto3 is
   made available after them on ``sys.path`` as the Lambda runtime provides it (links to this
   virtualenv's boto3, botocore, s3transfer and their dependencies). Each timing is one fresh
   ``python -S`` process with only that path (``-S``: not this virtualenv), timing the import statement
   inside the process; ``--rounds`` rounds, each running every statement once, in turn:

   - ``import app``: the figure;
   - issue 10's floor: ``import chalice, httpx`` and ``from pydantic import BaseModel``, then ``import app``,
     in one process;
   - the floor: importing exactly the third-party modules ``import app`` loads (found by a probe
     process: chalice and the layer's modules, in the order the app imports them), so the difference
     is the bridge's own code only;
   - the issue's floor: the bare dependencies the package ships, ``import chalice, httpx, phonenumbers,
     jmespath, yaml`` and ``from pydantic import BaseModel`` (the bridge imports jmespath and yaml only
     for declarative sources, so this floor is the more lenient one).

3. The cold path, for context: a fresh process that imports the app and hands it one Mews webhook
   (the platform that gives up after 5 s) through the Lambda handler, against a process importing the
   floor's modules and making the same two HTTP calls with a bare ``httpx.Client`` (the sandbox's
   emulators, answering at once). Models built on first use and the HTTP client's creation land here.
   It also checks that the webhook, for a guest with an email, never imported boto3.

Run: ``.venv/bin/python -m benchmarks.cold_start [--rounds 15] [--package-dir build/package]``
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import Figure, Package, build_package, extract_for_lambda, median, report, say, summary

LIMIT = 1.15
SIZE_LIMIT_MB = 5.0
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "dateutil", "urllib3", "six", "jmespath")
ISSUE_FLOOR = "import chalice, httpx, phonenumbers, jmespath, yaml\nfrom pydantic import BaseModel"
# Issue 10's measure: `import chalice, httpx; from pydantic import BaseModel`, then `import app`, in one process.
STACK_FLOOR = ["chalice", "httpx", "pydantic.main"]

TIMED = """
import time
_start, _cpu = time.perf_counter(), time.process_time()
{statement}
_wall, _cpu = time.perf_counter() - _start, time.process_time() - _cpu
import json, sys
print(json.dumps({{"wall": _wall, "cpu": _cpu, "boto3": "boto3" in sys.modules}}))
"""

PAIRED = """
import importlib, json, sys, time
_start, _cpu = time.perf_counter(), time.process_time()
for _name in {modules!r}:
    importlib.import_module(_name)
_floor, _cpu_floor = time.perf_counter(), time.process_time()
import app
_end, _cpu_end = time.perf_counter(), time.process_time()
print(json.dumps({{"floor": _floor - _start, "rest": _end - _floor, "cpu_floor": _cpu_floor - _cpu,
                  "cpu_rest": _cpu_end - _cpu_floor, "boto3": "boto3" in sys.modules}}))
"""

PROBE = """
import json, sys
import app
print(json.dumps([name for name, module in sys.modules.items()
                  if any((getattr(module, "__file__", None) or "").startswith(root) for root in sys.argv[1:])]))
"""

FIRST_WEBHOOK = """
import json, sys, time
event = json.loads(sys.stdin.read())

class Context:  # what Chalice reads from Lambda's context object
    function_name, memory_limit_in_mb, aws_request_id = "api_handler", 512, "cold-start"
    def get_remaining_time_in_millis(self):
        return 30_000

start = time.perf_counter()
import app
imported = time.perf_counter()
response = app.app(event, Context())
done = time.perf_counter()
third_party = [name for name, module in sys.modules.items()
               if any((getattr(module, "__file__", None) or "").startswith(root) for root in sys.argv[1:])]
print(json.dumps({"import": imported - start, "first": done - imported, "status": response["statusCode"],
                  "boto3": "boto3" in sys.modules, "modules": third_party}))
"""

BARE_CALLS = """
import json, sys, time, base64, importlib
work = json.loads(sys.stdin.read())
calls = work["calls"]
start = time.perf_counter()
for name in work["modules"]:
    importlib.import_module(name)
imported = time.perf_counter()
import httpx
client = httpx.Client(timeout=10)
for call in calls:
    client.request(call["method"], call["url"], headers=call["headers"], content=base64.b64decode(call["body"]) or None)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "first": done - imported}))
"""


class Layout:
    """The package extracted as on Lambda, and a way to run Python there."""

    def __init__(self, package: Package, root: Path):
        self.task, self.site = extract_for_lambda(package, root)
        runtime = root / "runtime"
        runtime.mkdir()
        for name in RUNTIME_PACKAGES:
            origin = Path(importlib.util.find_spec(name).origin)
            target = origin.parent if origin.name == "__init__.py" else origin
            (runtime / target.name).symlink_to(target)
        self.path = os.pathsep.join(map(str, (self.task, self.site, runtime)))

    @property
    def third_party_roots(self) -> tuple[str, str]:
        """Where chalice and the layer's modules are: what a floor imports."""
        return f"{self.task / 'chalice'}{os.sep}", f"{self.site}{os.sep}"

    def probe(self) -> list[str]:
        """The third-party modules ``import app`` loads, in import order."""
        return self.run(PROBE, *self.third_party_roots)

    def run(self, code: str, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> dict[str, Any]:
        environment = {**(env or {}), "PATH": os.environ["PATH"], "PYTHONPATH": self.path,
                       "PYTHONDONTWRITEBYTECODE": "1"}  # Lambda's filesystem is read-only
        result = subprocess.run([sys.executable, "-S", "-c", code, *args], input=stdin, cwd=self.task,
                                env=environment, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"in the Lambda layout:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def package_size(package: Package) -> Figure:
    total = sum(package.sizes.values()) / 1e6
    detail = ", ".join(f"{name} {size / 1e6:.2f}" for name, size in package.sizes.items())
    return report(Figure("package size", "deployment + layer zips", total, sum(package.chalice_sizes.values()) or None,
                         "MB", SIZE_LIMIT_MB, kind="absolute",
                         note=f"{detail}; floor = chalice package's zips, sources only, before precompile"))


def cold_start(layout: Layout, rounds: int) -> list[Figure]:
    third_party = layout.probe()
    statements = {
        # The floor, then the rest of the app, in one process: both parts under the same conditions.
        "paired": PAIRED.format(modules=third_party),
        "stack paired": PAIRED.format(modules=STACK_FLOOR),
        "app": TIMED.format(statement="import app"),
        "issue floor": TIMED.format(statement=ISSUE_FLOOR),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in statements}
    for round_ in range(rounds + 1):  # round 0 warms the page cache
        order = list(statements)
        order = order[round_ % len(order):] + order[:round_ % len(order)]
        for name in order:
            result = layout.run(statements[name])
            if round_:
                runs[name].append(result)
    if any(result["boto3"] for result in runs["app"] + runs["paired"] + runs["stack paired"]):
        raise RuntimeError("importing the app imported boto3")

    def ms(name: str, key: str = "wall") -> float:
        return median(result[key] for result in runs[name]) * 1000

    paired, stack = runs["paired"], runs["stack paired"]
    packages = sorted({name.split(".")[0] for name in third_party})
    return [
        report(Figure(
            "cold start", "import app (issue 10's floor)", median(r["floor"] + r["rest"] for r in stack) * 1000,
            median(r["floor"] for r in stack) * 1000, "ms", LIMIT,
            note=f"floor: import chalice, httpx; from pydantic import BaseModel, then the app, in one process; "
                 f"median ratio {median((r['floor'] + r['rest']) / r['floor'] for r in stack):.2f}x")),
        report(Figure(
            "cold start", "import app", median(r["floor"] + r["rest"] for r in paired) * 1000,
            median(r["floor"] for r in paired) * 1000, "ms", LIMIT,
            note=f"floor: the {len(third_party)} modules of {', '.join(packages)} the app loads, then the app, "
                 f"in one process; median ratio {median((r['floor'] + r['rest']) / r['floor'] for r in paired):.2f}x; "
                 f"CPU {median(r['cpu_floor'] + r['cpu_rest'] for r in paired) * 1000:.0f} vs "
                 f"{median(r['cpu_floor'] for r in paired) * 1000:.0f} ms")),
        report(Figure(
            "cold start", "import app (issue's floor)", ms("app"), ms("issue floor"), "ms", LIMIT,
            note=f"separate processes; floor: {ISSUE_FLOOR.replace(chr(10), '; ')}; "
                 f"CPU {ms('app', 'cpu'):.0f} vs {ms('issue floor', 'cpu'):.0f} ms")),
    ]


def cold_path(layout: Layout, rounds: int) -> Figure:
    from benchmarks.end_to_end import api_gateway_event
    from sandbox.samples import SAMPLES
    from sandbox.stack import Sandbox

    bridge, floor = [], []
    with Sandbox(with_aws=False) as sandbox:
        # Queues and ledger configured as in production; a guest with an email must not need them.
        environment = {**sandbox.environment(), "RETRY_QUEUE_URL": "http://127.0.0.1:9/queue/retry",
                       "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/queue/dlq", "IDENTITY_TABLE": "ledger"}
        mews = sandbox.platforms["mews"]
        for n in range(rounds + 1):
            delivery = SAMPLES["mews"].prepare(sandbox, 90_000 + n)
            marks = len(mews.requests), len(sandbox.fullwhere.requests)
            event = api_gateway_event(delivery.platform, delivery.body, delivery.headers, delivery.query)
            result = layout.run(FIRST_WEBHOOK, *layout.third_party_roots, stdin=json.dumps(event), env=environment)
            if result["status"] != 200 or result["boto3"]:
                raise RuntimeError(f"first Mews webhook: {result}")
            calls = [{"method": call.method, "url": server.url + call.path, "body": base64.b64encode(call.raw or b"").decode(),
                      "headers": {k: v for k, v in call.headers.items() if k not in ("host", "content-length")}}
                     for server, mark in ((mews, marks[0]), (sandbox.fullwhere, marks[1]))
                     for call in server.requests[mark:]]
            bare = layout.run(BARE_CALLS, stdin=json.dumps({"calls": calls, "modules": result["modules"]}))
            if n:
                bridge.append(result["import"] + result["first"])
                floor.append(bare["import"] + bare["first"])
    return report(Figure("cold path", "import + first Mews webhook", median(bridge) * 1000, median(floor) * 1000, "ms",
                         None, note="floor: the third-party modules the bridge had loaded by then + the same 2 calls "
                                    "with a bare httpx.Client; boto3 never imported"))


def run(rounds: int = 31, package_dir: Path | None = None) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="cold-start-") as scratch:
        root = Path(scratch)
        if package_dir is None:
            say("building the package (make package)…")
            package = build_package(root / "package")
        else:
            package = Package(package_dir, {name: (package_dir / name).stat().st_size
                                            for name in ("deployment.zip", "layer-deployment.zip")}, {})
        figures = [package_size(package)]
        layout = Layout(package, root)
        figures += cold_start(layout, rounds)
        figures.append(cold_path(layout, max(3, rounds // 2)))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31, help="timed imports of each kind")
    parser.add_argument("--package-dir", type=Path, help="an existing `make package` output (default: build one)")
    args = parser.parse_args()
    run(args.rounds, args.package_dir)
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
