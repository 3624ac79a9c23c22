"""Fault injection, end to end: every platform's webhooks sent to the bridge while everything it talks to fails.

    python -m sandbox.scenarios            # the size the test suite runs (tests/test_fault_injection.py)
    python -m sandbox.scenarios --large    # ten times the guests and faults (a few minutes)

The bridge runs in this process through Chalice's test client, configured by ``Sandbox.environment()``:
real HTTP to the Fullwhere emulator and to every platform's API emulator on 127.0.0.1, SQS and
DynamoDB on moto's server, the real retry-worker handler driven by :class:`~sandbox.aws.LambdaSqsPoller`
(Lambda's SQS event source mapping) and the real ``oracle_pull`` handler. Retry settings are small
(``RETRY_BASE_SECONDS=0``, a 0.6 s inline budget, a retry horizon of minutes) so the scenarios take seconds.

What happens, in order:

1. **storm**: every platform's guests, interleaved, while the Fullwhere emulator answers a scripted mix
   of 500/502/503, 429 with ``Retry-After``, dropped connections and a few permanent 400s, and every
   platform API answers its own mix (delays longer than any timeout and malformed 200 bodies included).
   Also sent: events ignored by design (a Deliveroo rider update, a Zelty dish update, Simphony checks,
   ...) and guests the platform does not have (a permanent failure: dead-lettered with the reason).
   The worker drains the retry queue between rounds, meeting the same faults;
2. **SQS outage**: SQS is unreachable (its endpoint points at a closed port) while Fullwhere is down:
   events can be neither imported nor queued, the bridge answers 503 and, as real platforms do, the
   sender delivers them again later;
3. **inline budget**: Fullwhere answers slowly (some imports longer than any timeout, landing after the
   bridge gave up) and multi-guest webhooks (Chr365, SevenRooms, Mews) run out of inline budget
   mid-way: the rest of each webhook is finished from the queue;
4. **poison**: an unreadable message (dead-lettered ``poisoned``) and a job of a platform this deployment
   does not configure, planted a few seconds short of its retry horizon: held (``not_configured``), then
   dead-lettered ``exhausted`` once the horizon has passed;
5. **recovery**: faults stop, the platforms redeliver what got a 5xx, OPERA Cloud is pulled, and the
   worker drains the queue; its first invocations crash mid-batch (half the records done, then an
   exception: Lambda returns the whole batch to the queue).

Then it checks the promises and prints the tally: every guest that should be imported is in Fullwhere
exactly once; nothing is lost (imported + dead-lettered with a permanent reason + ignored by design =
sent); the dead-letter queue holds only permanent failures (and the planted job, at its horizon); the EMF
metrics count what the logs say.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import random
import socket
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import aws as local_aws
from sandbox import platforms
from sandbox.emulators.base import Fault
from sandbox.platforms import Delivery, fixture
from sandbox.platforms.mews import ENTERPRISE as MEWS_ENTERPRISE
from sandbox.platforms.oracle import HOTEL as ORACLE_HOTEL
from sandbox.platforms.ubereats import STORE as UBEREATS_STORE
from sandbox.samples import SAMPLES
from sandbox.stack import FULLWHERE_KEY, Sandbox, reset_bridge_caches

ROOT = Path(__file__).parent.parent
INJECTED_REJECTION = "injected permanent rejection"
POISON = ("retry queue", "poisoned messages")
HELD_TO_HORIZON = ("retry queue", "job of a platform not configured, held since just short of the horizon")
# Dead-letter kinds that say "this can never succeed as is". "exhausted" (a failure that can heal outlasted
# RETRY_HORIZON_HOURS) and a bare job (moved by the queue's redrive policy) are failures of the promise; the
# one expected "exhausted" letter is the job the poison phase plants at the end of its horizon.
PERMANENT_KINDS = ("permanent", "poisoned")
# How much of its horizon that planted job has left when it is planted: it must be seen held first.
HORIZON_LEFT_SECONDS = 4.0
# What the lookup of an import in doubt found (the ``reason`` of its ``imported`` line).
IN_DOUBT_CHECKED = ("earlier_import_landed", "earlier_import_had_not_landed")

# Small retry settings: no backoff, a short inline budget (RETRY_HORIZON_HOURS comes with the scale).
SCENARIO_SETTINGS = {
    "INLINE_BUDGET_SECONDS": "0.6",
    "WORKER_CALL_TIMEOUT_SECONDS": "1",
    "WORKER_CONCURRENCY": "10",
    "RETRY_BASE_SECONDS": "0",
    "RETRY_MAX_SECONDS": "1",
    # An import in doubt (its answer lost) is looked up once the slowest injected answer has landed.
    "IN_DOUBT_SETTLE_SECONDS": "2",
    "LOG_LEVEL": "INFO",
}
SLOW_SECONDS = 1.2  # longer than both the inline budget and the worker's call timeout
VISIBILITY_TIMEOUT = 2  # a crashed batch comes back after this


@dataclass(frozen=True)
class Scale:
    guests: int  # guests per platform in the storm
    missing: int  # per fetching platform: guests the platform API does not have
    fullwhere_rounds: int  # rounds of the Fullwhere fault mix during the storm
    platform_rounds: int  # rounds of each platform API's fault mix
    outage_guests: int  # guests per platform sent while SQS is unreachable
    budget_guests: int  # guests in each multi-guest webhook of the budget scenario
    crashes: int  # worker invocations that crash mid-batch
    in_doubt: int  # per contactless platform: guests whose import lands late, and guests whose import is lost
    drain_seconds: float  # longest the recovery may take
    # The retry horizon, scaled down: longer than the whole run, since every scripted fault ends at the
    # recovery, so a guest dead-lettered "exhausted" means a retry was lost or stalled, not a long outage.
    horizon_hours: float = 0.05

    @property
    def max_receive_count(self) -> int:
        # The template's rule 2 at this scale: a message nobody answers is moved only after the horizon.
        return min(1000, math.ceil(self.horizon_hours * 3600 / VISIBILITY_TIMEOUT))


SMALL = Scale(guests=3, missing=1, fullwhere_rounds=2, platform_rounds=1, outage_guests=1, budget_guests=4,
              crashes=2, in_doubt=1, drain_seconds=60)
LARGE = Scale(guests=30, missing=5, fullwhere_rounds=20, platform_rounds=8, outage_guests=8, budget_guests=10,
              crashes=6, in_doubt=5, drain_seconds=300, horizon_hours=0.25)
# Guests known by a platform id only: Fullwhere cannot merge them, the identity ledger keeps them single.
CONTACTLESS = ("deliveroo", "ubereats")


def fullwhere_fault_mix() -> list[tuple[Fault, int]]:
    """One round of what the Fullwhere emulator does wrong (fault, consecutive requests).

    A delay longer than our timeout is answered normally afterwards: the import lands although the bridge
    gave up. A guest with an email or phone is merged on retry; a contactless one (Deliveroo, Uber Eats:
    platform id only) cannot be, so the bridge finds it in Fullwhere's list before importing it again
    (the import was in doubt; so were those that met a 500, a 502 or a dropped connection).
    """
    return [
        (Fault("status", status=503, retry_after=0), 2),
        (Fault("status", status=500), 1),
        (Fault("status", status=502), 1),
        (Fault("status", status=429, retry_after=1), 2),
        (Fault("drop"), 1),
        (Fault("status", status=400, body=json.dumps({"message": [INJECTED_REJECTION]})), 1),
        (Fault("delay", seconds=SLOW_SECONDS), 1),
        # Stored, but the answer is garbled: a 2xx is an import whatever its body says.
        (Fault("malformed", handled=True), 1),
    ]


def platform_fault_mix() -> list[tuple[Fault, int]]:
    """One round of what a platform API does wrong."""
    return [
        (Fault("status", status=503, retry_after=0), 1),
        (Fault("status", status=500), 1),
        (Fault("status", status=429, retry_after=1), 1),
        (Fault("drop"), 1),
        (Fault("malformed"), 1),
        (Fault("delay", seconds=SLOW_SECONDS), 1),
    ]


# Where each platform API's faults go. OPERA's dequeue is destructive: an answer lost in transit (a delay
# beyond our timeout) would lose those events at OPERA whatever the bridge does, so its dequeue path
# gets only faults answered before OPERA dequeues anything (the profile path gets them all).
FAULT_PATHS: dict[str, list[str | None]] = {
    "ubereats": [None], "mews": [None], "thefork": [None], "meta": [None], "sevenrooms": [None], "como": [None],
    "oracle": ["/crm/v1/profiles/", "/int/v1/externalSystem/"],
}
NO_DELAY_PATHS = {"/int/v1/externalSystem/"}


# -- what was sent, and what should become of it ------------------------------------------------------

@dataclass
class Guest:
    """One unit sent: a guest (to import, or dead-lettered on purpose) or an event ignored by design."""

    platform: str
    expect: str  # "import", "permanent" (the platform does not have it) or "ignored"
    guest_id: str | None = None  # the Fullwhere id field's value, for "import"
    event_ids: set[str] = field(default_factory=set)
    label: str = ""


@dataclass
class Sent:
    delivery: Delivery
    guests: list[Guest]
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return bool(self.statuses) and 200 <= self.statuses[-1] < 300


# -- the bridge, in this process ----------------------------------------------------------------------

@contextmanager
def bridge_environment(environment: dict[str, str]) -> Iterator[None]:
    """Set the bridge's environment for the duration, then restore the process's own."""
    saved = dict(os.environ)
    for name in ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID", "SOURCES_SECRET_ID"):
        os.environ.pop(name, None)
    os.environ.update(environment)
    reset_bridge_caches()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_bridge_caches()


class LogTap(io.TextIOBase):
    """Stands in for ``sys.stdout``: passes everything through and keeps the bridge's JSON lines."""

    def __init__(self, target: Any):
        self.target = target
        self.lines: list[dict[str, Any]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self.target.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            if line.startswith("{"):
                try:
                    self.lines.append(json.loads(line))
                except ValueError:
                    pass
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the runner ---------------------------------------------------------------------------------------

class ScenarioRunner:
    """Sends the stream, scripts the faults, plays the platforms (redelivering 5xx) and Lambda (the worker,
    the scheduled pull), and keeps what was sent so :meth:`verdict` can check what became of it."""

    def __init__(self, sandbox: Sandbox, scale: Scale, seed: int, say: Callable[[str], None]):
        from chalice.local import LambdaContext
        from chalice.test import Client

        from app import app

        self.sandbox = sandbox
        self.scale = scale
        self.random = random.Random(seed)
        self.say = say
        self.app = app
        self.client = Client(app, project_dir=str(ROOT))
        self._context = LambdaContext
        self.sent: list[Sent] = []
        self.poller = local_aws.LambdaSqsPoller(sandbox.retry_queue_url, self._worker, endpoint_url=sandbox.aws_endpoint)
        self.sqs = local_aws.client("sqs", sandbox.aws_endpoint)
        self.crashes_left = 0
        self.crashed_records = 0
        self.injected: Counter[tuple[str, str]] = Counter()  # (where, what) -> times
        self.faults_consumed: Counter[str] = Counter()
        self.pull_runs = 0
        self.next_n = 1
        self.held_to_horizon: set[str] = set()  # event ids of the jobs planted at the end of their horizon
        self._letters: list[Any] | None = None

    # -- handlers --------------------------------------------------------------------------------
    def _worker(self, event: dict[str, Any]) -> Any:
        handler = self.app.handler_map["retry_worker"]
        context = self._context("retry_worker", 512, max_runtime_ms=120_000)
        records = event["Records"]
        if self.crashes_left > 0 and len(records) >= 2:
            # Lambda dies mid-batch: the first half is done (imports happened), then the invocation fails,
            # so no record is deleted and the whole batch comes back after the visibility timeout.
            self.crashes_left -= 1
            half = len(records) // 2
            handler({"Records": records[:half]}, context)
            self.crashed_records += len(records)
            raise RuntimeError("the retry worker crashed mid-batch")
        return handler(event, context)

    def pull_oracle(self) -> dict[str, Any]:
        self.pull_runs += 1
        event = {"version": "0", "id": f"pull-{self.pull_runs}", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": local_aws.REGION,
                 "resources": [], "detail": {}}
        return self.app.handler_map["oracle_pull"](event, self._context("oracle_pull", 512, max_runtime_ms=60_000))

    # -- sending ---------------------------------------------------------------------------------
    def deliver(self, sent: Sent) -> int:
        sent.attempts += 1
        response = self.client.http.post(sent.delivery.path, headers=sent.delivery.headers, body=sent.delivery.body)
        sent.statuses.append(response.status_code)
        return response.status_code

    def track(self, delivery: Delivery, guests: list[Guest]) -> Sent:
        """Attach each guest to the events the bridge will see (by parsing, as the bridge does)."""
        from chalicelib.connectors import get_connector
        from chalicelib.connectors.base import WebhookRequest

        request = WebhookRequest(platform=delivery.platform, body=delivery.body,
                                 headers={k.lower(): v for k, v in delivery.headers.items()}, query=delivery.query)
        parsed = get_connector(delivery.platform).parse(request)
        groups: dict[str, set[str]] = {}
        for event in parsed.events:
            groups.setdefault(event.guest_key or event.event_id, set()).add(event.event_id)
        importing = [guest for guest in guests if guest.expect != "ignored"]
        if len(groups) != len(importing):
            raise AssertionError(f"{delivery.platform}: {len(groups)} events for {len(importing)} guests")
        for guest, event_ids in zip(importing, groups.values()):
            guest.event_ids = event_ids
        sent = Sent(delivery, guests)
        self.sent.append(sent)
        return sent

    def guest(self, platform: str) -> tuple[Delivery | None, Guest]:
        n = self._take()
        sample = SAMPLES[platform]
        delivery = sample.prepare(self.sandbox, n)
        expect = "import" if sample.imports else "ignored"
        return delivery, Guest(platform, expect, sample.guest_id(n) if sample.imports else None, label=f"#{n}")

    def stream(self, guests_per_platform: int) -> list[Sent]:
        """Signed webhooks for ``guests_per_platform`` new guests of every platform, interleaved."""
        batch: list[Sent] = []
        for _ in range(guests_per_platform):
            for platform in SAMPLES:
                delivery, guest = self.guest(platform)
                if delivery is None:  # OPERA: the event waits in OHIP for the scheduled pull, nothing to send
                    self.sent.append(Sent(Delivery(platform, b""), [guest], statuses=[200]))
                    continue
                batch.append(self.track(delivery, [guest]))
        self.random.shuffle(batch)
        return batch

    def ignored_by_design(self) -> list[Sent]:
        """Events the platforms send that carry no guest to import: acknowledged and counted, nothing else."""
        documents = {
            "deliveroo": {"event": "rider.status_update", "body": {"order_id": "gb:ignored", "status": "rider_assigned"}},
            "zelty": fixture("zelty/dish_availability_update.json"),
            "thefork": fixture("thefork/review_rating_created.json"),
            "mews": {"EnterpriseId": MEWS_ENTERPRISE, "Events": [{"Discriminator": "PaymentUpdated", "Value": {"Id": "p-1"}}]},
            "sevenrooms": {**fixture("sevenrooms/reservation_created.json"), "event_type": "deleted"},
        }
        batch = []
        for platform, document in documents.items():
            delivery = platforms.delivery(self.sandbox, platform, json.dumps(document).encode())
            batch.append(self.track(delivery, [Guest(platform, "ignored", label=document.get("event", "ignored"))]))
        return batch

    def missing_guests(self, count: int) -> list[Sent]:
        """Webhooks naming a guest the platform's API does not have: a permanent failure, dead-lettered."""
        batch = []
        for index in range(count):
            unknown = str(uuid.UUID(int=self.random.getrandbits(128), version=4))
            documents = {
                "mews": {"EnterpriseId": MEWS_ENTERPRISE,
                         "Events": [{"Discriminator": "CustomerAdded", "Value": {"Id": unknown}}]},
                "thefork": {**fixture("thefork/customer_created.json"), "uuid": unknown},
                "ubereats": {**fixture("ubereats/orders_notification.json"), "event_id": unknown,
                             "meta": {"resource_id": unknown, "user_id": UBEREATS_STORE}},
                "como": {"event": "member.updated", "id": f"missing-{unknown}", "commonExtId": unknown},
            }
            for platform, document in documents.items():
                delivery = platforms.delivery(self.sandbox, platform, json.dumps(document).encode())
                batch.append(self.track(delivery, [Guest(platform, "permanent", label=f"missing {unknown[:8]}")]))
        return batch

    def multi_guest_webhooks(self, size: int) -> list[Sent]:
        """One webhook carrying ``size`` guests, for each platform whose payload can."""
        batch = []
        numbers = [self._take() for _ in range(size)]
        chr365 = {"customers": [{"client_id": f"c-{n}", "firstname": f"Guest{n}", "lastname": "Chr",
                                 "mail": f"guest{n}@chr365.sandbox.example"} for n in numbers]}
        batch.append(self.track(platforms.delivery(self.sandbox, "chr365", json.dumps(chr365).encode()),
                                [Guest("chr365", "import", f"c-{n}", label=f"#{n}") for n in numbers]))
        numbers = [self._take() for _ in range(size)]
        rooms = [SAMPLES["sevenrooms"].build(self.sandbox, n) for n in numbers]
        batch.append(self.track(platforms.delivery(self.sandbox, "sevenrooms", json.dumps(rooms).encode()),
                                [Guest("sevenrooms", "import", SAMPLES["sevenrooms"].guest_id(n), label=f"#{n}")
                                 for n in numbers]))
        numbers = [self._take() for _ in range(size)]
        mews = [SAMPLES["mews"].build(self.sandbox, n) for n in numbers]
        mews_webhook = {**mews[0], "Events": [item for webhook in mews for item in webhook["Events"]]}
        batch.append(self.track(platforms.delivery(self.sandbox, "mews", json.dumps(mews_webhook).encode()),
                                [Guest("mews", "import", SAMPLES["mews"].guest_id(n), label=f"#{n}") for n in numbers]))
        return batch

    def _take(self) -> int:
        n = self.next_n
        self.next_n += 1
        return n

    # -- faults ----------------------------------------------------------------------------------
    def script_fullwhere(self, rounds: int) -> None:
        mix = [entry for _ in range(rounds) for entry in fullwhere_fault_mix()]
        self.random.shuffle(mix)
        for fault, times in mix:
            self.sandbox.fullwhere.faults.add(fault, times=times)
            self.injected[("Fullwhere", _describe(fault))] += times

    def script_platforms(self, rounds: int) -> None:
        for platform, paths in FAULT_PATHS.items():
            server = self.sandbox.platforms[platform]
            mix = [entry for _ in range(rounds) for entry in platform_fault_mix()]
            self.random.shuffle(mix)
            for fault, times in mix:
                path = self.random.choice(paths)
                if fault.kind == "delay" and path in NO_DELAY_PATHS:
                    path = paths[0]
                server.faults.add(fault, times=times, path=path)
                self.injected[(f"{platform} API", _describe(fault))] += times

    def clear_faults(self) -> None:
        for name, server in (("fullwhere", self.sandbox.fullwhere), *self.sandbox.platforms.items()):
            self.faults_consumed[name] += server.faults.consumed
            server.faults.reset()
        self.sandbox.fullwhere.latency = 0.0

    @contextmanager
    def sqs_unreachable(self) -> Iterator[None]:
        from chalicelib.infra import aws

        saved = os.environ["AWS_ENDPOINT_URL_SQS"]
        os.environ["AWS_ENDPOINT_URL_SQS"] = f"http://127.0.0.1:{closed_port()}"
        aws.reset_clients()
        try:
            yield
        finally:
            os.environ["AWS_ENDPOINT_URL_SQS"] = saved
            aws.reset_clients()

    # -- phases ----------------------------------------------------------------------------------
    def send_all(self, batch: list[Sent], drain_every: int = 0) -> Counter[int]:
        statuses: Counter[int] = Counter()
        for index, sent in enumerate(batch, 1):
            statuses[self.deliver(sent)] += 1
            if drain_every and index % drain_every == 0:  # the worker and the scheduled pull run meanwhile
                self.poller.poll_once()
                self.pull_oracle()
        return statuses

    def storm(self) -> None:
        scale = self.scale
        self.script_fullwhere(scale.fullwhere_rounds)
        self.script_platforms(scale.platform_rounds)
        batch = self.stream(scale.guests) + self.ignored_by_design() + self.missing_guests(scale.missing)
        self.random.shuffle(batch)
        statuses = self.send_all(batch, drain_every=5)
        for _ in range(3):  # OPERA's events, read while its API misbehaves too
            self.pull_oracle()
            self.poller.poll_once()
        self.say(f"storm: {len(batch)} webhooks, answers {dict(sorted(statuses.items()))}")

    def sqs_outage(self) -> None:
        batch = self.stream(self.scale.outage_guests)
        with self.sqs_unreachable():
            self.sandbox.fullwhere.faults.always(Fault("status", status=503))
            down = self.send_all(batch[: len(batch) // 2])
            self.sandbox.fullwhere.faults.clear()
            up = self.send_all(batch[len(batch) // 2:])
        self.injected[("SQS", "unreachable, webhooks sent meanwhile")] += len(batch)
        self.injected[("Fullwhere", "down (503) too, webhooks sent meanwhile")] += len(batch) // 2
        self.say(f"SQS outage: Fullwhere down too {dict(down)}, Fullwhere up {dict(up)}")

    def inline_budget(self) -> None:
        self.sandbox.fullwhere.latency = 0.25  # ~2 imports fit in the 0.6 s budget
        # and a few imports slower than any timeout, which land after the bridge gave up on them
        self.sandbox.fullwhere.faults.add(Fault("delay", seconds=SLOW_SECONDS), times=2)
        self.injected[("Fullwhere", _describe(Fault("delay", seconds=SLOW_SECONDS)))] += 2
        batch = self.multi_guest_webhooks(self.scale.budget_guests)
        statuses = self.send_all(batch)
        self.sandbox.fullwhere.latency = 0.0
        self.say(f"inline budget: {len(batch)} webhooks of {self.scale.budget_guests} guests, answers {dict(statuses)}")

    def imports_in_doubt(self) -> None:
        """Guests without email or phone whose import's answer is lost: one lands late, one never lands.

        Fullwhere cannot merge them, so the bridge must look each one up before importing it again
        (``in_doubt`` in :mod:`chalicelib.domain.identity`); the verdict then finds each exactly once."""
        # Requests of the earlier phases still sleeping in the emulator would take these faults: let them end.
        time.sleep(SLOW_SECONDS + 0.3)
        batch = []
        for _ in range(self.scale.in_doubt):
            for platform in CONTACTLESS:
                for fault in (Fault("delay", seconds=SLOW_SECONDS), Fault("drop")):
                    delivery, guest = self.guest(platform)
                    batch.append((fault, self.track(delivery, [guest])))
        for fault, sent in batch:  # one at a time, so that each guest's import meets its own fault
            self.sandbox.fullwhere.faults.add(fault, path="/partners/customer")
            self.injected[("Fullwhere", _describe(fault) + ", guests without email or phone")] += 1
            self.deliver(sent)
        self.say(f"imports in doubt: {len(batch)} guests without email or phone, answers lost")

    def poison(self) -> None:
        """An unreadable message (dead-lettered ``poisoned`` at once), and a job of a platform this deployment
        does not configure: not the event's fault, so it is held (``not_configured``) for its whole horizon,
        then dead-lettered ``exhausted``. It stands for a job held for days: planted with ``first_seen`` just
        short of the horizon, the worker meets it held now and gives up on it during the recovery."""
        url = self.sandbox.retry_queue_url
        self.sqs.send_message(QueueUrl=url, MessageBody="this is not a retry job {")
        self.injected[POISON] += 1
        first_seen = time.time() - self.scale.horizon_hours * 3600 + HORIZON_LEFT_SECONDS
        job = {"platform": "myspace", "tenant": "default", "event_id": "held-to-horizon-1", "stage": "fetch",
               "event": {}, "first_seen": first_seen}
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(job))
        self.held_to_horizon.add(job["event_id"])
        self.injected[HELD_TO_HORIZON] += 1
        self.poller.drain(timeout=1)  # the worker meets both at once, while the faults still go on

    def recover(self) -> None:
        self.clear_faults()
        for round_number in range(1, 21):  # the platforms deliver again what got a 5xx
            pending = [sent for sent in self.sent if sent.statuses and not sent.delivered
                       and sent.statuses[-1] >= 500]
            if not pending:
                break
            self.send_all(pending)
        self.crashes_left = self.scale.crashes
        deadline = time.monotonic() + self.scale.drain_seconds
        while time.monotonic() < deadline:
            summary = self.pull_oracle()
            handled = self.poller.drain(timeout=5)
            if (handled == 0 and self.queue_depth() == 0 and self.sandbox.platforms["oracle"].queued(ORACLE_HOTEL) == 0
                    and not summary.get("pending") and not summary.get("dequeue_failures")):
                break
            time.sleep(0.2)

    def queue_depth(self) -> int:
        return local_aws.queue_depth(self.sandbox.aws_endpoint, self.sandbox.retry_queue_url)

    def dead_letters(self) -> list[Any]:
        """Every message of the dead-letter queue (read once: reading hides them)."""
        if self._letters is None:
            letters = []
            while True:
                messages = self.sqs.receive_message(QueueUrl=self.sandbox.dead_letter_queue_url, MaxNumberOfMessages=10,
                                                    VisibilityTimeout=300, WaitTimeSeconds=0).get("Messages", [])
                if not messages:
                    break
                letters += [json.loads(message["Body"]) for message in messages]
            self._letters = letters
        return self._letters

    def negative_controls(self, report: "Report", log_lines: list[dict[str, Any]]) -> dict[str, bool]:
        """Break Fullwhere's data on purpose and check that the verdict notices (a check that cannot fail
        proves nothing): a second customer for one imported guest, then every customer gone, then a guest
        dead-lettered ``exhausted``."""
        fullwhere = self.sandbox.fullwhere
        copies = Counter((platform, customer.get(SAMPLES[platform].id_field))
                         for customer in fullwhere.customers(FULLWHERE_KEY)
                         if (platform := (customer.get("metadata") or {}).get("source")) in ("deliveroo", "ubereats"))
        platform, guest_id = next(key for key, count in copies.items() if count == 1)
        fullwhere.add_customer(FULLWHERE_KEY, **{SAMPLES[platform].id_field: guest_id, "metadata": {"source": platform}})
        duplicate = self.verdict(log_lines).totals["duplicated"] == report.totals["duplicated"] + 1
        with fullwhere.lock:
            fullwhere.reset_state()
        # Every imported guest must now count as lost (or, if a crash mid-batch left a stale dead letter
        # for it, as dead-lettered): none may still count as imported.
        after = self.verdict(log_lines).totals
        loss = after["imported"] == after["duplicated"] == 0 and after["lost"] > report.totals["lost"]
        # A guest given up on at the horizon ("exhausted") is not a permanent failure: with its customer gone
        # and such a letter planted, it must still count as lost, and the letter as a problem.
        lettered = {(letter.get("job") or {}).get("event_id") for letter in self.dead_letters()
                    if isinstance(letter, dict)}
        guest = next(guest for sent in self.sent for guest in sent.guests if guest.expect == "import"
                     and guest.platform != "oracle" and guest.event_ids and not guest.event_ids & lettered)
        planted = {"kind": "exhausted", "reason": "still failing after RETRY_HORIZON_HOURS (a negative control)",
                   "job": {"platform": guest.platform, "event_id": min(guest.event_ids)}}
        self.dead_letters().append(planted)
        try:
            given_up = self.verdict(log_lines)
        finally:
            self.dead_letters().remove(planted)
        exhausted = (given_up.totals["lost"] == after["lost"]
                     and given_up.totals["dead-lettered"] == after["dead-lettered"]
                     and any("exhausted letter" in problem for problem in given_up.problems))
        return {"duplicate detected": duplicate, "loss detected": loss, "exhausted guest detected": exhausted}

    # -- the verdict -----------------------------------------------------------------------------
    def _held_to_horizon(self, letter: Any) -> bool:
        """The ``exhausted`` letter of a job the poison phase planted at the end of its horizon."""
        return (isinstance(letter, dict) and letter.get("kind") == "exhausted"
                and (letter.get("job") or {}).get("event_id") in self.held_to_horizon)

    def _check_held_to_horizon(self, letters: list[dict[str, Any]], log_lines: list[dict[str, Any]]) -> list[str]:
        """Each planted job was held (``not_configured``), never dead-lettered for it, then dead-lettered
        ``exhausted`` once its horizon had passed, the reason saying so."""
        problems = []
        ended = {letter["job"]["event_id"] for letter in letters}
        if ended != self.held_to_horizon:
            problems.append(f"jobs held to their horizon: {sorted(self.held_to_horizon)} planted, "
                            f"{sorted(ended)} dead-lettered exhausted")
        for letter in letters:
            reason = letter.get("reason", "")
            if "RETRY_HORIZON_HOURS" not in reason or "not configured" not in reason:
                problems.append(f"a job held to its horizon was dead-lettered for {reason!r}")
        held = {line.get("event_id") for line in log_lines
                if line.get("outcome") == "held" and line.get("reason") == "not_configured" and "_aws" not in line}
        if not self.held_to_horizon <= held:
            problems.append(f"jobs never held before their horizon ended: {sorted(self.held_to_horizon - held)}")
        return problems

    def verdict(self, log_lines: list[dict[str, Any]]) -> "Report":
        customers = self.sandbox.fullwhere.customers(FULLWHERE_KEY)
        imported: dict[str, Counter[str]] = defaultdict(Counter)
        for customer in customers:
            platform = (customer.get("metadata") or {}).get("source")
            sample = SAMPLES.get(platform)
            if sample is not None:
                imported[platform][customer.get(sample.id_field)] += 1
        letters = self.dead_letters()
        guests = [guest for sent in self.sent for guest in sent.guests]
        by_event = {(guest.platform, event_id): guest for guest in guests for event_id in guest.event_ids}
        by_profile = {guest.guest_id: guest for guest in guests if guest.platform == "oracle"}
        dead: dict[int, dict[str, Any]] = {}
        stray_letters = []
        for letter in letters:
            job = letter.get("job") if isinstance(letter, dict) else None
            if not isinstance(job, dict):
                stray_letters.append(letter)
                continue
            guest = by_event.get((job.get("platform"), job.get("event_id")))
            if guest is None and job.get("platform") == "oracle":
                guest = by_profile.get(((job.get("event") or {}).get("data") or {}).get("profile_id"))
            if guest is None:
                stray_letters.append(letter)
            else:
                dead[id(guest)] = letter

        report = Report(scale=self.scale)
        for sent in self.sent:
            for guest in sent.guests:
                row = report.rows[guest.platform]
                row["sent"] += 1
                copies = imported[guest.platform].get(guest.guest_id, 0) if guest.guest_id else 0
                letter = dead.get(id(guest))
                if guest.expect == "ignored":
                    outcome = "ignored" if sent.delivered else "lost"
                elif copies == 1:
                    outcome = "imported"
                elif copies > 1:
                    outcome = "duplicated"
                elif letter is not None and letter.get("kind") in PERMANENT_KINDS:
                    outcome = "dead-lettered"
                    if guest.expect == "import" and INJECTED_REJECTION not in letter.get("reason", ""):
                        report.problems.append(f"{guest.platform} {guest.label}: dead-lettered for {letter.get('reason')!r}")
                else:
                    outcome = "lost"
                row[outcome] += 1
                if outcome in ("lost", "duplicated"):
                    report.problems.append(f"{guest.platform} {guest.label}: {outcome} "
                                           f"(answers {sent.statuses}, in Fullwhere {copies}x)")
                if guest.expect == "permanent" and outcome != "dead-lettered":
                    report.problems.append(f"{guest.platform} {guest.label}: expected in the dead-letter queue, was {outcome}")
                row["redelivered"] += max(0, sent.attempts - 1) if guest is sent.guests[0] else 0
        expected_ids = {(g.platform, g.guest_id) for g in guests if g.guest_id}
        for platform, counts in imported.items():
            for guest_id in counts:
                if (platform, guest_id) not in expected_ids:
                    report.problems.append(f"{platform}: unexpected customer {guest_id!r} in Fullwhere")
        for letter in letters:
            kind = letter.get("kind") if isinstance(letter, dict) else None
            report.dead_letter_kinds[kind or "bare job (redrive policy)"] += 1
            if kind not in PERMANENT_KINDS and not self._held_to_horizon(letter):
                report.problems.append(f"dead-letter queue holds a {kind or 'bare'} letter: "
                                       f"{(letter.get('reason') if isinstance(letter, dict) else letter)!r}")
        poisoned = [letter for letter in stray_letters if letter.get("kind") == "poisoned"]
        # A crash mid-batch repeats what the batch did before it: a message may be dead-lettered twice.
        distinct = {json.dumps([letter.get("raw"), (letter.get("job") or {}).get("event_id")]) for letter in poisoned}
        if len(distinct) != self.injected[POISON]:
            report.problems.append(f"{len(distinct)} poisoned messages dead-lettered, "
                                   f"{self.injected[POISON]} injected")
        exhausted = [letter for letter in stray_letters if self._held_to_horizon(letter)]
        report.problems += self._check_held_to_horizon(exhausted, log_lines)
        for letter in stray_letters:
            if letter not in poisoned and letter not in exhausted:
                report.problems.append(f"dead letter of no sent guest: {letter!r}"[:300])
        if self.queue_depth():
            report.problems.append(f"the retry queue still holds {self.queue_depth()} messages")

        report.log_outcomes = Counter(line["outcome"] for line in log_lines if "outcome" in line and "_aws" not in line)
        report.in_doubt = Counter(line["reason"] for line in log_lines if line.get("outcome") == "imported"
                                  and line.get("reason") in IN_DOUBT_CHECKED)
        report.metric_outcomes = Counter()
        for line in log_lines:
            if "_aws" in line and "Events" in line:
                report.metric_outcomes[line["outcome"]] += line["Events"]
        if report.metric_outcomes != report.log_outcomes:
            report.problems.append(f"EMF metrics {dict(report.metric_outcomes)} differ from the log lines "
                                   f"{dict(report.log_outcomes)}")
        internal = [line for line in log_lines if "internal error" in str(line.get("reason", ""))
                    or line.get("message", "").startswith("unexpected error")]
        if internal:
            report.problems.append(f"{len(internal)} unexpected errors in the bridge: "
                                   f"{sorted({str(line.get('reason') or line.get('exception')) for line in internal})}")
        report.injected = self.injected
        report.faults_consumed = self.faults_consumed
        report.crashed_records = self.crashed_records
        report.worker = {"invocations": self.poller.invocations, "deleted": self.poller.deleted,
                         "failed": self.poller.failed, "crashes": len(self.poller.errors)}
        return report


@dataclass
class Report:
    scale: Scale
    rows: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)
    dead_letter_kinds: Counter[str] = field(default_factory=Counter)
    log_outcomes: Counter[str] = field(default_factory=Counter)
    metric_outcomes: Counter[str] = field(default_factory=Counter)
    injected: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults_consumed: Counter[str] = field(default_factory=Counter)
    crashed_records: int = 0
    worker: dict[str, int] = field(default_factory=dict)
    controls: dict[str, bool] = field(default_factory=dict)
    in_doubt: Counter[str] = field(default_factory=Counter)  # imports in doubt, by what the lookup found
    seconds: float = 0.0

    COLUMNS = ("sent", "imported", "dead-lettered", "ignored", "duplicated", "lost", "redelivered")

    @property
    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for row in self.rows.values():
            total.update(row)
        return total

    @property
    def ok(self) -> bool:
        totals = self.totals
        return (not self.problems and totals["sent"] > 0 and all(self.controls.values())
                and totals["imported"] + totals["dead-lettered"] + totals["ignored"] == totals["sent"])

    def table(self) -> str:
        header = ["platform", *self.COLUMNS]
        rows = [[platform, *(str(self.rows[platform][column]) for column in self.COLUMNS)] for platform in self.rows]
        rows.append(["total", *(str(self.totals[column]) for column in self.COLUMNS)])
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                                     for i, cell in enumerate(cells)) + " |"

        separator = "|" + "|".join("-" * (width + 2) if i == 0 else "-" * (width + 1) + ":"
                                   for i, width in enumerate(widths)) + "|"
        return "\n".join([line(header), separator, *(line(row) for row in rows)])

    def render(self) -> str:
        totals = self.totals
        parts = [
            self.table(),
            "",
            f"imported {totals['imported']} + dead-lettered {totals['dead-lettered']} + ignored {totals['ignored']} "
            f"= {totals['imported'] + totals['dead-lettered'] + totals['ignored']} of {totals['sent']} sent; "
            f"lost {totals['lost']}, duplicated {totals['duplicated']}",
            "dead-letter queue: " + ", ".join(f"{kind} {count}" for kind, count in sorted(self.dead_letter_kinds.items())),
            "faults injected:",
            *(f"  {target}: " + ", ".join(f"{what} x{count}" for (where, what), count in sorted(self.injected.items())
                                       if where == target)
              for target in sorted({where for where, _ in self.injected})),
            "faulty answers given: " + ", ".join(f"{name} {count}" for name, count in sorted(self.faults_consumed.items())
                                               if count),
            f"retry worker: {self.worker.get('invocations', 0)} invocations, {self.worker.get('crashes', 0)} crashed "
            f"mid-batch ({self.crashed_records} records returned), {self.worker.get('deleted', 0)} messages deleted",
            "log outcomes: " + ", ".join(f"{name} {count}" for name, count in sorted(self.log_outcomes.items())),
            "imports in doubt, looked up in Fullwhere: " + ", ".join(
                f"{reason.replace('_', ' ')} {self.in_doubt[reason]}" for reason in IN_DOUBT_CHECKED),
            f"EMF metrics {'match' if self.metric_outcomes == self.log_outcomes else 'DIFFER FROM'} the log lines",
            *([("negative controls: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in self.controls.items()))]
              if self.controls else []),
            f"{self.seconds:.1f} s",
        ]
        if self.problems:
            parts += ["", "PROBLEMS:", *(f"- {problem}" for problem in self.problems)]
        else:
            parts += ["", "every promise held"]
        return "\n".join(parts)


def _describe(fault: Fault) -> str:
    if fault.kind == "malformed" and fault.handled:
        return "malformed 200 after storing"
    if fault.kind == "status":
        return f"{fault.status}" + (f" Retry-After {fault.retry_after}" if fault.retry_after is not None else "")
    if fault.kind == "delay":
        return f"delay {fault.seconds:g} s"
    return {"drop": "dropped connection", "malformed": "malformed 200"}[fault.kind]


@contextmanager
def private_aws(prefix: str, max_receive_count: int = 8, visibility_timeout: int = 720) -> Iterator[dict[str, str]]:
    """moto's server with a retry queue, dead-letter queue and identity table of this run's own; yields the
    bridge's settings for them.

    moto keeps its state per process, shared by every server in it: names unique to the run keep other
    sandboxes' messages (the test suite's) out of this run's dead-letter queue, and this run's out of theirs.
    """
    server, endpoint = local_aws.start_moto()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        retry_url, dlq_url = local_aws.create_queues(endpoint, name, max_receive_count=max_receive_count,
                                                     visibility_timeout=visibility_timeout)
        local_aws.create_identity_table(endpoint, name)
        yield {**local_aws.aws_env(endpoint), "RETRY_QUEUE_URL": retry_url, "DEAD_LETTER_QUEUE_URL": dlq_url,
               "IDENTITY_TABLE": name}
    finally:
        try:
            sqs = local_aws.client("sqs", endpoint)
            for url in (retry_url, dlq_url):
                sqs.delete_queue(QueueUrl=url)
            local_aws.client("dynamodb", endpoint).delete_table(TableName=name)
        except Exception:  # cleaning up is a courtesy: the server goes away with the process
            pass
        local_aws.stop_moto(server)


def run(scale: Scale = SMALL, seed: int = 5, say: Callable[[str], None] | None = None,
        controls: bool = False) -> Report:
    """Run every scenario on a fresh sandbox; returns the report (``report.ok``, ``report.render()``).

    The bridge's log lines go to ``sys.stdout`` as usual (the test suite scans them for leaks);
    ``say`` gets one line per phase.
    """
    from chalicelib.infra import metrics

    started = time.monotonic()
    outer = sys.stdout
    say = say or (lambda text: outer.write(f"# {text}\n"))
    with (Sandbox(with_aws=False) as sandbox,
          private_aws("fullwhere-bridge-scenario", scale.max_receive_count, VISIBILITY_TIMEOUT) as aws_settings):
        sandbox.aws_endpoint = aws_settings["AWS_ENDPOINT_URL_SQS"]
        sandbox.retry_queue_url = aws_settings["RETRY_QUEUE_URL"]
        sandbox.dead_letter_queue_url = aws_settings["DEAD_LETTER_QUEUE_URL"]
        sandbox.identity_table = aws_settings["IDENTITY_TABLE"]
        settings = {**sandbox.environment(), **aws_settings, **SCENARIO_SETTINGS,
                    "RETRY_HORIZON_HOURS": str(scale.horizon_hours)}
        tap = LogTap(outer)
        with bridge_environment(settings):
            metrics.flush(io.StringIO())  # counts left by earlier code in this process are not ours
            sys.stdout = tap
            try:
                runner = ScenarioRunner(sandbox, scale, seed, say)
                runner.storm()
                runner.sqs_outage()
                runner.inline_budget()
                runner.imports_in_doubt()
                runner.poison()
                runner.recover()
                report = runner.verdict(tap.lines)
                if controls:
                    report.controls = runner.negative_controls(report, tap.lines)
            finally:
                sys.stdout = outer
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help="ten times the guests and faults")
    parser.add_argument("--seed", type=int, default=5, help="order of the stream and of the faults")
    parser.add_argument("--logs", action="store_true", help="print the bridge's log lines too")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    sink = sys.stdout if args.logs else io.StringIO()
    original = sys.stdout
    sys.stdout = sink
    try:
        report = run(LARGE if args.large else SMALL, seed=args.seed, say=lambda text: original.write(f"# {text}\n"),
                     controls=True)
    finally:
        sys.stdout = original
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
