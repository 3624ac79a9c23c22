"""The stack's functions run as Lambda runs them: from their own zips, with their own environment and role.

Each :class:`Container` is one execution environment: the function's code zip and its layers, downloaded
from where the stack points (moto's S3) and extracted as Lambda lays them out (``task/`` for
``/var/task``, ``opt/`` for ``/opt``), a fresh Python process with only those, the standard library and
the runtime's boto3 on its path (``bootstrap.py``), the environment the stack gave the function plus the
variables Lambda defines, and credentials of the function's role, assumed through moto's STS. The only
addition is ``AWS_ENDPOINT_URL``, pointing every AWS client at moto.

:class:`EventSourceMapping` is Lambda's SQS poller for the worker, read from the stack's own mapping:
its queue, its batch size and whether it takes partial batch responses (``ReportBatchItemFailures``).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import select
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RehearsalFailed
from .iam import Call, iam_action, resource_arns
from .recorder import Recorder
from .stack import ACCOUNT, PARTITION, REGION, Stack

BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap.py"
# What the Lambda Python runtime provides in /var/runtime besides its own code: boto3 and its dependencies.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
START_TIMEOUT_SECONDS = 60  # the first invocation also imports the handler (Lambda's init phase)


@dataclass
class Function:
    """One function of the stack: what moto's Lambda holds, and where its code and layers are."""

    logical: str
    name: str
    arn: str
    handler: str
    runtime: str
    timeout: int
    memory: int
    role_arn: str
    environment: dict[str, str]
    code: tuple[str, str]  # (bucket, key)
    layers: list[tuple[str, str]]
    log_group: str


def functions(stack: Stack, lambda_client: Any) -> dict[str, Function]:
    """The stack's functions by logical id. Environment, handler and role come from moto's Lambda; the code,
    layers and log group from the template (moto's CloudFormation does not keep Layers nor LoggingConfig)."""
    found = {}
    resources = stack.template["Resources"]
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function" or logical in stack.not_created:
            continue
        properties = resource["Properties"]
        config = lambda_client.get_function_configuration(FunctionName=stack.physical[logical])
        layers = []
        for layer in properties.get("Layers", []):
            name = layer.get("Ref") if isinstance(layer, dict) else None
            if name not in resources or name not in stack.physical:
                raise RehearsalFailed(f"{logical}'s layer {layer!r} is not a layer version of the stack")
            content = resources[name]["Properties"]["Content"]
            layers.append((content["S3Bucket"], content["S3Key"]))
        log_group = properties.get("LoggingConfig", {}).get("LogGroup")
        if isinstance(log_group, dict):
            log_group = stack.physical.get(log_group.get("Ref", ""))
        variables = (config.get("Environment") or {}).get("Variables") or {}
        found[logical] = Function(
            logical=logical, name=config["FunctionName"], arn=config["FunctionArn"], handler=config["Handler"],
            runtime=config["Runtime"], timeout=int(config["Timeout"]), memory=int(config["MemorySize"]),
            role_arn=config["Role"],
            # CloudFormation passes every variable as a string (moto keeps a Number parameter's int).
            environment={key: str(value) for key, value in variables.items()},
            code=(properties["Code"]["S3Bucket"], properties["Code"]["S3Key"]), layers=layers,
            log_group=log_group or f"/aws/lambda/{config['FunctionName']}")  # Lambda's default group
    return found


def runtime_dir(workdir: Path) -> Path:
    """The runtime's own packages (Lambda's /var/runtime), linked from this virtualenv and nothing else."""
    folder = workdir / "runtime"
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RehearsalFailed(f"{name} (provided by the Lambda runtime) is not installed in this virtualenv")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        target = folder / source.name
        if not target.exists():
            target.symlink_to(source)
    return folder


