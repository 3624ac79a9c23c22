"""Least privilege, checked: every AWS call made for a function against what its role's policies allow.

moto can enforce IAM (``INITIAL_NO_AUTH_ACTION_COUNT``), but not for this stack: its CloudFormation does
not attach a role's ``ManagedPolicyArns``, and its evaluation matches a statement's ``Resource`` against
the real resource for SQS and S3 only (``*`` for DynamoDB and Secrets Manager, so a statement scoped to a
table or a secret never matches). So the rehearsal records every call instead (at moto's server,
``recorder.py``, plus the calls Lambda itself makes with the function's role), and evaluates them
here against the role's policies as the stack created them: Allow and Deny statements, ``Action`` and
``Resource`` with IAM's ``*`` and ``?`` wildcards. A call no statement allows fails the rehearsal, and so
does an action a role's statements allow (on one of their resources) that the role's own function never
used, even when the statement is in a policy several roles share: each role is judged on its own calls.
A grant the code needs on a path the rehearsal does not take is excused only when listed, with the reason
(:class:`Unexercised`), and the list is checked too: what it names must be granted, and must stay unused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from .errors import RehearsalFailed
from .stack import ACCOUNT, PARTITION, REGION, Resolver, Stack

# Batch operations are authorised by the action of the single one (SQS API Reference, "Actions").
BATCH_ACTIONS = {
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}
UNSUPPORTED = ("NotAction", "NotResource", "Condition", "Principal", "NotPrincipal")


@dataclass(frozen=True)
class Call:
    """One AWS call made for a function: by its code, or by Lambda with the function's role."""

    function: str  # the function's logical id
    action: str  # as IAM names it: sqs:SendMessage
    resource: str  # the ARN it acts on
    by: str = "code"  # or what Lambda made it for ("event source mapping", "logs")


@dataclass(frozen=True)
class Statement:
    policy: str  # FunctionPolicy, or Role/InlinePolicyName
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, call: Call) -> bool:
        return (any(_matches(action, call.action, ignore_case=True) for action in self.actions)
                and any(_matches(resource, call.resource) for resource in self.resources))


@cache
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in text)
    return re.compile(f"^{regex}$", re.IGNORECASE if ignore_case else 0)


def _matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return bool(_pattern(pattern, ignore_case).match(value))


def iam_action(service: str, operation: str) -> str:
    return BATCH_ACTIONS.get((service, operation), f"{service}:{operation}")


