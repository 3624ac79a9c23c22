"""The AWS package (`make package`): chalice package merged with deploy/resources.yaml, then bytecode.

The app is packaged once for the module, by the Makefile target itself, into a temporary directory
(no AWS credentials; chalice downloads the layer's manylinux wheels from PyPI the first time, later
runs reuse .chalice/deployments/). Every test then reads that one output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from chalicelib.connectors import settings_models
from chalicelib.core.names import DEAD_LETTER_QUEUE_NAME, RETRY_QUEUE_NAME
from tests.support.make import environment_without_aws, make_command

# One worker runs this module, so `make package` runs once per test run: it is slow, and two at a time
# in one project would share chalice's layer cache (.chalice/deployments) while it is being written.
pytestmark = pytest.mark.xdist_group("package")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]
WORKER_TIMEOUT = CONFIG["lambda_functions"]["retry_worker"]["lambda_timeout"]
RUNTIME = "python3.11"
PY311_MAGIC = b"\xa7\r\r\n"  # importlib.util.MAGIC_NUMBER of CPython 3.11
UNCHECKED_HASH_FLAGS = 0b01  # PEP 552: hash-based (bit 0), check_source (bit 1) off
LAMBDA_ROOTS = {"deployment.zip": "task", "layer-deployment.zip": "opt"}
LAYER_SITE_PACKAGES = "python/lib/python3.11/site-packages"


def _make_env() -> dict[str, str]:
    """No credentials, no profile, no metadata service: packaging must need none of them."""
    return environment_without_aws(AWS_DEFAULT_REGION="eu-west-3")


@pytest.fixture(scope="session")
def package(tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("aws-package") / "package"
    # cfn-lint runs in test_template_passes_cfn_lint instead, once.
    command = make_command("package", f"PACKAGE_DIR={out}", "CFN_LINT=true")
    result = subprocess.run(command, cwd=ROOT, env=_make_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"make package failed:\n{result.stdout}\n{result.stderr}"
    template = yaml.safe_load((out / "sam.yaml").read_text())
    return SimpleNamespace(dir=out, template=template, resources=template["Resources"], output=result.stdout)


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: resource for name, resource in resources.items() if resource["Type"] == kind}


def _single(resources: dict[str, Any], kind: str, **properties: Any) -> tuple[str, dict[str, Any]]:
    found = [(name, resource) for name, resource in _of_type(resources, kind).items()
             if all(resource["Properties"].get(key) == value for key, value in properties.items())]
    assert len(found) == 1, f"expected one {kind} with {properties}, found {[name for name, _ in found]}"
    return found[0]


def _functions(package) -> dict[str, dict[str, Any]]:
    return _of_type(package.resources, "AWS::Serverless::Function")


def _worker(package) -> tuple[str, dict[str, Any]]:
    consumers = {name: function for name, function in _functions(package).items()
                 if any(event["Type"] == "SQS" for event in function["Properties"].get("Events", {}).values())}
    assert len(consumers) == 1, f"expected one SQS consumer, found {sorted(consumers)}"
    return next(iter(consumers.items()))


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(package) -> list[tuple[str, dict[str, Any]]]:
    """(resource name, statement) for every IAM statement of every role and managed policy."""
    found = []
    for name, resource in package.resources.items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            documents = [properties["PolicyDocument"]]
        else:
            continue
        found += [(name, statement) for document in documents for statement in _listed(document["Statement"])]
    return found


def test_template_passes_cfn_lint(package):
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), str(package.dir / "sam.yaml")], env=_make_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_event_source_reports_batch_item_failures(package):
    name, worker = _worker(package)
    assert worker["Properties"]["Handler"] == "app.retry"
    (source,) = [event["Properties"] for event in worker["Properties"]["Events"].values() if event["Type"] == "SQS"]
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # The merge must replace Chalice's Fn::Sub, not sit next to it (an invalid two-intrinsic mapping).
    assert source["Queue"] == {"Fn::Sub": "${RetryQueue.Arn}"}
    assert package.resources["RetryQueue"]["Properties"]["QueueName"] == RETRY_QUEUE_NAME
    assert source["BatchSize"] == 10


def test_queues_are_encrypted_and_redrive_to_the_dead_letter_queue(package):
    retry = package.resources["RetryQueue"]["Properties"]
    dead_letter = package.resources["DeadLetterQueue"]["Properties"]
    assert dead_letter["QueueName"] == DEAD_LETTER_QUEUE_NAME
    for queue in (retry, dead_letter):
        assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue
    assert dead_letter["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert retry["MessageRetentionPeriod"] == 11 * 24 * 3600  # the arithmetic: tests/test_retry_horizon.py
    assert retry["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": 1000}
    assert "MaxReceiveCount" not in package.template["Parameters"]


def test_retry_visibility_is_at_least_six_times_the_worker_timeout(package):
    _, worker = _worker(package)
    assert worker["Properties"]["Timeout"] == WORKER_TIMEOUT
    visibility = package.resources["RetryQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * WORKER_TIMEOUT
    # make package checked it, with the worker's timeout against one attempt, before packaging.
    assert f"retry worker timeout {WORKER_TIMEOUT} s >= " in package.output
    assert f"retry queue visibility {visibility} s >= 6 x {WORKER_TIMEOUT} s" in package.output


def test_worker_concurrency_and_horizon_are_parameters(package):
    _, worker = _worker(package)
    (source,) = [event["Properties"] for event in worker["Properties"]["Events"].values() if event["Type"] == "SQS"]
    assert source["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}
    assert int(_parameter(package, "WorkerMaximumConcurrency")) == 5
    assert int(_parameter(package, "RetryHorizonHours")) == 168
    variables = package.template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["RETRY_HORIZON_HOURS"] == {"Ref": "RetryHorizonHours"}


def test_identity_table_is_on_demand_with_point_in_time_recovery(package):
    table = package.resources["IdentityTable"]
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["DeletionPolicy"] == "Retain"


def test_dead_letter_depth_alarm_notifies_a_topic(package):
    _, alarm = _single(package.resources, "AWS::CloudWatch::Alarm", MetricName="ApproximateNumberOfMessagesVisible")
    properties = alarm["Properties"]
    assert properties["Namespace"] == "AWS/SQS"
    assert properties["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert properties["ComparisonOperator"] == "GreaterThanThreshold" and properties["Threshold"] == 0
    topic, _ = _single(package.resources, "AWS::SNS::Topic")
    assert {"Ref": topic} in properties["AlarmActions"]
    _, subscription = _single(package.resources, "AWS::SNS::Subscription", Protocol="email")
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def _alarm(package, name: str) -> dict[str, Any]:
    alarm = package.resources[name]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    properties = alarm["Properties"]
    topic, _ = _single(package.resources, "AWS::SNS::Topic")
    assert properties["AlarmActions"] == [{"Ref": topic}] and properties["OKActions"] == [{"Ref": topic}], name
    assert properties["TreatMissingData"] == "notBreaching", name
    return properties


@pytest.mark.parametrize("outcome, name", [("held", "HeldAlarm"), ("misconfigured", "MisconfiguredAlarm"),
                                           ("config_refused", "ConfigRefusedAlarm")])
def test_configuration_failures_alarm_the_first_time(package, outcome, name):
    """The bridge's own metric (chalicelib/infra/metrics.py): one line with that outcome in 5 minutes fires it."""
    from chalicelib.infra import metrics

    properties = _alarm(package, name)
    assert (properties["Namespace"], properties["MetricName"]) == (metrics.NAMESPACE, "Events")
    assert properties["Dimensions"] == [{"Name": "outcome", "Value": outcome}]
    assert ["outcome"] in metrics.documents("zelty", outcome, 1, [])[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert (properties["Statistic"], properties["Period"], properties["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert (properties["ComparisonOperator"], properties["Threshold"]) == ("GreaterThanThreshold", 0)


def test_retry_queue_age_alarm_fires_above_a_parameter_in_minutes(package):
    properties = _alarm(package, "RetryQueueAgeAlarm")
    age, minutes = properties["Metrics"]
    assert age["MetricStat"]["Metric"] == {
        "Namespace": "AWS/SQS", "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["RetryQueue", "QueueName"]}}]}
    assert age["MetricStat"]["Stat"] == "Maximum" and age["ReturnData"] is False
    assert minutes["Expression"].replace(" ", "") == f"{age['Id']}/60" and minutes["ReturnData"] is True
    assert properties["Threshold"] == {"Ref": "OldestMessageAlarmMinutes"}
    assert properties["ComparisonOperator"] == "GreaterThanThreshold"
    parameter = package.template["Parameters"]["OldestMessageAlarmMinutes"]
    assert int(parameter["Default"]) == 60
    # A held event is sent again as a new message at least every RETRY_MAX_SECONDS: never an alarm by itself.
    from chalicelib.infra.settings import Settings

    longest_backoff = max(getattr(item, "le", 0) for item in Settings.model_fields["retry_max_seconds"].metadata)
    assert parameter["MinValue"] * 60 > longest_backoff > 0


def _dashboard(package) -> tuple[dict[str, Any], set[str]]:
    """The dashboard's body and the names it substitutes: "${X}" is read as the string "X", a bare ${X} as 0."""
    _, dashboard = _single(package.resources, "AWS::CloudWatch::Dashboard")
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    readable = re.sub(r"\$\{[^}]+\}", "0", re.sub(r'"\$\{([^}]+)\}"', r'"\1"', body))
    return json.loads(readable), names


def test_dashboard_shows_events_held_queues_dead_letters_and_import_latency(package):
    body, names = _dashboard(package)
    known = set(package.resources) | set(package.template["Parameters"])
    assert all(name.split(".")[0] in known or name.startswith("AWS::") for name in names), names
    widgets = [widget["properties"] for widget in body["widgets"]]
    assert {widget.get("region") for widget in widgets if "metrics" in widget} == {"AWS::Region"}
    metrics = [metric for widget in widgets for metric in widget.get("metrics", [])]
    expressions = [item["expression"] for metric in metrics for item in metric
                   if isinstance(item, dict) and "expression" in item]
    assert "SEARCH('{FullwhereBridge,platform,outcome} MetricName=\"Events\"', 'Sum', 300)" in expressions
    assert any("{FullwhereBridge,platform,outcome,reason}" in e and 'outcome="held"' in e for e in expressions)
    plain = [metric[:4] for metric in metrics if isinstance(metric[0], str)]
    for attribute in ("ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible",
                      "ApproximateAgeOfOldestMessage"):
        assert ["AWS/SQS", attribute, "QueueName", "RetryQueue.QueueName"] in plain, attribute
    assert ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "DeadLetterQueue.QueueName"] in plain
    latency = [metric[-1]["stat"] for metric in metrics
               if metric[:4] == ["FullwhereBridge", "Latency", "outcome", "imported"]]
    assert sorted(latency) == ["p50", "p99"]
    [alarms] = [widget["alarms"] for widget in widgets if "alarms" in widget]
    assert sorted(alarms) == sorted(f"{name}.Arn" for name in _of_type(package.resources, "AWS::CloudWatch::Alarm"))
    assert "${Dashboard}" in package.template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]


def test_every_function_gets_the_queues_table_and_secret(package):
    expected = {
        "RETRY_QUEUE_URL": {"Ref": "RetryQueue"},
        "DEAD_LETTER_QUEUE_URL": {"Ref": "DeadLetterQueue"},
        "IDENTITY_TABLE": {"Ref": "IdentityTable"},
        "SECRETS_ID": {"Ref": "SecretsId"},
    }
    # SAM applies Globals to every AWS::Serverless::Function; a function's own variable would win.
    variables = package.template["Globals"]["Function"]["Environment"]["Variables"]
    assert {key: variables.get(key) for key in expected} == expected
    assert set(variables) >= {"TENANTS_SECRET_ID", "SOURCES_SECRET_ID"}
    assert len(_functions(package)) >= 3
    for name, function in _functions(package).items():
        own = function["Properties"].get("Environment", {}).get("Variables", {})
        assert not set(own) & set(variables), f"{name} overrides {sorted(set(own) & set(variables))}"
    # No secret in the template: the secret settings come from the Secrets Manager secret only.
    secret_settings = {model.variable(name) for model in settings_models()
                       for name, field in model.model_fields.items() if field.repr is False}
    assert "FULLWHERE_API_SECRET" in secret_settings
    for name, function in _functions(package).items():
        own = function["Properties"].get("Environment", {}).get("Variables", {})
        assert not (set(own) | set(variables)) & secret_settings, name


def test_iam_is_least_privilege(package):
    statements = _statements(package)
    assert statements
    for name, statement in statements:
        actions = _listed(statement["Action"])
        resources = _listed(statement["Resource"])
        assert "*" not in resources, f"{name}: {statement}"
        if any(action.startswith(("sqs:", "dynamodb:")) for action in actions):
            assert not any(isinstance(resource, str) and "*" in resource for resource in resources), f"{name}: {statement}"
            assert not any(action.endswith("*") for action in actions), f"{name}: {statement}"
        if any(action.startswith("sqs:") for action in actions):
            assert all(resource in (RETRY_QUEUE, DEAD_LETTER_QUEUE) for resource in resources), f"{name}: {statement}"
        if any(action.startswith("dynamodb:") for action in actions):
            assert set(actions) <= {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                    "dynamodb:BatchGetItem"}  # the sweeps read cursors and fingerprints in bulk
            assert resources == [TABLE]
        if "secretsmanager:GetSecretValue" in actions:
            assert "${SecretsId}" in json.dumps(resources)


def _role(package, function: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role_name, package.resources[role_name]["Properties"]


def _grants(package, role: dict[str, Any]) -> set[tuple[str, str]]:
    """(action, resource) of every statement of the role: its managed policies' and its own."""
    documents = [package.resources[arn["Ref"]]["Properties"]["PolicyDocument"] for arn in role.get("ManagedPolicyArns", [])]
    documents += [policy["PolicyDocument"] for policy in role.get("Policies", [])]
    grants = set()
    for document in documents:
        for statement in _listed(document["Statement"]):
            assert statement["Effect"] == "Allow" and set(statement) <= {"Sid", "Effect", "Action", "Resource"}, statement
            grants |= {(action, json.dumps(resource, sort_keys=True)) for action in _listed(statement["Action"])
                       for resource in _listed(statement["Resource"])}
    return grants


RETRY_QUEUE = {"Fn::GetAtt": ["RetryQueue", "Arn"]}
DEAD_LETTER_QUEUE = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
TABLE = {"Fn::GetAtt": ["IdentityTable", "Arn"]}


def _on(resource: dict[str, Any], *actions: str) -> set[tuple[str, str]]:
    return {(action, json.dumps(resource, sort_keys=True)) for action in actions}


# What each handler's code reaches (besides its own log group and the settings secrets), role by role. Every
# function runs the import pipeline: it queues or dead-letters a failure, and claims a guest without email or
# phone in the ledger (UpdateItem; GetItem when the claim is refused); make rehearse checks each is used.
PIPELINE = (_on(RETRY_QUEUE, "sqs:SendMessage") | _on(DEAD_LETTER_QUEUE, "sqs:SendMessage")
            | _on(TABLE, "dynamodb:GetItem", "dynamodb:UpdateItem"))
GRANTS_BY_HANDLER = {
    "app.app": PIPELINE | _on(TABLE, "dynamodb:PutItem"),  # what it sent, for the sweeps
    "app.retry": PIPELINE | _on(TABLE, "dynamodb:PutItem") | _on(
        RETRY_QUEUE, "sqs:ChangeMessageVisibility",  # its fallback backoff
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),  # its event source mapping
    "app.oracle_pull": PIPELINE,  # OPERA Cloud is never swept: no sent record
    "app.sweeps": PIPELINE | _on(TABLE, "dynamodb:PutItem", "dynamodb:BatchGetItem"),
}


def test_each_role_grants_exactly_what_its_handler_uses(package):
    """Role by role, not a policy every function shares: what one handler needs is not another's to use."""
    functions = _functions(package)
    assert sorted(function["Properties"]["Handler"] for function in functions.values()) == sorted(GRANTS_BY_HANDLER)
    roles = set()
    for name, function in functions.items():
        role_name, role = _role(package, function)
        roles.add(role_name)
        grants = _grants(package, role)
        group = {"Fn::GetAtt": [function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]}
        logs = {grant for grant in grants if grant[0].startswith("logs:")}
        assert logs == _on(group, "logs:CreateLogStream", "logs:PutLogEvents"), f"{role_name}: {logs}"
        secrets = {grant for grant in grants if grant[0] == "secretsmanager:GetSecretValue"}
        assert secrets and all("secret:${" in resource for _, resource in secrets), f"{role_name}: {secrets}"
        rest = grants - logs - secrets
        expected = GRANTS_BY_HANDLER[function["Properties"]["Handler"]]
        assert rest == expected, (f"{role_name} ({name}): grants {sorted(rest - expected)} beyond what its handler uses, "
                                  f"lacks {sorted(expected - rest)}")
        # Chalice's own (wildcard) policy is gone: every role holds the shared pipeline's and its own.
        assert role["ManagedPolicyArns"] == [{"Ref": "PipelinePolicy"}], f"{role_name}: add it to deploy/resources.yaml"
    assert len(roles) == len(functions), "each function has a role of its own"


def _parameter(package, name: str, kind: str = "Number") -> Any:
    parameter = package.template["Parameters"][name]
    assert parameter["Type"] == kind, parameter
    return parameter["Default"]


def test_every_function_logs_to_its_own_group_kept_log_retention_days(package):
    """Lambda's own /aws/lambda/<name> group keeps lines forever: each function has a group of the stack."""
    assert int(_parameter(package, "LogRetentionDays")) == 30
    groups = _of_type(package.resources, "AWS::Logs::LogGroup")
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    used = {}
    for name, function in _functions(package).items():
        config = function["Properties"].get("LoggingConfig", {})
        assert set(config) == {"LogGroup"}, f"{name} logs to Lambda's default group: give it one in deploy/resources.yaml"
        used[name] = config["LogGroup"]["Ref"]
    assert sorted(used.values()) == sorted(groups), f"one group per function: {used}"


def test_functions_may_write_only_to_their_log_groups(package):
    """Each role writes to its own function's group only: a function cannot fill another's log with lines."""
    logging_statements = [(name, statement) for name, statement in _statements(package)
                          if any(action.startswith("logs:") for action in _listed(statement["Action"]))]
    assert len(logging_statements) == len(_functions(package))
    own_groups = {_role(package, function)[0]: {"Fn::GetAtt": [function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"],
                                                               "Arn"]}
                  for function in _functions(package).values()}
    for name, statement in logging_statements:
        assert sorted(_listed(statement["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"], name
        assert _listed(statement["Resource"]) == [own_groups[name]], f"{name}: {statement['Resource']}"
    assert "/aws/lambda/*" not in json.dumps(package.template)


def test_api_stage_is_throttled_by_parameters(package):
    assert int(_parameter(package, "ApiThrottlingRateLimit")) == 50
    assert int(_parameter(package, "ApiThrottlingBurstLimit")) == 100
    [(name, api)] = _of_type(package.resources, "AWS::Serverless::Api").items()
    assert api["Properties"]["MethodSettings"] == [{
        "ResourcePath": "/*", "HttpMethod": "*",
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }], name


def test_queues_cap_messages_at_256_kib(package):
    """Stated, not SQS's default (1 MiB since 2025): the code keeps every job under 256 KiB."""
    for queue in ("RetryQueue", "DeadLetterQueue"):
        assert package.resources[queue]["Properties"]["MaximumMessageSize"] == 262144, queue


def _zip(package, name: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(package.dir / name)


def _assert_unchecked_hash_311(archive: zipfile.ZipFile, entry: str) -> None:
    header = archive.read(entry)[:8]
    assert header[:4] == PY311_MAGIC, f"{entry} is not Python 3.11 bytecode"
    assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH_FLAGS, f"{entry} is not unchecked-hash"


def test_function_code_ships_its_sources_with_unchecked_hash_bytecode(package):
    """Our own code keeps its sources (tracebacks quote the line), each with its __pycache__ .pyc."""
    assert {function["Properties"]["Runtime"] for function in _functions(package).values()} == {RUNTIME}
    with _zip(package, "deployment.zip") as archive:
        names = set(archive.namelist())
        sources = [entry for entry in names if entry.endswith(".py")]
        bytecode = [entry for entry in names if entry.endswith(".pyc")]
        assert "app.py" in sources and any(entry.startswith("chalicelib/") for entry in sources)
        for source in sources:
            path = PurePosixPath(source)
            cached = str(path.parent / "__pycache__" / f"{path.stem}.cpython-311.pyc").removeprefix("./")
            assert cached in names, f"{source} has no {cached}"
        for entry in bytecode:
            assert entry.endswith(".cpython-311.pyc") and "/__pycache__/" in f"/{entry}", entry
            _assert_unchecked_hash_311(archive, entry)


def test_layer_ships_sourceless_unchecked_hash_bytecode_and_no_build_leftovers(package):
    """The dependencies are bytecode only (compileall -b layout), without what the runtime never reads."""
    with _zip(package, "layer-deployment.zip") as archive:
        names = [entry.removeprefix(LAYER_SITE_PACKAGES + "/") for entry in archive.namelist()]
        assert all(entry.startswith(LAYER_SITE_PACKAGES + "/") for entry in archive.namelist())
        assert not [entry for entry in names if entry.endswith(".py")], "a source was left beside its bytecode"
        assert not [entry for entry in names if "__pycache__" in entry]
        bytecode = [entry for entry in names if entry.endswith(".pyc")]
        assert {"pydantic/main.pyc", "httpx/__init__.pyc", "yaml/__init__.pyc", "phonenumbers/__init__.pyc"} <= set(bytecode)
        for entry in bytecode:
            _assert_unchecked_hash_311(archive, f"{LAYER_SITE_PACKAGES}/{entry}")
        left_out = [entry for entry in names if entry.endswith((".pyi", "py.typed", ".dist-info/RECORD"))
                    or (entry.startswith("yaml/_yaml.") and entry.endswith(".so")) or ".data/scripts/" in entry]
        assert not left_out, left_out
        # Licences and the compiled extensions the bridge needs stay.
        assert any(entry.startswith("pydantic-") and "LICENSE" in entry for entry in names)
        assert any(entry.startswith("pydantic_core/_pydantic_core.") and entry.endswith(".so") for entry in names)


@pytest.mark.parametrize("name", sorted(LAMBDA_ROOTS))
def test_zips_leave_boto3_to_the_runtime(package, name):
    with _zip(package, name) as archive:
        top_level = {PurePosixPath(entry.removeprefix(LAYER_SITE_PACKAGES + "/")).parts[0] for entry in archive.namelist()}
    assert not top_level & {"boto3", "botocore", "s3transfer"}
    assert not any(part.startswith(("boto3-", "botocore-")) for part in top_level)


IN_THE_PACKAGE = """
import sys, traceback
import app
assert "boto3" not in sys.modules
from chalicelib.connectors import builtin_names, get_connector  # each connector is imported on first use
assert all(get_connector(name) for name in builtin_names())
import yaml  # PyYAML without its libyaml binding: the pure-Python loader the bridge uses
assert not yaml.__with_libyaml__ and yaml.safe_load("a: [1, 2]") == {"a": [1, 2]}
import httpx
try:
    httpx.URL("http://[::1")
except httpx.InvalidURL:
    print(traceback.format_exc())
"""


def test_app_imports_from_the_package_alone_and_from_bytecode(package, tmp_path):
    """As on Lambda: the code in /var/task, the layer in /opt, nothing else but the standard library."""
    for name, root in LAMBDA_ROOTS.items():
        with _zip(package, name) as archive:
            archive.extractall(tmp_path / root)
    task, site = tmp_path / "task", tmp_path / "opt" / LAYER_SITE_PACKAGES
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{task}{os.pathsep}{site}", "PYTHONDONTWRITEBYTECODE": "1"}
    # -S: no site-packages (so not the test's virtualenv); -v: says where each module's code came from.
    result = subprocess.run([sys.executable, "-S", "-v", "-c", IN_THE_PACKAGE],
                            cwd=task, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [line.split("code object from ", 1)[1].strip("'") for line in result.stderr.splitlines()
              if line.startswith("# code object from ") and str(tmp_path) in line]
    assert any("/chalicelib/" in path for path in loaded) and any("/pydantic/" in path for path in loaded)
    from_source = [path for path in loaded if not path.endswith(".pyc")]
    assert not from_source, f"compiled at import instead of loaded from .pyc: {from_source[:5]}"
    # A traceback through a sourceless dependency still names the file Lambda has, and the line.
    assert re.search(r'File "/opt/python/lib/python3\.11/site-packages/httpx/_urlparse\.py", line \d+', result.stdout), result.stdout


def test_deploy_says_what_is_missing_without_the_aws_cli():
    result = subprocess.run(["make", "--no-print-directory", "deploy", "AWS=fullwhere-no-such-aws-cli", "S3_BUCKET=b"],
                            cwd=ROOT, env=_make_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "the AWS CLI ('fullwhere-no-such-aws-cli') is not installed" in result.stderr
    assert "chalice package" not in result.stdout  # it stops before packaging


def _precompile_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("precompile", ROOT / "deploy" / "precompile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_corrupt_copy_of_a_zip_is_copied_again_from_chalices_cache(tmp_path):
    precompile = _precompile_module()
    cache, package = tmp_path / "deployments", tmp_path / "package"
    cache.mkdir()
    package.mkdir()
    built = cache / "managed-layer-0123-python3.11.zip"
    with zipfile.ZipFile(built, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(20):
            archive.writestr(f"python/module{n}.py", os.urandom(4000).hex())
    (cache / "appcode-4567-python3.11.zip").write_bytes(b"PK another size")
    copy = package / "layer-deployment.zip"
    data = bytearray(built.read_bytes())
    data[len(data) // 3: len(data) // 2] = bytes(len(data) // 2 - len(data) // 3)  # zeros, as seen
    copy.write_bytes(bytes(data))

    assert not precompile.intact(copy)
    assert precompile.restore_from_cache(copy, cache) == built
    assert precompile.intact(copy) and copy.read_bytes() == built.read_bytes()
    built.unlink()
    copy.write_bytes(bytes(data))
    # No intact zip of that size: nothing to copy, after waiting for the cache to settle.
    assert precompile.restore_from_cache(copy, cache, attempts=2, wait=0.01) is None