@dataclass
class Invocation:
    function: str
    result: Any
    error: dict[str, str] | None
    logs: str
    calls: list[Call]
    origins: dict[str, str]

    def lines(self) -> list[dict[str, Any]]:
        """The bridge's JSON log lines of this invocation."""
        parsed = []
        for line in self.logs.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                parsed.append(item)
        return parsed

    def outcomes(self) -> str:
        """The outcomes it logged, with their reasons, in order and counted: what a failure message quotes."""
        seen: dict[str, int] = {}
        for line in self.lines():
            if "outcome" in line and "_aws" not in line:  # not the metrics (EMF) lines, which count them
                reason = str(line.get("reason") or line.get("detail") or "")[:80]
                key = f"{line['outcome']}" + (f" ({reason})" if reason else "")
                seen[key] = seen.get(key, 0) + 1
        return ", ".join(key + (f" x{count}" if count > 1 else "") for key, count in seen.items()) or "no outcome logged"


@dataclass
class Container:
    """One execution environment of ``function``, started on its first invocation and kept warm."""

    function: Function
    workdir: Path
    endpoint: str
    clients: Any  # service -> a boto3 client on moto, with the rehearsal's own credentials
    recorder: Recorder
    secrets: dict[str, str]  # secret name -> ARN, to name what a GetSecretValue call read
    calls: list[Call] = field(default_factory=list)  # every call made for the function, Lambda's included
    invocations: list[Invocation] = field(default_factory=list)
    _process: subprocess.Popen | None = None
    _answers: Any = None
    _credentials: dict[str, str] | None = None
    _stream: str | None = None

    def _extract(self, bucket: str, keys: list[str], into: Path) -> Path:
        if into.exists():
            return into
        into.mkdir(parents=True)
        s3 = self.clients("s3")
        for key in keys:
            archive = self.workdir / "downloads" / key
            if not archive.exists():
                archive.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(archive))
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(into)
        return into

    def start(self) -> None:
        function = self.function
        bucket, key = function.code
        task = self._extract(bucket, [key], self.workdir / "task" / key)
        opt = self._extract(bucket, [layer_key for _, layer_key in function.layers],
                            self.workdir / "opt" / "+".join(layer_key for _, layer_key in function.layers))
        role = self.clients("sts").assume_role(RoleArn=function.role_arn, RoleSessionName=function.name[:64])
        self._credentials = role["Credentials"]
        self.recorder.owners[self._credentials["AccessKeyId"]] = function.logical
        self._stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        environment = {
            # Lambda's defined runtime variables (AWS Lambda Developer Guide, "Defined runtime environment variables").
            "PATH": "/usr/local/bin:/usr/bin/:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
            "_HANDLER": function.handler, "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": function.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": function.log_group, "AWS_LAMBDA_LOG_STREAM_NAME": self._stream,
            "AWS_ACCESS_KEY_ID": self._credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": self._credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": self._credentials["SessionToken"],
            "LAMBDA_TASK_ROOT": str(task), "LAMBDA_RUNTIME_DIR": str(self.workdir / "runtime"),
            # Not Lambda's: every AWS client of the function talks to moto, and reads no local AWS configuration.
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **function.environment,
        }
        read, write = os.pipe()
        command = [sys.executable, "-S", "-B", str(BOOTSTRAP), str(task), str(opt), str(runtime_dir(self.workdir)),
                   str(write)]
        # What escapes the bootstrap's capture (an interpreter crash) goes to a file, read when it dies.
        with open(self.workdir / f"{function.logical}.out", "ab") as output:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output, stderr=output,
                                             env=environment, cwd=task, pass_fds=(write,), text=True)
        os.close(write)
        self._answers = os.fdopen(read, encoding="utf-8")
        # Lambda writes the function's output with the function's role: its own log group when LoggingConfig
        # names one of the stack's, else Lambda's default group, which it creates on first use.
        logs = self.clients("logs")
        groups = logs.describe_log_groups(logGroupNamePrefix=function.log_group)["logGroups"]
        if function.log_group not in {group["logGroupName"] for group in groups}:
            self._lambda_logs_call("CreateLogGroup", stream=False)
            logs.create_log_group(logGroupName=function.log_group)
        self._lambda_logs_call("CreateLogStream")
        logs.create_log_stream(logGroupName=function.log_group, logStreamName=self._stream)

    def _lambda_logs_call(self, operation: str, stream: bool = True) -> None:
        arn = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{self.function.log_group}"
        if stream:
            arn += f":log-stream:{self._stream}"
        self.calls.append(Call(self.function.logical, f"logs:{operation}", arn, by="Lambda, for the function's logs"))

    def invoke(self, event: dict[str, Any], remaining_seconds: float | None = None) -> Invocation:
        """Invoke the handler with ``event``; ``remaining_seconds``: the context's time left (the timeout by default)."""
        if self._process is None:
            self.start()
        seconds = self.function.timeout if remaining_seconds is None else remaining_seconds
        request = {"event": event, "request_id": str(uuid.uuid4()), "function_arn": self.function.arn,
                   "deadline_ms": int((time.time() + seconds) * 1000)}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        wait = seconds + (START_TIMEOUT_SECONDS if not self.invocations else 5)
        ready, _, _ = select.select([self._answers], [], [], wait)
        line = self._answers.readline() if ready else ""
        if not line:
            self.stop()
            output = (self.workdir / f"{self.function.logical}.out").read_text(errors="replace")[-3000:]
            raise RehearsalFailed(f"{self.function.logical} did not answer within {wait:.0f} s (its process "
                                  f"{'timed out' if not ready else 'died'}):\n{output}")
        answer = json.loads(line)
        calls = [Call(self.function.logical, iam_action(made.service, made.operation), arn)
                 for made in self.recorder.take(self.function.logical)
                 for arn in resource_arns(made.params, self.secrets)]
        invocation = Invocation(self.function.logical, answer.get("result"), answer.get("error"), answer["logs"],
                                calls, answer.get("origins", {}))
        self.calls += calls
        self.invocations.append(invocation)
        if invocation.logs:
            self._lambda_logs_call("PutLogEvents")
            now = int(time.time() * 1000)
            self.clients("logs").put_log_events(
                logGroupName=self.function.log_group, logStreamName=self._stream,
                logEvents=[{"timestamp": now, "message": line} for line in invocation.logs.splitlines() if line])
        return invocation

    def stop(self) -> None:
        if self._process is not None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._answers.close()
            self._process = None


