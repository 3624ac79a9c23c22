"""``make rehearse``: the packaged stack created on moto's CloudFormation and run from its own zips.

``make rehearse`` runs once (it runs ``make package`` into a temporary directory: ~6 s with chalice's layer
cache), then mutated copies of that package's template are rehearsed: each must fail with a message that
names what a real deployment would get wrong. The package is built here rather than shared with
tests/test_package.py; the two share one xdist worker (and so chalice's cache, never written by two builds
at once). Both fixtures are session-scoped: xdist may interleave the group's modules, which tears a module
fixture down and builds it again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from tests.support.make import environment_without_aws, make_command

pytestmark = pytest.mark.xdist_group("package")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("rehearsal") / "package"
    # cfn-lint is tests/test_package.py's business.
    command = make_command("rehearse", f"PACKAGE_DIR={out}", "CFN_LINT=true")
    result = subprocess.run(command, cwd=ROOT, env=environment_without_aws(), capture_output=True, text=True, timeout=600,
                            check=False)
    assert (out / "sam.yaml").is_file(), f"make package failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return SimpleNamespace(dir=out, result=result, template=yaml.safe_load((out / "sam.yaml").read_text()))


def _rehearse(rehearsal, tmp_path: Path, template: dict[str, Any]) -> subprocess.CompletedProcess:
    mutated = tmp_path / "sam.yaml"
    mutated.write_text(yaml.safe_dump(template))
    return subprocess.run([sys.executable, "-m", "deploy.rehearse", "--package-dir", str(rehearsal.dir),
                           "--template", str(mutated)], cwd=ROOT, env=environment_without_aws(), capture_output=True, text=True,
                          timeout=300, check=False)


def _failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, f"the rehearsal did not fail:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "REHEARSAL FAILED: " in result.stderr, result.stderr[-3000:]
    return result.stderr


def _copy(rehearsal) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(rehearsal.template))


def _worker_sqs_event(template: dict[str, Any]) -> dict[str, Any]:
    [event] = [event["Properties"] for resource in template["Resources"].values()
               if resource["Type"] == "AWS::Serverless::Function"
               for event in resource["Properties"].get("Events", {}).values() if event["Type"] == "SQS"]
    return event


def test_make_rehearse_creates_the_stack_and_runs_the_packaged_handlers(rehearsal):
    result = rehearsal.result
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    out = result.stdout
    assert "stack fullwhere-bridge: CREATE_COMPLETE" in out
    # What moto cannot create is named, with the reason; what refers to it goes with it.
    for line in ("AWS::CloudWatch::Alarm             DeadLetterAlarm", "AWS::ApiGateway::RestApi           RestAPI",
                 "APIHandlerInvokePermission             refers to RestAPI, left out",
                 "EndpointURL                            refers to RestAPI, left out"):
        assert line in out, line
    assert "RetryQueueUrl        https://sqs.eu-west-3.amazonaws.com/123456789012/fullwhere-bridge-retry" in out
    for shown in ("a signed Deliveroo webhook (API Gateway proxy event): 200, guest imported",
                  "not imported again (the ledger knows the guest)",
                  "both jobs queued on the stack's retry queue",
                  "dead-lettered on the stack's dead-letter queue (kind permanent",
                  "handed both records back (ChangeMessageVisibility, batchItemFailures)",
                  "sent each job again as a new message (SendMessage, its backoff as the delay), and the mapping "
                  "deleted the old ones",
                  "imported both queued guests (ubereatsId eater-1, deliverooId loyalty:LOY-3), the mapping deleted",
                  "not imported again (the ledger knows the guests)",
                  "the worker kept it verbatim in the dead-letter queue (kind poisoned)",
                  "the OPERA Cloud pull (OraclePull), invoked as its rule",
                  "queued one guest on the stack's retry queue and dead-lettered the other",
                  "sent the 3 it had no record of (2 webhooks never came), Fullwhere answering the first 503 and the "
                  "second 400: one queued, one dead-lettered, one recovered",
                  "the identity ledger writes to the stack's table"):
        assert shown in out, shown
    # The handlers ran from the zips: our code from deployment.zip, dependencies from the layer, boto3 from the runtime.
    [origins] = [line for line in out.splitlines() if line.startswith("the code that ran: ")]
    assert "deployment.zip: app, chalice, chalicelib;" in origins
    assert "layer: " in origins and "pydantic" in origins.split("layer: ")[1].split(";")[0]
    assert "runtime: boto3, botocore" in origins
    assert "least privilege, role by role: every AWS call made for a function is allowed by its own role" in out
    # Each role used every grant it holds: the worker alone hands records back and is polled for.
    roles = {line.split(" (role ")[0].strip(): line for line in out.splitlines() if line.startswith("  ")
             and " (role " in line and ": its code: " in line}
    assert set(roles) == {"APIHandler", "RetryWorker", "OraclePull", "Sweeps"}, roles
    assert "sqs:ChangeMessageVisibility on RetryQueue" in roles["RetryWorker"]
    assert "sqs:DeleteMessage, sqs:GetQueueAttributes, sqs:ReceiveMessage on RetryQueue" in roles["RetryWorker"]
    for role in ("APIHandler", "OraclePull", "Sweeps"):
        assert "ChangeMessageVisibility" not in roles[role] and "ReceiveMessage" not in roles[role], roles[role]
    for role in roles:
        assert "sqs:SendMessage on DeadLetterQueue, RetryQueue" in roles[role], roles[role]
    assert "dynamodb:BatchGetItem" in roles["Sweeps"] and "PutItem" not in roles["OraclePull"]
    # What is granted and not exercised is listed, each with its reason.
    [listed] = [line for line in out.splitlines() if line.startswith("needed by the code, granted, but not exercised")]
    unexercised = out.split(listed, 1)[1].split("\nlogs: ", 1)[0].strip().splitlines()
    assert [line.split(": ")[0].strip() for line in unexercised] == [
        "OraclePull (role OraclePullRole)", "Sweeps (role SweepsRole)"], unexercised
    assert all("dynamodb:GetItem on IdentityTable: the " in line for line in unexercised), unexercised
    assert out.rstrip().splitlines()[-1].startswith("rehearsal passed in ")


def test_a_template_that_drops_an_environment_variable_fails_clearly(rehearsal, tmp_path):
    template = _copy(rehearsal)
    del template["Globals"]["Function"]["Environment"]["Variables"]["IDENTITY_TABLE"]
    message = _failure(_rehearse(rehearsal, tmp_path, template))
    # Without the table the webhook still answers 200: the guest (no email, no real phone) is skipped.
    assert "a signed Deliveroo webhook: Fullwhere has 0 customer(s) with deliverooId loyalty:LOY-1" in message
    assert "skipped (no_contact_and_no_identity_table)" in message  # what the function logged
    assert "the environment the stack gives APIHandler, " in message
    assert "has no IDENTITY_TABLE (the identity ledger's table): the code needs it" in message


def test_a_mapping_without_report_batch_item_failures_fails_clearly(rehearsal, tmp_path):
    template = _copy(rehearsal)
    del _worker_sqs_event(template)["FunctionResponseTypes"]
    message = _failure(_rehearse(rehearsal, tmp_path, template))
    assert "RetryWorker reported 2 record(s) in batchItemFailures" in message
    assert "has FunctionResponseTypes unset, not ReportBatchItemFailures" in message
    assert "so those jobs would be lost" in message


def _role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    [policy] = template["Resources"][role]["Properties"]["Policies"]
    return policy["PolicyDocument"]["Statement"]


def _pipeline_statement(template: dict[str, Any], action: str) -> dict[str, Any]:
    statements = template["Resources"]["PipelinePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [found] = [statement for statement in statements if action in statement["Action"]]
    return found


def test_a_role_losing_a_permission_its_handler_uses_fails_clearly(rehearsal, tmp_path):
    template = _copy(rehearsal)
    # The worker's own backoff statement, and the ledger read every function's pipeline makes.
    statements = _role_statements(template, "RetryWorkerRole")
    statements.remove(next(statement for statement in statements if statement["Sid"] == "RetryBackoff"))
    _pipeline_statement(template, "dynamodb:GetItem")["Action"].remove("dynamodb:GetItem")
    message = _failure(_rehearse(rehearsal, tmp_path, template))
    assert "a real deployment answers AccessDenied" in message
    queue = "arn:aws:sqs:eu-west-3:123456789012:fullwhere-bridge-retry"
    assert f"RetryWorker (role RetryWorkerRole) called sqs:ChangeMessageVisibility on {queue} [code]" in message
    for function, role in (("APIHandler", "ApiHandlerRole"), ("RetryWorker", "RetryWorkerRole")):
        assert f"{function} (role {role}) called dynamodb:GetItem on arn:aws:dynamodb:eu-west-3:123456789012:table/" \
            in message
    # Where the rehearsal does not exercise the read, the list of what it does not exercise still checks the grant.
    for function, role in (("OraclePull", "OraclePullRole"), ("Sweeps", "SweepsRole")):
        assert f"{function} (role {role}) needs dynamodb:GetItem on arn:aws:dynamodb:" in message
    assert "which its role does not grant (a real deployment answers AccessDenied there)" in message


def test_an_excess_grant_on_one_role_fails_clearly_even_when_another_role_uses_it(rehearsal, tmp_path):
    template = _copy(rehearsal)
    table, queue = {"Fn::GetAtt": ["IdentityTable", "Arn"]}, {"Fn::GetAtt": ["RetryQueue", "Arn"]}
    # The sweeps record what they sent, the worker hands records back: the pull and the API do neither.
    _role_statements(template, "OraclePullRole").append(
        {"Sid": "Extra", "Effect": "Allow", "Action": ["dynamodb:PutItem"], "Resource": [table]})
    _role_statements(template, "ApiHandlerRole").append(
        {"Sid": "Extra", "Effect": "Allow", "Action": ["sqs:ChangeMessageVisibility"], "Resource": [queue]})
    # And an action no function uses, in the policy every role shares: each role is told.
    _pipeline_statement(template, "sqs:SendMessage")["Action"].append("sqs:PurgeQueue")
    message = _failure(_rehearse(rehearsal, tmp_path, template))
    assert "permissions a role grants that its own function never used in the rehearsal" in message
    assert ("OraclePull (role OraclePullRole): OraclePullRole/OraclePull (Sid Extra) allows dynamodb:PutItem on "
            "arn:aws:dynamodb:eu-west-3:123456789012:table/") in message
    assert ("APIHandler (role ApiHandlerRole): ApiHandlerRole/APIHandler (Sid Extra) allows sqs:ChangeMessageVisibility "
            "on arn:aws:sqs:eu-west-3:123456789012:fullwhere-bridge-retry") in message
    for function, role in (("APIHandler", "ApiHandlerRole"), ("RetryWorker", "RetryWorkerRole"),
                           ("OraclePull", "OraclePullRole"), ("Sweeps", "SweepsRole")):
        assert (f"{function} (role {role}): PipelinePolicy (Sid SendToQueues) allows sqs:PurgeQueue on "
                "arn:aws:sqs:eu-west-3:123456789012:fullwhere-bridge-dead-letter") in message
    # Only those: the roles that use PutItem and ChangeMessageVisibility are not named for them.
    idle = message.split("never used in the rehearsal", 1)[1].split("\nthe grants listed", 1)[0]
    assert idle.count("PutItem") == 1 and idle.count("ChangeMessageVisibility") == 1, idle
    assert "AccessDenied" not in message


# -- the pieces, without a stack ------------------------------------------------------------------

def test_iam_wildcards_and_deny_are_evaluated_as_iam_does():
    from deploy.rehearse.iam import Call, Idle, Statement, denied, unused

    secret = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:fullwhere-bridge-??????"
    allow = Statement("P", "Settings", "Allow", ("secretsmanager:GetSecretValue",), (secret,))
    statements = {"F": [allow]}
    read = Call("F", "secretsmanager:GetSecretValue", secret.replace("??????", "AbC123"))
    other = Call("F", "secretsmanager:GetSecretValue", secret.replace("-??????", "-extra-AbC123"))
    assert denied([read, other], statements) == [other]
    assert not unused([read], statements) and unused([], statements) == [Idle("F", ("F",), allow, allow.actions[0], secret)]
    # Actions match without regard to case; a Deny wins.
    assert not denied([Call("F", "SecretsManager:getSecretValue", read.resource)], statements)
    statements["F"].append(Statement("P", "No", "Deny", ("secretsmanager:*",), ("*",)))
    assert denied([read], statements) == [read]


def test_a_shared_policy_is_judged_role_by_role():
    """What one function uses does not excuse the grant in another function's role (the issue with one policy
    for every function: the pull could send to the queues because the API did)."""
    from deploy.rehearse.iam import Call, Statement, unused

    queue = "arn:aws:sqs:eu-west-3:123456789012:fullwhere-bridge-retry"
    shared = Statement("PipelinePolicy", "SendToQueues", "Allow", ("sqs:SendMessage",), (queue,))
    statements = {"API": [shared], "Pull": [shared]}
    calls = [Call("API", "sqs:SendMessage", queue)]
    assert [(idle.role, idle.action) for idle in unused(calls, statements, {"API": "ApiRole", "Pull": "PullRole"})] \
        == [("PullRole", "sqs:SendMessage")]
    # Two functions holding one role are judged on their calls together.
    assert not unused(calls, statements, {"API": "OneRole", "Pull": "OneRole"})


def test_a_grant_listed_as_not_exercised_must_be_granted_and_unused():
    from deploy.rehearse.iam import Call, Statement, Unexercised, excuse, unused

    table = "arn:aws:dynamodb:eu-west-3:123456789012:table/ledger"
    ledger = Statement("PipelinePolicy", "IdentityLedger", "Allow", ("dynamodb:GetItem", "dynamodb:UpdateItem"), (table,))
    wide = Statement("Pull/Own", "Wide", "Allow", ("dynamodb:Get*",), (table,))
    statements, roles, arns = {"Pull": [ledger, wide]}, {"Pull": "PullRole"}, {"IdentityTable": table}
    calls = [Call("Pull", "dynamodb:UpdateItem", table)]
    item = Unexercised("Pull", "dynamodb:GetItem", "IdentityTable", "not in this scenario")
    idle = unused(calls, statements, roles)
    left, excused, wrong = excuse(idle, [item], arns, calls, statements, roles)
    # It excuses exactly its action on its resource, never a wildcard that covers it.
    assert excused == [(item, table)] and not wrong
    assert [(entry.statement.sid, entry.action) for entry in left] == [("Wide", "dynamodb:Get*")]
    # Not granted: the code needs it, so it fails.
    statements = {"Pull": [Statement("PipelinePolicy", "IdentityLedger", "Allow", ("dynamodb:UpdateItem",), (table,))]}
    _, excused, wrong = excuse([], [item], arns, calls, statements, roles)
    assert not excused and wrong == [f"Pull (role PullRole) needs dynamodb:GetItem on {table}, which its role does not "
                                     "grant (a real deployment answers AccessDenied there): not in this scenario"]
    # Used after all: it is exercised, so the item must go.
    calls.append(Call("Pull", "dynamodb:GetItem", table))
    _, excused, wrong = excuse([], [item], arns, calls, {"Pull": [ledger]}, roles)
    assert not excused and "did use dynamodb:GetItem" in wrong[0] and "no longer listed as unexercised" in wrong[0]
    # A secret is named by the pattern its statement uses; a call reading it counts as a use.
    pattern = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:sources-??????"
    settings = Statement("PipelinePolicy", "Settings", "Allow", ("secretsmanager:GetSecretValue",), (pattern,))
    secret = Unexercised("Pull", "secretsmanager:GetSecretValue", "SourcesSecretId", "no tenants document")
    read = Call("Pull", "secretsmanager:GetSecretValue", pattern.replace("??????", "AbC123"))
    idle = unused([], {"Pull": [settings]}, roles)
    assert excuse(idle, [secret], {"SourcesSecretId": pattern}, [], {"Pull": [settings]}, roles)[:2] == \
        ([], [(secret, pattern)])
    assert excuse([], [secret], {"SourcesSecretId": pattern}, [read], {"Pull": [settings]}, roles)[2]


def test_what_refers_to_a_left_out_resource_is_left_out_with_it():
    from deploy.rehearse.stack import leave_out

    template = {"Resources": {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {}},
        "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}},
        "Permission": {"Type": "AWS::Lambda::Permission", "Properties": {"SourceArn": {"Fn::Sub": "x/${Api}/*"}}},
        "Board": {"Type": "AWS::CloudWatch::Dashboard", "Properties": {"DashboardBody": {"Fn::Sub": "${Alarm.Arn}"}}},
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
    }, "Outputs": {"Url": {"Value": {"Fn::Sub": "https://${Api}.example"}}, "Q": {"Value": {"Ref": "Queue"}}}}
    kept, left = leave_out(template)
    assert set(kept["Resources"]) == {"Queue"} and set(kept["Outputs"]) == {"Q"}
    reasons = {item.name: item.reason for item in left}
    assert reasons["Alarm"] == "moto's CloudFormation has no such resource type"
    assert "OpenAPI Body" in reasons["Api"]
    assert reasons["Permission"] == "refers to Api, left out" and reasons["Board"] == "refers to Alarm, left out"
    assert reasons["Url"] == "refers to Api, left out"


def test_calls_are_recorded_whatever_signs_them():
    """A request signed without a boto3 client (as chalicelib/infra/signed_dynamodb.py signs its write) is seen
    as boto3's are: by its signature's access key and service, and its target."""
    import json

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from deploy.rehearse.iam import resource_arns
    from deploy.rehearse.recorder import parse

    body = json.dumps({"TableName": "ledger", "Item": {"pk": {"S": "x"}}}).encode()
    request = AWSRequest("POST", "http://127.0.0.1:5000/", data=body,
                         headers={"X-Amz-Target": "DynamoDB_20120810.PutItem"})
    SigV4Auth(Credentials("ASIAFUNCTION", "secret", "token"), "dynamodb", "eu-west-3").add_auth(request)
    wsgi = {f"HTTP_{key.upper().replace('-', '_')}": value for key, value in request.headers.items()}
    parsed = parse(wsgi, body)
    assert (parsed.access_key, parsed.service, parsed.operation) == ("ASIAFUNCTION", "dynamodb", "PutItem")
    assert resource_arns(parsed.params, {}) == ["arn:aws:dynamodb:eu-west-3:123456789012:table/ledger"]
    queue = {"QueueUrl": "https://sqs.eu-west-3.amazonaws.com/123456789012/fullwhere-bridge-retry"}
    assert resource_arns(queue, {}) == ["arn:aws:sqs:eu-west-3:123456789012:fullwhere-bridge-retry"]
    assert parse({"HTTP_AUTHORIZATION": "Bearer x"}, b"") is None
