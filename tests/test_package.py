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
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_DEFAULT_REGION="eu-west-3", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def _venv_args() -> list[str]:
    # Use the virtualenv running the tests, and never rebuild it from here (-o: consider it up to date).
    if sys.prefix == sys.base_prefix:
        return []
    return [f"VENV={sys.prefix}", "-o", f"{sys.prefix}/.installed"]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("aws-package") / "package"
    # cfn-lint runs in test_template_passes_cfn_lint instead, once.
    command = ["make", "--no-print-directory", *_venv_args(), "package", f"PACKAGE_DIR={out}", "CFN_LINT=true"]
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
    assert retry["MessageRetentionPeriod"] < dead_letter["MessageRetentionPeriod"]
    assert retry["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": {"Ref": "MaxReceiveCount"}}
    parameter = package.template["Parameters"]["MaxReceiveCount"]
    assert parameter["Type"] == "Number" and int(parameter["Default"]) == 8


def test_retry_visibility_is_at_least_six_times_the_worker_timeout(package):
    _, worker = _worker(package)
    assert worker["Properties"]["Timeout"] == WORKER_TIMEOUT
    assert package.resources["RetryQueue"]["Properties"]["VisibilityTimeout"] >= 6 * WORKER_TIMEOUT


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
            assert all(resource in ({"Fn::GetAtt": ["RetryQueue", "Arn"]}, {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})
                       for resource in resources), f"{name}: {statement}"
        if any(action.startswith("dynamodb:") for action in actions):
            assert set(actions) <= {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
            assert resources == [{"Fn::GetAtt": ["IdentityTable", "Arn"]}]
        if "secretsmanager:GetSecretValue" in actions:
            assert "${SecretsId}" in json.dumps(resources)

    # Chalice's own (wildcard) policy is gone from every function's role: each has the bridge's.
    worker_name, _ = _worker(package)
    for name, function in _functions(package).items():
        role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
        role = package.resources[role_name]["Properties"]
        assert role["ManagedPolicyArns"] == [{"Ref": "FunctionPolicy"}], f"{role_name}: add it to deploy/resources.yaml"
        inline = [statement for policy in role.get("Policies", []) for statement in _listed(policy["PolicyDocument"]["Statement"])]
        consumes = any("sqs:ReceiveMessage" in _listed(statement["Action"]) for statement in inline)
        assert consumes == (name == worker_name), f"{role_name} may consume the retry queue: {inline}"
        assert not any("logs" in json.dumps(statement) for statement in inline), f"{role_name}: {inline}"



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
    groups = [{"Fn::GetAtt": [name, "Arn"]} for name in _of_type(package.resources, "AWS::Logs::LogGroup")]
    logging_statements = [(name, statement) for name, statement in _statements(package)
                          if any(action.startswith("logs:") for action in _listed(statement["Action"]))]
    assert logging_statements
    for name, statement in logging_statements:
        assert sorted(_listed(statement["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"], name
        resources = _listed(statement["Resource"])
        assert sorted(map(json.dumps, resources)) == sorted(map(json.dumps, groups)), f"{name}: {resources}"
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