@dataclass
class EventSourceMapping:
    """Lambda's SQS poller, as the stack's mapping configures it (the worker's role makes its calls)."""

    function: str  # logical id of the function it invokes
    queue_arn: str
    queue_url: str
    batch_size: int
    response_types: list[str]
    name: str = ""

    @classmethod
    def of(cls, stack: Stack, function: Function, clients: Any) -> EventSourceMapping:
        mappings = clients("lambda").list_event_source_mappings(FunctionName=function.name)["EventSourceMappings"]
        queues = [mapping for mapping in mappings if mapping["EventSourceArn"].startswith(f"arn:{PARTITION}:sqs:")]
        if len(queues) != 1:
            raise RehearsalFailed(f"{function.logical} has {len(queues)} SQS event source mappings in the stack, expected one")
        mapping = queues[0]
        if mapping.get("State") != "Enabled":
            raise RehearsalFailed(f"{function.logical}'s event source mapping is {mapping.get('State')}, not Enabled")
        # moto would also play the mapping itself, receiving each message as it is sent and invoking the function
        # in Docker: the rehearsal plays it instead, so moto's is switched off once its configuration is read.
        clients("lambda").update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
        queue_name = mapping["EventSourceArn"].rsplit(":", 1)[-1]
        url = clients("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"]
        names = [name for name, kind in stack.types.items() if kind == "AWS::Lambda::EventSourceMapping"
                 and stack.physical[name] == mapping["UUID"]]
        return cls(function=function.logical, queue_arn=mapping["EventSourceArn"], queue_url=url,
                   batch_size=int(mapping.get("BatchSize", 10)),
                   response_types=list(mapping.get("FunctionResponseTypes") or []), name=names[0] if names else "")

    @property
    def reports_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.response_types

    def poll(self, container: Container, remaining_seconds: float | None = None) -> tuple[Invocation | None, list[dict]]:
        """One ReceiveMessage and one invocation with the batch, then Lambda's deletes; (None, []) when empty.

        Returns the invocation and the messages received. Raises :class:`RehearsalFailed` when the function
        reports failures the mapping does not take: Lambda would delete those messages, losing their jobs."""
        sqs = container.clients("sqs")
        lambda_calls = container.calls

        def lambda_call(action: str) -> None:
            lambda_calls.append(Call(self.function, action, self.queue_arn, by=f"Lambda's event source mapping {self.name}"))

        lambda_call("sqs:GetQueueAttributes")  # Lambda reads the queue's attributes to poll it
        sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"])
        lambda_call("sqs:ReceiveMessage")
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=min(self.batch_size, 10),
                                       AttributeNames=["All"], MessageAttributeNames=["All"],
                                       WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return None, []
        event = {"Records": [self._record(message) for message in messages]}
        invocation = container.invoke(event, remaining_seconds)
        if invocation.error:
            return invocation, messages  # a function error: the whole batch comes back, nothing deleted
        ids = {message["MessageId"] for message in messages}
        reported = invocation.result.get("batchItemFailures") if isinstance(invocation.result, dict) else None
        failed = {item.get("itemIdentifier") for item in reported or [] if isinstance(item, dict)}
        if reported and not self.reports_batch_item_failures:
            raise RehearsalFailed(
                f"{self.function} reported {len(failed)} record(s) in batchItemFailures, to be received again, but "
                f"the stack's event source mapping {self.name or self.queue_arn} has FunctionResponseTypes "
                f"{self.response_types or 'unset'}, not ReportBatchItemFailures: Lambda takes the batch as done and "
                "deletes every message, so those jobs would be lost. Keep FunctionResponseTypes: "
                "[ReportBatchItemFailures] on the worker's SQS event (deploy/resources.yaml).")
        if self.reports_batch_item_failures and not failed <= ids:
            return invocation, messages  # a malformed partial response: the whole batch comes back
        done = [message for message in messages if message["MessageId"] not in failed]
        if done:
            lambda_call("sqs:DeleteMessage")
            sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(done)])
        return invocation, messages

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        """An SQS record as Lambda delivers it (AWS Lambda Developer Guide, "Using Lambda with Amazon SQS")."""
        attributes = {}
        for name, value in message.get("MessageAttributes", {}).items():
            attribute = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
            if "StringValue" in value:
                attribute["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
            attributes[name] = attribute
        return {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})), "messageAttributes": attributes,
                "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": self.queue_arn,
                "awsRegion": REGION}