def resource_arns(params: dict[str, Any], secrets: dict[str, str]) -> list[str]:
    """The ARNs a call acts on, from the parameters that name them (``secrets``: secret name -> ARN)."""
    if "QueueUrl" in params:
        account, name = urlsplit(params["QueueUrl"]).path.strip("/").split("/")[-2:]
        return [f"arn:{PARTITION}:sqs:{REGION}:{account}:{name}"]
    tables = [params["TableName"]] if "TableName" in params else params.get("TableNames", [])
    if tables:
        return [name if name.startswith("arn:") else f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
                for name in tables]
    if "SecretId" in params:
        name = params["SecretId"]
        return [name if name.startswith("arn:") else
                secrets.get(name, f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}")]
    if "logGroupName" in params:
        return [f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}"]
    for key in ("TopicArn", "FunctionName"):
        if str(params.get(key, "")).startswith("arn:"):
            return [params[key]]
    return ["*"]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(policy: str, document: dict[str, Any]) -> list[Statement]:
    found = []
    for index, statement in enumerate(_listed(document.get("Statement", []))):
        unsupported = [key for key in UNSUPPORTED if key in statement]
        if unsupported:
            raise RehearsalFailed(f"{policy}: the rehearsal does not evaluate {', '.join(unsupported)} "
                                  "(deploy/rehearse/iam.py)")
        found.append(Statement(policy=policy, sid=statement.get("Sid") or f"#{index + 1}", effect=statement["Effect"],
                               actions=tuple(_listed(statement["Action"])),
                               resources=tuple(_listed(statement["Resource"]))))
    return found


def policies(stack: Stack, resolver: Resolver, function: str) -> tuple[str, list[Statement]]:
    """The function's role (logical id) and every statement of the policies attached to it, resolved."""
    resources = stack.template["Resources"]
    role_ref = resources[function]["Properties"].get("Role")
    if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
        raise RehearsalFailed(f"{function}'s role is not a role of the stack ({role_ref!r}): the rehearsal cannot read it")
    role = role_ref["Fn::GetAtt"][0]
    found: list[Statement] = []
    properties = resources[role]["Properties"]
    for arn in properties.get("ManagedPolicyArns", []):
        name = arn.get("Ref") if isinstance(arn, dict) else None
        if name not in resources or resources[name]["Type"] != "AWS::IAM::ManagedPolicy":
            raise RehearsalFailed(f"{role} attaches the managed policy {resolver.resolve(arn)}, which is not in the "
                                  "template: the rehearsal cannot read what it allows")
        found += _statements(name, resolver.resolve(resources[name]["Properties"]["PolicyDocument"]))
    for inline in properties.get("Policies", []):
        found += _statements(f"{role}/{inline['PolicyName']}", resolver.resolve(inline["PolicyDocument"]))
    # Policies that name the role themselves.
    for name, resource in resources.items():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and \
                {"Ref": role} in resource["Properties"].get("Roles", []):
            found += _statements(name, resolver.resolve(resource["Properties"]["PolicyDocument"]))
    return role, found


def _allowed(call: Call, own: list[Statement]) -> bool:
    return (any(s.effect == "Allow" and s.allows(call) for s in own)
            and not any(s.effect == "Deny" and s.allows(call) for s in own))


def denied(calls: list[Call], statements: dict[str, list[Statement]]) -> list[Call]:
    """The calls that their function's role does not allow (no Allow, or a Deny)."""
    return [call for call in calls if not _allowed(call, statements[call.function])]


@dataclass(frozen=True)
class Idle:
    """An action a role's statement allows on one of its resources, that no call of its function used."""

    role: str
    functions: tuple[str, ...]  # the functions holding the role (one, as Chalice makes them)
    statement: Statement
    action: str
    resource: str


def unused(calls: list[Call], statements: dict[str, list[Statement]],
           roles: dict[str, str] | None = None) -> list[Idle]:
    """Every Allow (action, resource) of each role that no call of the functions holding that role used.

    ``roles``: function -> its role (by default each function is its own). A policy shared by several roles
    is judged role by role: what one function uses does not excuse it in another's role."""
    roles = roles or {function: function for function in statements}
    holders: dict[str, list[str]] = {}
    for function, role in roles.items():
        holders.setdefault(role, []).append(function)
    idle = []
    for role, functions in holders.items():
        mine = [call for call in calls if call.function in functions]
        judged: set[Statement] = set()
        for statement in (statement for function in functions for statement in statements[function]):
            if statement.effect != "Allow" or statement in judged:
                continue
            judged.add(statement)
            for action in statement.actions:
                for resource in statement.resources:
                    if not any(_matches(action, call.action, ignore_case=True) and _matches(resource, call.resource)
                               for call in mine):
                        idle.append(Idle(role, tuple(functions), statement, action, resource))
    return idle


@dataclass(frozen=True)
class Unexercised:
    """A grant ``function``'s code needs on a path the rehearsal's scenario does not take, and why."""

    function: str  # the function's logical id
    action: str  # dynamodb:GetItem
    resource: str  # what it acts on: a resource of the stack (IdentityTable), or a parameter naming a secret
    reason: str  # a sentence, printed

    def call(self, arn: str) -> Call:
        return Call(self.function, self.action, arn, by="not exercised")


def excuse(idle: list[Idle], listed: list[Unexercised], arns: dict[str, str], calls: list[Call],
           statements: dict[str, list[Statement]],
           roles: dict[str, str]) -> tuple[list[Idle], list[tuple[Unexercised, str]], list[str]]:
    """(the idle grants no listed item excuses, the listed items with their resource's ARN, what is wrong with
    the list). ``arns``: what an item may name (a logical id, a parameter) -> its ARN, or the ARN pattern a
    statement would name it by (a secret's ``name-??????``).

    An item excuses exactly its action on exactly its resource, in its function's role (never a wildcard that
    happens to cover it). It is wrong when its function's role does not grant it (the code needs it: a real
    deployment answers AccessDenied on that path) or when the rehearsal saw the function use it (it is
    exercised now: the item must go, so that the list never hides a grant the scenario could check)."""
    excused: list[tuple[Unexercised, str]] = []
    problems: list[str] = []
    covered: set[Idle] = set()
    for item in listed:
        if item.function not in statements:
            problems.append(f"{item.function} is not a function of the stack: its item ({item.action} on "
                            f"{item.resource}) goes")
            continue
        arn = arns.get(item.resource)
        if arn is None:
            problems.append(f"{item.resource} is not a resource of the stack ({item.function}'s {item.action})")
            continue
        role = roles[item.function]
        if not _allowed(item.call(arn), statements[item.function]):
            problems.append(f"{item.function} (role {role}) needs {item.action} on {arn}, which its role does not "
                            f"grant (a real deployment answers AccessDenied there): {item.reason}")
            continue
        if any(call.function == item.function and call.action.lower() == item.action.lower()
               and _matches(arn, call.resource) for call in calls):
            problems.append(f"{item.function} (role {role}) did use {item.action} on {arn} in the rehearsal: it is "
                            "exercised now, so it is no longer listed as unexercised (deploy/rehearse/scenario.py)")
            continue
        excused.append((item, arn))
        covered |= {entry for entry in idle if entry.role == role and entry.action.lower() == item.action.lower()
                    and entry.resource == arn}
    return [entry for entry in idle if entry not in covered], excused, problems
