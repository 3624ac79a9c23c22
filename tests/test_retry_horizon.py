"""Issue 12, the template's side: deploy/resources.yaml leaves RETRY_HORIZON_HOURS room to end first.

Each retry of a held job is sent as a new message (its receive count and age start again), so the queue's
limits only bound what the worker cannot handle: a message handed back with ChangeMessageVisibility, or not
answered at all. The rules (docs/operations.md, "Deploying to AWS"), checked against the settings' bounds
(chalicelib/infra/settings.py) rather than copies of them:

1. the retry queue keeps a message longer than the longest horizon, one longest backoff and one visibility
   timeout (a message handed back keeps its enqueue time);
2. maxReceiveCount x VisibilityTimeout is at least the longest horizon (a message the worker never answers
   comes back each visibility timeout, and SQS moves it only after the horizon);
3. the dead-letter queue keeps messages 14 days, at least 3 days more than the retry queue (a message moved
   by the redrive policy keeps its enqueue time);
4. the backoff cap fits SQS's message delay (900 s) and is shorter than the visibility timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib.handlers.retry_worker import BUNDLE_SEND_SECONDS, LAMBDA_SAFETY_SECONDS
from chalicelib.infra.settings import Settings
from tests.support.make import make_command

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".chalice" / "config.json"
HOUR, DAY = 3600, 86400
SQS_MAX_RECEIVE_COUNT, SQS_MAX_DELAY, SQS_MAX_RETENTION = 1000, 900, 14 * DAY
CHECK = ROOT / "deploy" / "check_timeouts.py"


def _long_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """A CloudFormation short form as its long form: !Ref X -> {"Ref": "X"}, !GetAtt A.B -> {"Fn::GetAtt": [A, B]}."""
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


def _template() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", _long_form)
    return yaml.load((ROOT / "deploy" / "resources.yaml").read_text(), Loader=Loader)


TEMPLATE = _template()
PARAMETERS = TEMPLATE["Parameters"]
RETRY = TEMPLATE["Resources"]["RetryQueue"]["Properties"]
DEAD_LETTER = TEMPLATE["Resources"]["DeadLetterQueue"]["Properties"]
WORKER_TIMEOUT = json.loads(CONFIG.read_text())["stages"]["dev"]["lambda_functions"]["retry_worker"]["lambda_timeout"]


def _bound(field: str, kind: str) -> float:
    """A numeric constraint (``le``, ``gt``, ...) of a Settings field."""
    found = [getattr(item, kind) for item in Settings.model_fields[field].metadata if hasattr(item, kind)]
    assert len(found) == 1, f"Settings.{field} has no single {kind} bound: {Settings.model_fields[field].metadata}"
    return found[0]


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def _longest_horizon() -> float:
    """Seconds: the most either the setting or the template parameter lets a deployment ask for."""
    return max(_bound("retry_horizon_hours", "le"), PARAMETERS["RetryHorizonHours"]["MaxValue"]) * HOUR


def test_the_horizon_is_a_template_parameter_within_the_settings_bounds():
    parameter = PARAMETERS["RetryHorizonHours"]
    assert parameter["Type"] == "Number"
    assert parameter["Default"] == _default("retry_horizon_hours") == 168
    assert parameter["MinValue"] >= 1 and parameter["MinValue"] > _bound("retry_horizon_hours", "gt")
    # A value the setting refuses would leave every function misconfigured.
    assert parameter["MaxValue"] == _bound("retry_horizon_hours", "le") == 240
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables[Settings.variable("retry_horizon_hours")] == {"Ref": "RetryHorizonHours"}
    # Attempts are not counted any more: nothing in the template or the settings still refers to them.
    assert "max_attempts" not in Settings.model_fields
    assert "MaxReceiveCount" not in PARAMETERS  # fixed at SQS's maximum, see rule 2
    assert "MAX_ATTEMPTS" not in (ROOT / "deploy" / "resources.yaml").read_text()


def test_rule_1_the_retry_queue_outlives_the_longest_horizon_a_backoff_and_a_visibility_timeout():
    needed = _longest_horizon() + _bound("retry_max_seconds", "le") + RETRY["VisibilityTimeout"]
    assert RETRY["MessageRetentionPeriod"] >= needed, (RETRY["MessageRetentionPeriod"], needed)
    assert RETRY["MessageRetentionPeriod"] == 11 * DAY


def test_rule_2_the_redrive_policy_moves_an_unanswered_message_only_after_the_longest_horizon():
    redrive = RETRY["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    receives = redrive["maxReceiveCount"]
    assert isinstance(receives, int) and receives <= SQS_MAX_RECEIVE_COUNT, "a fixed number SQS accepts"
    assert receives * RETRY["VisibilityTimeout"] >= _longest_horizon(), (receives, RETRY["VisibilityTimeout"])


def test_rule_3_dead_letters_are_kept_three_days_after_the_retry_queue_would_have_dropped_them():
    assert DEAD_LETTER["MessageRetentionPeriod"] == SQS_MAX_RETENTION
    assert DEAD_LETTER["MessageRetentionPeriod"] - RETRY["MessageRetentionPeriod"] >= 3 * DAY


def test_rule_4_the_backoff_cap_fits_a_message_delay_and_the_visibility_timeout():
    assert _bound("retry_max_seconds", "le") <= SQS_MAX_DELAY
    assert _default("retry_max_seconds") < RETRY["VisibilityTimeout"]
    assert _default("retry_base_seconds") <= _default("retry_max_seconds")
    # And the visibility timeout is AWS's advice for an SQS event source (make package checks it too).
    assert RETRY["VisibilityTimeout"] >= 6 * WORKER_TIMEOUT


def test_the_worker_event_source_is_capped_by_a_parameter():
    parameter = PARAMETERS["WorkerMaximumConcurrency"]
    assert parameter["Type"] == "Number" and parameter["Default"] == 5
    assert (parameter["MinValue"], parameter["MaxValue"]) == (2, 1000)  # what SQS event sources accept
    source = TEMPLATE["Resources"]["RetryWorker"]["Properties"]["Events"]["RetryWorkerSqsEventSource"]["Properties"]
    assert source["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}


def test_the_local_stack_reads_its_queues_from_the_template():
    from sandbox.stack import template_queues

    policy = template_queues()
    assert (policy.visibility_timeout, policy.max_receive_count, policy.retention, policy.dead_letter_retention) == (
        RETRY["VisibilityTimeout"], RETRY["RedrivePolicy"]["maxReceiveCount"], RETRY["MessageRetentionPeriod"],
        DEAD_LETTER["MessageRetentionPeriod"])


# -- make package refuses a worker timeout shorter than one attempt (deploy/check_timeouts.py) -----------

ONE_ATTEMPT = 2 * _default("worker_call_timeout_seconds") + LAMBDA_SAFETY_SECONDS + BUNDLE_SEND_SECONDS + 1


def _check(tmp_path: Path, worker: dict[str, Any] | None = None,
           visibility: int | None = None) -> subprocess.CompletedProcess:
    """The check on a copy of .chalice/config.json (the worker's block updated) and of the template."""
    config = json.loads(CONFIG.read_text())
    config["stages"]["dev"]["lambda_functions"]["retry_worker"].update(worker or {})
    (tmp_path / "config.json").write_text(json.dumps(config))
    template = (ROOT / "deploy" / "resources.yaml").read_text()
    if visibility is not None:
        stated = f"VisibilityTimeout: {RETRY['VisibilityTimeout']}\n"
        assert template.count(stated) == 1
        template = template.replace(stated, f"VisibilityTimeout: {visibility}\n")
    (tmp_path / "resources.yaml").write_text(template)
    return subprocess.run([sys.executable, str(CHECK), "--stage", "dev", "--config", str(tmp_path / "config.json"),
                           "--template", str(tmp_path / "resources.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_the_timeout_check_passes_the_projects_config(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"retry worker timeout {WORKER_TIMEOUT} s >= {ONE_ATTEMPT:g} s" in result.stdout


@pytest.mark.parametrize("timeout", [ONE_ATTEMPT - 1, 10])
def test_a_worker_timeout_shorter_than_one_attempt_is_refused(tmp_path, timeout):
    result = _check(tmp_path, {"lambda_timeout": timeout})
    assert result.returncode != 0
    assert f"the retry worker's lambda_timeout ({timeout:g} s" in result.stderr
    calls = _default("worker_call_timeout_seconds")
    assert f"one attempt needs: {ONE_ATTEMPT:g} s = 2 HTTP calls x {calls:g} s" in result.stderr


def test_a_call_timeout_set_for_the_worker_in_the_chalice_config_counts(tmp_path):
    result = _check(tmp_path, {"environment_variables": {"WORKER_CALL_TIMEOUT_SECONDS": "60"}})
    assert result.returncode != 0
    assert f"one attempt needs: {2 * 60 + LAMBDA_SAFETY_SECONDS + BUNDLE_SEND_SECONDS + 1:g} s" in result.stderr
    assert "set in the Chalice config" in result.stderr


def test_a_visibility_timeout_under_six_worker_timeouts_is_refused(tmp_path):
    result = _check(tmp_path, visibility=6 * WORKER_TIMEOUT - 1)
    assert result.returncode != 0
    assert f"VisibilityTimeout ({6 * WORKER_TIMEOUT - 1} s" in result.stderr
    assert "one attempt needs" not in result.stderr  # the worker's timeout itself is fine


def test_make_package_runs_the_check_before_chalice_package():
    result = subprocess.run([*make_command("package", "STAGE=dev"), "-n"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    check = next(i for i, line in enumerate(commands) if "deploy/check_timeouts.py --stage dev" in line)
    chalice = next(i for i, line in enumerate(commands) if "chalice package" in line)
    assert check < chalice