def api_gateway_event(platform: str, body: bytes, headers: dict[str, str], query: dict[str, str],
                      stage: str = "api") -> dict[str, Any]:
    """A REST API proxy event for ``POST /webhooks/{platform}`` (API Gateway Developer Guide, "Input format of
    a Lambda function for proxy integration"). A body that is not UTF-8 arrives base64-encoded."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    resource, path = "/webhooks/{platform}", f"/webhooks/{platform}"
    return {
        "resource": resource, "path": path, "httpMethod": "POST",
        "headers": dict(headers), "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": dict(query) or None,
        "multiValueQueryStringParameters": {key: [value] for key, value in query.items()} or None,
        "pathParameters": {"platform": platform}, "stageVariables": None,
        "requestContext": {"resourcePath": resource, "httpMethod": "POST", "path": f"/{stage}{path}", "stage": stage,
                           "accountId": ACCOUNT, "apiId": "rehearsal", "requestId": str(uuid.uuid4()),
                           "protocol": "HTTP/1.1", "requestTimeEpoch": int(time.time() * 1000),
                           "identity": {"sourceIp": "127.0.0.1", "userAgent": f"{platform}-webhooks"}},
        "body": text, "isBase64Encoded": encoded,
    }


def scheduled_event(rule_arn: str) -> dict[str, Any]:
    """What EventBridge sends a schedule's target."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
            "resources": [rule_arn], "detail": {}}
