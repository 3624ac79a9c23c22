"""What the rehearsal does with the created stack, step by step, and what each step must show.

The Fullwhere and platform emulators of ``sandbox/`` stand in for the APIs outside AWS; the settings
secret holds the sandbox's credentials and its emulators' URLs, as a deployment's secret holds the real
ones. Each step invokes the packaged handlers as Lambda would and checks the result where it must land: in
Fullwhere, on the stack's queues, in the stack's table. A step that does not show what it must raises
:class:`RehearsalFailed` with what the function answered and logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml

from . import iam, runtime
from . import stack as stacks
from .errors import RehearsalFailed
from .recorder import Recorder
from .stack import ACCOUNT, PARTITION, REGION

# The variables through which the code finds the stack's resources (chalicelib/infra/settings.py), named in
# a failure message when a function lacks one: they have no default that could work.
STACK_VARIABLES = {
    "RETRY_QUEUE_URL": "the retry queue", "DEAD_LETTER_QUEUE_URL": "the dead-letter queue",
    "IDENTITY_TABLE": "the identity ledger's table", "SECRETS_ID": "the settings secret (Fullwhere key, platform secrets)",
}
# Shortened so that a queued job is due at once, an outage is waited out in a second and a sweep lists what was
# placed a second ago; the rest of the settings are the sandbox's (the secret's content is printed by name, never
# by value).
TIMINGS = {"RETRY_BASE_SECONDS": "0", "INLINE_BUDGET_SECONDS": "1", "WORKER_CALL_TIMEOUT_SECONDS": "2",
           "SWEEP_SETTLE_SECONDS": "0"}
HAND_BACK_SECONDS = 3  # a worker invocation with this little time left hands its records back
LOST_WEBHOOKS = (4, 5)  # the Deliveroo guests whose orders are placed but whose webhooks never come: the sweep's
STEP = "  ✓ "
# What each function's code needs on a path this scenario does not take. Only these are excused from "granted but
# never used", each printed with its reason on every run; and each is checked: still granted, still unused here.
UNEXERCISED = [
    iam.Unexercised("OraclePull", "dynamodb:GetItem", "IdentityTable",
                    "the identity ledger reads a guest's row when its claim is refused (a guest without email or "
                    "phone, imported before); the sandbox's OPERA Cloud profiles all have an email, so the pull "
                    "never reaches the ledger"),
    iam.Unexercised("Sweeps", "dynamodb:GetItem", "IdentityTable",
                    "the same read, for a listed guest without email or phone whom the ledger knows but who differs "
                    "from what was last sent (details changed since); the guests this sweep lists are unchanged or "
                    "unknown to the ledger"),
    # Rehearsed with SourcesSecretId only (the sweeps read it every run, listing every source).
    *(iam.Unexercised(function, "secretsmanager:GetSecretValue", "SourcesSecretId", reason) for function, reason in (
        ("APIHandler", "the sources document is read for a webhook to a declarative source, or to check a tenants "
                       "document's platforms; the rehearsal's webhooks are for built-in platforms, without tenants"),
        ("RetryWorker", "read for a declarative source's job, or to check a tenants document's platforms; the "
                        "rehearsal queues built-in platforms' jobs, without tenants"),
        ("OraclePull", "read only to check a tenants document's platforms; the rehearsal runs without one"))),
]
# The template parameters naming a secret: an UNEXERCISED item naming one applies when it is given.
SECRET_PARAMETERS = ("SecretsId", "TenantsSecretId", "SourcesSecretId")


class Rehearsal:
    def __init__(self, package_dir: Path, template: Path | None, overrides: dict[str, str],
                 say: Callable[[str], None] = print):
        self.package_dir = package_dir
        self.template_path = template or package_dir / "sam.yaml"
        self.overrides = overrides
        self.say = say
        self.containers: dict[str, runtime.Container] = {}

    # -- moto --------------------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        """A client with the rehearsal's own credentials: its calls are not the functions' (not recorded)."""
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal")

    def run(self) -> None:
        from sandbox import aws as local_aws
        from sandbox.stack import Sandbox

        # Every client names moto's endpoint; without the caller's AWS configuration nothing can reach a real account.
        for name in [name for name in os.environ if name.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                          AWS_EC2_METADATA_DISABLED="true")
        for name in ("werkzeug", "moto"):  # moto's request lines, and its word on each type it cannot create
            logging.getLogger(name).setLevel(logging.ERROR)
        if not self.template_path.is_file():
            raise RehearsalFailed(f"{self.template_path} does not exist: run make package first")
        sam = yaml.safe_load(self.template_path.read_text())
        started = time.monotonic()
        server, self.endpoint = local_aws.start_moto()
        self.recorder = Recorder.install(server)
        self.workdir = tempfile.TemporaryDirectory(prefix="fullwhere-rehearsal-")
        try:
            with Sandbox(with_aws=False) as sandbox:
                self.sandbox = sandbox
                self._rehearse(sam)
        finally:
            for container in self.containers.values():
                container.stop()
            local_aws.stop_moto(server)
            self.workdir.cleanup()
        self.say(f"rehearsal passed in {time.monotonic() - started:.1f} s")

    # -- the stack ---------------------------------------------------------------------------------
    def _rehearse(self, sam: dict[str, Any]) -> None:
        parameters = stacks.parameter_values(sam, self.overrides)
        if parameters.get("TenantsSecretId"):
            raise RehearsalFailed("the rehearsal runs the deployment-wide settings, without a tenants document: leave "
                                  "TenantsSecretId out of PARAMETERS (tests/test_tenants.py and others cover tenants)")
        secret_name = self._create_secret(parameters.get("SecretsId", "fullwhere-bridge"))
        secrets = {secret_name: secret_name}
        if parameters.get("SourcesSecretId"):  # the sandbox's declarative sources, where the deployment reads them
            from sandbox.stack import sources_document

            secrets[parameters["SourcesSecretId"]] = parameters["SourcesSecretId"]
            self.client("secretsmanager").create_secret(Name=parameters["SourcesSecretId"],
                                                        SecretString=json.dumps(sources_document(self.sandbox.platforms)))
        self.say(f"packaged template {self.template_path} translated with aws-sam-translator; creating it on moto's "
                 f"CloudFormation ({self.endpoint}) as stack fullwhere-bridge")
        self.stack = stacks.create(self.client, sam, self.package_dir, self.overrides)
        self.resolver = stacks.Resolver(self.stack, self.client)
        self._show_stack()
        self.functions = runtime.functions(self.stack, self.client("lambda"))
        api, worker, scheduled = self._roles_of_functions()
        secrets = {name: self.client("secretsmanager").describe_secret(SecretId=name)["ARN"] for name in secrets}
        for function in self.functions.values():
            self.containers[function.logical] = runtime.Container(
                function, Path(self.workdir.name), self.endpoint, self.client, self.recorder, secrets)
        self.mapping = runtime.EventSourceMapping.of(self.stack, self.functions[worker], self.client)
        self.say(f"functions, run from the stack's zips in fresh processes (environment from the stack, role "
                 f"credentials from moto's STS): {', '.join(self.functions)}")
        steps = [
            self._webhooks_lost,
            lambda: self._guest_imported(api),
            lambda: self._redelivery_is_a_no_op(api),
            lambda: self._failure_queued(api),
            lambda: self._permanent_failure_dead_lettered(api),
            lambda: self._worker_hands_back(worker),
            lambda: self._worker_retries(worker),
            lambda: self._worker_imports(worker),
            lambda: self._worker_redelivery_is_a_no_op(worker),
            lambda: self._worker_dead_letters_unreadable(worker),
        ]
        by_handler = {"app.oracle_pull": [self._pull_imports, self._pull_queues_and_dead_letters],
                      "app.sweeps": [self._sweep_recovers]}
        for function, rule in scheduled.items():  # the OPERA Cloud pull, the sweeps, and any other schedule once
            for run in by_handler.get(self.functions[function].handler, [self._scheduled_runs]):
                steps.append(lambda run=run, function=function, rule=rule: run(function, rule))
        steps.append(self._ledger_rows)
        for step in steps:
            try:
                step()
            except RehearsalFailed as failure:
                raise RehearsalFailed(str(failure) + self._missing_variables()) from None
        self._show_origins()
        self._check_least_privilege()
        self._check_no_secret_in_logs()

    def _create_secret(self, name: str) -> str:
        """The settings secret a deployment creates before its first deploy (README, "Deploying to AWS")."""
        document = {key: value for key, value in self.sandbox.environment().items() if key != "SOURCES_FILE"}
        document.update(TIMINGS)
        self.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(document))
        self.secret_values = {value for key, value in document.items() if _is_secret(key)}
        self.say(f"secret {name} (read by the functions through SECRETS_ID): {len(document)} settings, the sandbox's "
                 f"credentials and emulators' URLs, with shortened timings "
                 f"{', '.join(f'{key}={value}' for key, value in TIMINGS.items())}")
        return name

    def _show_stack(self) -> None:
        stack = self.stack
        self.say(f"stack {stack.name}: CREATE_COMPLETE, {len(stack.physical)} resources")
        for logical in sorted(stack.physical, key=lambda name: (stack.types[name], name)):
            self.say(f"  {stack.types[logical]:<34} {logical:<38} {stack.physical[logical]}")
        for logical, condition in stack.not_created.items():
            self.say(f"  not created: {logical} (condition {condition} is false with these parameters)")
        self.say("left out (moto cannot create them; a real deployment creates them):")
        for item in stack.left_out:
            self.say(f"  {item.type:<34} {item.name:<38} {item.reason}")
        self.say("outputs:")
        for key, value in sorted(stack.outputs.items()):
            self.say(f"  {key:<20} {value}")

    def _roles_of_functions(self) -> tuple[str, str, dict[str, str]]:
        """(API function, retry worker, {scheduled function: its rule}): the handler app.app, the SQS consumer,
        the schedules' targets."""
        resources = self.stack.template["Resources"]
        api = [name for name, function in self.functions.items() if function.handler == "app.app"]
        consumers = [resource["Properties"]["FunctionName"].get("Ref") for resource in resources.values()
                     if resource["Type"] == "AWS::Lambda::EventSourceMapping"]
        scheduled = {target["Arn"]["Fn::GetAtt"][0]: name for name, resource in resources.items()
                     if resource["Type"] == "AWS::Events::Rule" for target in resource["Properties"].get("Targets", [])}
        pulls = [name for name in scheduled if self.functions[name].handler == "app.oracle_pull"]
        for what, found in (("API function (handler app.app)", api), ("SQS consumer", consumers),
                            ("OPERA Cloud pull (handler app.oracle_pull) on a schedule", pulls)):
            if len(found) != 1:
                raise RehearsalFailed(f"expected one {what} in the stack, found {found}")
        unused = sorted(set(self.functions) - {api[0], consumers[0], *scheduled})
        if unused:
            raise RehearsalFailed(f"the rehearsal does not know how to invoke {', '.join(unused)}: add a step for it "
                                  "(deploy/rehearse/scenario.py)")
        return api[0], consumers[0], scheduled

    def _missing_variables(self) -> str:
        """What a failure message adds when a function lacks a variable the code needs to find the stack."""
        by_missing: dict[tuple[str, ...], list[str]] = {}
        for function in self.functions.values():
            missing = tuple(name for name in STACK_VARIABLES if not function.environment.get(name))
            if missing:
                by_missing.setdefault(missing, []).append(function.logical)
        return "".join(
            f"\nthe environment the stack gives {', '.join(functions)} has no "
            + ", ".join(f"{name} ({STACK_VARIABLES[name]})" for name in missing)
            + ": the code needs it to find that resource (Globals in deploy/resources.yaml)"
            for missing, functions in by_missing.items())

    # -- the steps ---------------------------------------------------------------------------------
    def _webhook(self, api: str, platform: str, n: int) -> tuple[runtime.Invocation, dict[str, Any]]:
        """Guest ``n`` of ``platform``'s sample, signed as the platform signs it, through the API function."""
        from sandbox.samples import SAMPLES

        delivery = SAMPLES[platform].prepare(self.sandbox, n)
        event = runtime.api_gateway_event(platform, delivery.body, delivery.headers, delivery.query)
        return self._call_api(api, platform, event), event

    def _call_api(self, api: str, platform: str, event: dict[str, Any]) -> runtime.Invocation:
        invocation = self.containers[api].invoke(event)
        if invocation.error:
            raise RehearsalFailed(f"{api} failed on the {platform} webhook: {invocation.error}\n{invocation.logs[-2000:]}")
        return invocation

    def _status(self, invocation: runtime.Invocation) -> str:
        result = invocation.result if isinstance(invocation.result, dict) else {}
        return f"{result.get('statusCode')} {str(result.get('body') or '')[:200]}".strip()

    def _customers(self, **fields: str) -> list[dict[str, Any]]:
        from sandbox.stack import FULLWHERE_KEY

        return self.sandbox.fullwhere.find(FULLWHERE_KEY, **fields)

    def _expect_imported(self, who: str, invocation: runtime.Invocation, id_field: str, guest_id: str) -> None:
        found = self._customers(**{id_field: guest_id})
        if len(found) != 1:
            raise RehearsalFailed(f"{who}: Fullwhere has {len(found)} customer(s) with {id_field} {guest_id}, expected "
                                  f"one. {invocation.function} answered {self._status(invocation)} and logged: "
                                  f"{invocation.outcomes()}")

    def _guest_imported(self, api: str) -> None:
        from sandbox.samples import SAMPLES

        sample = SAMPLES["deliveroo"]
        invocation, self.first_event = self._webhook(api, "deliveroo", 1)
        self._expect_imported("a signed Deliveroo webhook", invocation, sample.id_field, sample.guest_id(1))
        self.say(f"{STEP}a signed Deliveroo webhook (API Gateway proxy event): {self._status(invocation)[:3]}, guest "
                 f"imported into Fullwhere ({sample.id_field} {sample.guest_id(1)}, no email nor real phone: "
                 f"through the identity ledger)")

    def _redelivery_is_a_no_op(self, api: str) -> None:
        from sandbox.samples import SAMPLES

        sample = SAMPLES["deliveroo"]
        imports = self.sandbox.fullwhere.import_count
        invocation = self._call_api(api, "deliveroo", self.first_event)
        self._expect_imported("the same webhook delivered again", invocation, sample.id_field, sample.guest_id(1))
        if self.sandbox.fullwhere.import_count != imports:
            raise RehearsalFailed(f"the same Deliveroo webhook delivered again was imported again: the identity ledger "
                                  f"did not recognise the guest. {api} logged: {invocation.outcomes()}")
        self.say(f"{STEP}the same webhook delivered again: {self._status(invocation)[:3]}, not imported again (the "
                 "ledger knows the guest)")

    def _queue_depth(self, url: str) -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attributes = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    def _webhooks_lost(self) -> None:
        """Orders placed whose webhooks never come (the sweep finds them), placed first: a sweep lists only what
        was placed before the whole second it runs in."""
        from sandbox.samples import SAMPLES

        for n in LOST_WEBHOOKS:
            SAMPLES["deliveroo"].build(self.sandbox, n)
        self.lost_placed_at = time.time()

    def _failure_queued(self, api: str) -> None:
        from sandbox.emulators.base import Fault
        from sandbox.samples import SAMPLES

        fullwhere = self.sandbox.fullwhere
        fullwhere.faults.always(Fault("status", status=503))
        try:
            invocations = [self._webhook(api, "ubereats", 1)[0], self._webhook(api, "deliveroo", 3)[0]]
        finally:
            fullwhere.faults.clear()
        depth = self._queue_depth(self.mapping.queue_url)
        imported = self._customers(**{SAMPLES["ubereats"].id_field: SAMPLES["ubereats"].guest_id(1)}) + \
            self._customers(**{SAMPLES["deliveroo"].id_field: SAMPLES["deliveroo"].guest_id(3)})
        if depth != 2 or imported:
            raise RehearsalFailed(
                f"an Uber Eats and a Deliveroo webhook while Fullwhere answers 503 should leave two jobs on the stack's "
                f"retry queue {self.mapping.queue_url} (the one the worker's event source mapping polls), which holds "
                f"{depth}. {api} answered " + "; ".join(f"{self._status(invocation)} and logged: {invocation.outcomes()}"
                                                       for invocation in invocations))
        self.say(f"{STEP}an Uber Eats and a Deliveroo webhook while Fullwhere answers 503 (the order read from the Uber "
                 f"Eats emulator): {', '.join(self._status(invocation)[:3] for invocation in invocations)}, both jobs "
                 "queued on the stack's retry queue")

    def _permanent_failure_dead_lettered(self, api: str) -> None:
        from sandbox.emulators.base import Fault

        dead_letter_url = self.stack.physical.get("DeadLetterQueue")
        fullwhere = self.sandbox.fullwhere
        fullwhere.faults.add(Fault("status", status=400, body='{"errors": ["rehearsal: refused"]}'), times=1,
                             path="/partners/customer")
        invocation, _ = self._webhook(api, "deliveroo", 2)
        fullwhere.faults.clear()
        letters = []
        if dead_letter_url:
            letters = self.client("sqs").receive_message(QueueUrl=dead_letter_url, MaxNumberOfMessages=10,
                                                         MessageAttributeNames=["All"], VisibilityTimeout=0)
            letters = letters.get("Messages", [])
        if len(letters) != 1:
            raise RehearsalFailed(
                f"a Deliveroo webhook whose guest Fullwhere refuses (400) should leave one dead letter on the stack's "
                f"dead-letter queue {dead_letter_url}, which holds {len(letters)}. {api} answered "
                f"{self._status(invocation)} and logged: {invocation.outcomes()}")
        attributes = {key: value.get("StringValue") for key, value in letters[0].get("MessageAttributes", {}).items()}
        if attributes.get("kind") != "permanent":
            raise RehearsalFailed(f"the dead letter's kind is {attributes.get('kind')!r}, expected 'permanent'")
        self.say(f"{STEP}a Deliveroo webhook whose guest Fullwhere refuses (400): {self._status(invocation)[:3]}, "
                 f"dead-lettered on the stack's dead-letter queue (kind permanent, reason: {attributes.get('reason')})")

    def _worker_hands_back(self, worker: str) -> None:
        invocation, messages = self.mapping.poll(self.containers[worker], remaining_seconds=HAND_BACK_SECONDS)
        if invocation is None:
            raise RehearsalFailed(f"the worker's event source mapping found nothing on {self.mapping.queue_url}: the "
                                  "jobs were not queued where the worker reads")
        failures = (invocation.result or {}).get("batchItemFailures") if isinstance(invocation.result, dict) else None
        received = sorted(message["MessageId"] for message in messages)
        if invocation.error or len(received) != 2 or \
                sorted(item.get("itemIdentifier") for item in failures or []) != received:
            raise RehearsalFailed(f"{worker}, invoked with {HAND_BACK_SECONDS} s left and the batch of the {len(received)} "
                                  f"queued job(s), should hand every record back in batchItemFailures; it answered "
                                  f"{invocation.result or invocation.error} and logged: {invocation.outcomes()}")
        if self._queue_depth(self.mapping.queue_url) != 2:
            raise RehearsalFailed("the records the worker handed back are no longer on the retry queue")
        # The worker asked for them back in 10 s (NO_TIME_DELAY_SECONDS): the rehearsal does not wait.
        for message in messages:
            self.client("sqs").change_message_visibility(QueueUrl=self.mapping.queue_url,
                                                         ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        self.say(f"{STEP}the worker, given a batch from the stack's retry queue with {HAND_BACK_SECONDS} s left: "
                 f"handed both records back (ChangeMessageVisibility, batchItemFailures); the mapping "
                 f"{self.mapping.name} ({', '.join(self.mapping.response_types)}, batch size "
                 f"{self.mapping.batch_size}) kept them on the queue")

    def _worker_retries(self, worker: str) -> None:
        from sandbox.emulators.base import Fault

        fullwhere = self.sandbox.fullwhere
        fullwhere.faults.always(Fault("status", status=503))
        try:
            invocation, messages = self.mapping.poll(self.containers[worker])
        finally:
            fullwhere.faults.clear()
        if invocation is None:
            raise RehearsalFailed("the handed-back records did not come back to the worker")
        failures = (invocation.result or {}).get("batchItemFailures") if isinstance(invocation.result, dict) else None
        depth = self._queue_depth(self.mapping.queue_url)
        retried = self._counted(invocation).get("retried", 0)
        if invocation.error or failures or depth != 2 or retried != len(messages):
            raise RehearsalFailed(
                f"{worker}, given the batch while Fullwhere still answers 503, should send each job again as a new "
                f"message (with its backoff) and answer every record done, so that the mapping deletes the old ones; "
                f"the retry queue holds {depth} message(s), {worker} answered {invocation.result or invocation.error} "
                f"and logged: {invocation.outcomes()}")
        self.say(f"{STEP}the worker, given the batch while Fullwhere still answers 503: sent each job again as a new "
                 "message (SendMessage, its backoff as the delay), and the mapping deleted the old ones")

    def _worker_imports(self, worker: str) -> None:
        from sandbox.samples import SAMPLES

        invocation, self.imported_messages = self.mapping.poll(self.containers[worker])
        if invocation is None:
            raise RehearsalFailed("the jobs sent again did not come back to the worker")
        guests = [("ubereats", 1), ("deliveroo", 3)]
        for platform, n in guests:
            sample = SAMPLES[platform]
            self._expect_imported(f"the queued {platform} job", invocation, sample.id_field, sample.guest_id(n))
        depth = self._queue_depth(self.mapping.queue_url)
        if invocation.error or depth:
            raise RehearsalFailed(f"after the worker imported the jobs, the retry queue still holds {depth} message(s); "
                                  f"{worker} answered {invocation.result or invocation.error}")
        self.say(f"{STEP}the worker, given the jobs again: imported both queued guests ("
                 + ", ".join(f"{SAMPLES[platform].id_field} {SAMPLES[platform].guest_id(n)}" for platform, n in guests)
                 + "), the mapping deleted the messages: retry queue empty")

    def _worker_redelivery_is_a_no_op(self, worker: str) -> None:
        sqs = self.client("sqs")
        for message in self.imported_messages:  # SQS delivers a message at least once: the same jobs again
            sqs.send_message(QueueUrl=self.mapping.queue_url, MessageBody=message["Body"],
                             MessageAttributes=message.get("MessageAttributes", {}))
        imports = self.sandbox.fullwhere.import_count
        invocation, _ = self.mapping.poll(self.containers[worker])
        duplicates = self._counted(invocation).get("duplicate", 0) if invocation else 0
        depth = self._queue_depth(self.mapping.queue_url)
        if invocation is None or invocation.error or self.sandbox.fullwhere.import_count != imports or \
                duplicates != len(self.imported_messages) or depth:
            raise RehearsalFailed(
                f"the jobs the worker imported, delivered to it again, should be recognised by the identity ledger and "
                f"not imported again; Fullwhere counted {self.sandbox.fullwhere.import_count - imports} import(s), the "
                f"retry queue holds {depth}, {worker} logged: {invocation.outcomes() if invocation else 'nothing'}")
        self.say(f"{STEP}the same jobs delivered to the worker again (SQS delivers at least once): not imported again "
                 "(the ledger knows the guests), the mapping deleted them")

    def _worker_dead_letters_unreadable(self, worker: str) -> None:
        self.client("sqs").send_message(QueueUrl=self.mapping.queue_url, MessageBody="rehearsal: not a retry job")
        invocation, _ = self.mapping.poll(self.containers[worker])
        letters = [letter for letter in self._dead_letters() if letter.get("kind") == "poisoned"]
        if invocation is None or invocation.error or len(letters) != 1 or self._queue_depth(self.mapping.queue_url):
            raise RehearsalFailed(
                f"an unreadable message on the retry queue should be kept verbatim in the stack's dead-letter queue "
                f"(kind poisoned), which holds {len(letters)} such letter(s); {worker} logged: "
                f"{invocation.outcomes() if invocation else 'nothing (the message was not received)'}")
        self.say(f"{STEP}an unreadable message on the retry queue (as a hand-made redrive could leave): the worker kept "
                 "it verbatim in the dead-letter queue (kind poisoned), the mapping deleted it")

    def _dead_letters(self) -> list[dict[str, str]]:
        """The attributes of every letter on the stack's dead-letter queue (left there: received with no timeout)."""
        url = self.stack.physical.get("DeadLetterQueue")
        letters: dict[str, dict[str, str]] = {}
        for _ in range(3):  # SQS answers a sample of the messages: ask until each was seen
            answer = self.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                        MessageAttributeNames=["All"], VisibilityTimeout=0)
            for message in answer.get("Messages", []):
                letters[message["MessageId"]] = {key: value.get("StringValue")
                                                 for key, value in message.get("MessageAttributes", {}).items()}
        return list(letters.values())

    @staticmethod
    def _counted(invocation: runtime.Invocation) -> dict[str, int]:
        """How many lines of each outcome the invocation logged (not its metrics lines)."""
        counts: dict[str, int] = {}
        for line in invocation.lines():
            if "outcome" in line and "_aws" not in line:
                counts[line["outcome"]] = counts.get(line["outcome"], 0) + 1
        return counts

    def _on_schedule(self, function: str, rule: str) -> tuple[runtime.Invocation, str]:
        """``function`` invoked once as the stack's rule ``rule`` invokes it; (the invocation, the schedule)."""
        name = self.stack.physical[rule]
        invocation = self.containers[function].invoke(
            runtime.scheduled_event(f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:rule/{name}"))
        if invocation.error:
            raise RehearsalFailed(f"{function} failed: {invocation.error}\n{invocation.logs[-2000:]}")
        schedule = self.client("events").describe_rule(Name=name).get("ScheduleExpression")
        return invocation, f"its rule {rule} ({schedule})"

    def _pull_imports(self, pull: str, rule: str) -> None:
        from sandbox.samples import SAMPLES

        sample = SAMPLES["oracle"]
        sample.build(self.sandbox, 1)  # the guest's profile and its business event, in the OHIP emulator
        invocation, schedule = self._on_schedule(pull, rule)
        self._expect_imported("the scheduled OPERA Cloud pull", invocation, sample.id_field, sample.guest_id(1))
        self.say(f"{STEP}the OPERA Cloud pull ({pull}), invoked as {schedule} would: dequeued the business "
                 f"event from the OHIP emulator and imported the guest ({sample.id_field} {sample.guest_id(1)})")

    def _faults_then(self, run: Callable[[], Any]) -> Any:
        """``run`` while Fullwhere answers its next import 503 and the one after 400, then normally."""
        from sandbox.emulators.base import Fault

        faults = self.sandbox.fullwhere.faults
        faults.add(Fault("status", status=503), times=1, path="/partners/customer")
        faults.add(Fault("status", status=400, body='{"errors": ["rehearsal: refused"]}'), times=1,
                   path="/partners/customer")
        try:
            return run()
        finally:
            faults.clear()

    def _depths(self) -> tuple[int, int]:
        """How many messages the retry queue and the dead-letter queue hold."""
        return self._queue_depth(self.mapping.queue_url), self._queue_depth(self.stack.physical["DeadLetterQueue"])

    def _pull_queues_and_dead_letters(self, pull: str, rule: str) -> None:
        from sandbox.samples import SAMPLES

        for n in (2, 3):
            SAMPLES["oracle"].build(self.sandbox, n)
        depth, letters = self._depths()
        invocation = self._faults_then(lambda: self._on_schedule(pull, rule)[0])
        counts = self._counted(invocation)
        queued, dead = (now - before for now, before in zip(self._depths(), (depth, letters)))
        if (counts.get("queued"), counts.get("dead_lettered"), queued, dead) != (1, 1, 1, 1):
            raise RehearsalFailed(
                f"the OPERA Cloud pull of two business events, while Fullwhere answers one import 503 and the next 400, "
                f"should queue one on the stack's retry queue and dead-letter the other; {queued} message(s) were "
                f"queued, {dead} dead-lettered, and {pull} logged: {invocation.outcomes()}")
        self.say(f"{STEP}the OPERA Cloud pull again, while Fullwhere answers one import 503 and the next 400: queued one "
                 "guest on the stack's retry queue and dead-lettered the other")

    def _sweep_recovers(self, sweeps: str, rule: str) -> None:
        wait = math.ceil(self.lost_placed_at) - time.time()
        if wait > 0:  # the lost orders must be placed before the whole second the sweep lists up to
            time.sleep(wait + 0.01)
        depth, letters = self._depths()
        invocation, schedule = self._faults_then(lambda: self._on_schedule(sweeps, rule))
        counts = self._counted(invocation)
        result = invocation.result if isinstance(invocation.result, dict) else {}
        queued, dead = (now - before for now, before in zip(self._depths(), (depth, letters)))
        expected = {"recovered": 1, "queued": 1, "dead_lettered": 1}
        if {key: counts.get(key, 0) for key in expected} != expected or (queued, dead) != (1, 1) or \
                result.get("unchanged") != 2:
            raise RehearsalFailed(
                f"the sweep should list the five Deliveroo orders of the rehearsal, leave the two the bridge sent as "
                f"they were unchanged, and send the three it has no record of (guest 2, refused by Fullwhere, and the "
                f"two whose webhooks never came): with Fullwhere answering the first 503 and the second 400, one "
                f"queued, one dead-lettered, one recovered. {queued} message(s) were queued, {dead} dead-lettered; "
                f"{sweeps} answered {json.dumps(result)[:300]} and logged: {invocation.outcomes()}")
        self.say(f"{STEP}Sweeps, invoked as {schedule} would: listed the Deliveroo orders, left the 2 guests sent before "
                 f"as they were (unchanged), and sent the 3 it had no record of (2 webhooks never came), Fullwhere "
                 f"answering the first 503 and the second 400: one queued, one dead-lettered, one recovered")

    def _scheduled_runs(self, function: str, rule: str) -> None:
        invocation, schedule = self._on_schedule(function, rule)
        self.say(f"{STEP}{function}, invoked once as {schedule} would: answered "
                 f"{json.dumps(invocation.result)[:160]}; logged {invocation.outcomes()[:200]}")

    def _ledger_rows(self) -> None:
        from sandbox.samples import SAMPLES

        table = self.stack.physical.get("IdentityTable")
        items = self.client("dynamodb").scan(TableName=table)["Items"] if table else []
        states = {item["pk"]["S"]: item.get("state", {}).get("S") for item in items}
        claims = sorted(state for key, state in states.items() if "#deliveroo#" in key and state)
        guest = f"#deliveroo#{SAMPLES['deliveroo'].guest_id(1)}"
        imported = [key for key, state in states.items() if key.endswith(guest) and state == "imported"]
        positions = [key for key in states if key.startswith("position#oracle#")]
        if not imported or not positions:
            raise RehearsalFailed(f"the stack's table {table} should hold the Deliveroo guest's ledger row (imported) "
                                  f"and the OPERA Cloud pull's position; it holds {sorted(states) or 'nothing'}")
        self.say(f"{STEP}the identity ledger writes to the stack's table {table}: {len(states)} rows, among them the "
                 f"Deliveroo guests' claims ({', '.join(claims)}) and the OPERA Cloud pull's position")

    # -- what the whole run shows ------------------------------------------------------------------
    def _show_origins(self) -> None:
        roots = {"deployment.zip": "/task/", "layer": "/opt/", "runtime": "/runtime/"}
        by_root: dict[str, set[str]] = {name: set() for name in roots}
        for container in self.containers.values():
            for invocation in container.invocations:
                for module, path in invocation.origins.items():
                    if path == str(runtime.BOOTSTRAP):  # Lambda's own runtime, as __main__ (and multiprocessing's alias)
                        continue
                    root = next((name for name, marker in roots.items() if marker in path), None)
                    if root is None:
                        raise RehearsalFailed(f"{container.function.logical} loaded {module} from {path}, outside "
                                              "its zips and the runtime")
                    by_root[root].add(module)
        if not {"app", "chalicelib"} <= by_root["deployment.zip"]:
            raise RehearsalFailed(f"the handlers did not run app.py and chalicelib from deployment.zip: {by_root}")
        self.say("the code that ran: " + "; ".join(f"{name}: {', '.join(sorted(modules))}"
                                                 for name, modules in by_root.items() if modules))

    def _check_least_privilege(self) -> None:
        calls = [call for container in self.containers.values() for call in container.calls]
        statements, roles = {}, {}
        for logical in self.functions:
            roles[logical], statements[logical] = iam.policies(self.stack, self.resolver, logical)
        names = self._resource_names()
        arns = {name: arn for arn, name in names.items()}
        for parameter in SECRET_PARAMETERS:  # as the template's Settings statement names them
            if self.stack.parameters.get(parameter):
                arns[parameter] = (f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:"
                                   f"{self.stack.parameters[parameter]}-??????")
        listed = [item for item in UNEXERCISED if item.resource not in SECRET_PARAMETERS or item.resource in arns]
        refused = iam.denied(calls, statements)
        idle, excused, wrong = iam.excuse(iam.unused(calls, statements, roles), listed, arns, calls, statements, roles)
        problems = []
        if refused:
            problems.append("calls the functions' roles do not allow (a real deployment answers AccessDenied): grant "
                            "them in deploy/resources.yaml (PipelinePolicy when every function's pipeline makes them, "
                            "else the role's own policy):\n" + "\n".join(sorted({
                                f"  {call.function} (role {roles[call.function]}) called {call.action} on {call.resource}"
                                f" [{call.by}]" for call in refused})))
        if idle:
            problems.append("permissions a role grants that its own function never used in the rehearsal (least "
                            "privilege, role by role): remove them from that role in deploy/resources.yaml, or rehearse "
                            "the code path that needs them (or, where the scenario cannot, list them in UNEXERCISED, "
                            "deploy/rehearse/scenario.py, with the reason):\n" + "\n".join(sorted({
                                f"  {', '.join(entry.functions)} (role {entry.role}): {entry.statement.policy} (Sid "
                                f"{entry.statement.sid}) allows {entry.action} on {entry.resource}" for entry in idle})))
        if wrong:
            problems.append("the grants listed as needed but not exercised (UNEXERCISED, deploy/rehearse/scenario.py):\n"
                            + "\n".join(f"  {problem}" for problem in wrong))
        if problems:
            raise RehearsalFailed("\n".join(problems))
        self.say("least privilege, role by role: every AWS call made for a function is allowed by its own role, and "
                 "every action its role allows (on each resource) was used by that function:")
        for logical in self.functions:
            own = [call for call in calls if call.function == logical]
            code = self._actions_on([call for call in own if call.by == "code"], names)
            lambda_side = self._actions_on([call for call in own if call.by != "code"], names)
            self.say(f"  {logical} (role {roles[logical]}): its code: {code or 'none'}; Lambda for it: {lambda_side}")
        self.say("  (Lambda's own calls, made with the function's role: the worker's event source mapping receives, "
                 "deletes and reads the queue's attributes; every function's output goes to its log group)")
        self.say("needed by the code, granted, but not exercised by this scenario: excused from \"never used\" only "
                 "because UNEXERCISED (deploy/rehearse/scenario.py) lists them, with the reason:")
        for item, arn in excused:
            target = names.get(arn) or f"{self.stack.parameters.get(item.resource)} ({item.resource})"
            self.say(f"  {item.function} (role {roles[item.function]}): {item.action} on {target}: {item.reason}")

    def _resource_names(self) -> dict[str, str]:
        """ARN -> logical id of the stack's queues, table and log groups (a log group's ARN without its ``:*``)."""
        kinds = ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::Logs::LogGroup")
        return {self.resolver.get_att(logical, "Arn").removesuffix(":*"): logical
                for logical, kind in self.stack.types.items() if kind in kinds and logical in self.stack.physical}

    @staticmethod
    def _actions_on(calls: list[iam.Call], names: dict[str, str]) -> str:
        """``sqs:SendMessage on DeadLetterQueue, RetryQueue; ...``: the actions, by what they acted on (by name)."""
        def short(arn: str) -> str:
            if ":secret:" in arn:  # the secret's name, without the 6 characters Secrets Manager adds
                return re.sub(r"-[A-Za-z0-9]{6}$", "", arn.split(":secret:", 1)[1])
            group = arn.split(":log-stream:", 1)[0]
            return names.get(arn) or names.get(group) or arn

        targets: dict[str, set[str]] = {}
        for call in calls:
            targets.setdefault(call.action, set()).add(short(call.resource))
        by_targets: dict[tuple[str, ...], list[str]] = {}
        for action, acted_on in sorted(targets.items()):
            by_targets.setdefault(tuple(sorted(acted_on)), []).append(action)
        return "; ".join(f"{', '.join(actions)} on {', '.join(acted_on)}" for acted_on, actions in by_targets.items())

    def _check_no_secret_in_logs(self) -> None:
        for container in self.containers.values():
            text = "".join(invocation.logs for invocation in container.invocations)
            leaked = [value for value in self.secret_values if value and value in text]
            if leaked:
                raise RehearsalFailed(f"{container.function.logical}'s log lines contain {len(leaked)} secret value(s) "
                                      "of the settings secret")
        lines = sum(len(invocation.lines()) for container in self.containers.values() for invocation in container.invocations)
        self.say(f"logs: {lines} JSON lines written to the functions' log groups, none holding a secret")


def _is_secret(key: str) -> bool:
    """Whether a setting holds a secret (its field is marked so in the settings models)."""
    from chalicelib.connectors import settings_models

    secret_names = getattr(_is_secret, "names", None)
    if secret_names is None:
        secret_names = {model.variable(name) for model in settings_models()
                        for name, field in model.model_fields.items() if field.repr is False}
        _is_secret.names = secret_names
    return key in secret_names
