"""The packaged template, translated as CloudFormation would and created on moto's CloudFormation.

``aws cloudformation package`` is replayed against moto's S3 (the zips uploaded, ``CodeUri`` and
``ContentUri`` pointed at them), then the ``AWS::Serverless-2016-10-31`` transform is applied with
aws-sam-translator, the library behind SAM and CloudFormation's own transform. What moto cannot create is
left out by name, with the reason, together with whatever refers to it; everything else must reach
``CREATE_COMPLETE``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RehearsalFailed

REGION = "eu-west-3"
ACCOUNT = "123456789012"  # moto's default account
PARTITION = "aws"
BUCKET = "fullwhere-bridge-rehearsal"
NO_VALUE = object()  # Ref AWS::NoValue: the list item or property is dropped

# Types moto's CloudFormation knows but cannot build from what SAM generates (checked by hand against moto
# 5.2: see docs/operations.md, "Rehearsing a deployment"). A type moto does not know at all is found by
# asking moto itself (:func:`moto_cannot_create`).
MOTO_CANNOT_BUILD = {
    "AWS::ApiGateway::RestApi": "moto's RestApi needs a Name and does not read the OpenAPI Body SAM generates",
    "AWS::ApiGateway::Deployment": "a moto deployment needs the API's methods, which moto does not read from "
                                   "SAM's OpenAPI Body",
}


@dataclass(frozen=True)
class LeftOut:
    name: str
    type: str
    reason: str


@dataclass
class Stack:
    """The created stack: the template it was created from, and what moto made of it."""

    name: str
    template: dict[str, Any]  # translated, with what was left out removed
    parameters: dict[str, str]
    physical: dict[str, str]  # logical id -> physical id
    types: dict[str, str]  # logical id -> resource type
    outputs: dict[str, str]
    left_out: list[LeftOut]
    not_created: dict[str, str] = field(default_factory=dict)  # logical id -> condition that is false


def moto_cannot_create(resource_type: str) -> str | None:
    """Why moto's CloudFormation cannot create a resource of this type, or None when it can."""
    from moto.cloudformation.parsing import resource_class_from_type

    if resource_type in MOTO_CANNOT_BUILD:
        return MOTO_CANNOT_BUILD[resource_type]
    if resource_class_from_type(resource_type) is None:
        return "moto's CloudFormation has no such resource type"
    return None


def upload(s3: Any, sam: dict[str, Any], package_dir: Path) -> dict[str, Any]:
    """What ``aws cloudformation package`` does: the local zips uploaded, the template pointing at them."""
    packaged = copy.deepcopy(sam)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    uploaded: dict[str, str] = {}
    for name, resource in packaged.get("Resources", {}).items():
        properties = resource.get("Properties", {})
        key = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(resource["Type"])
        if key is None or not isinstance(properties.get(key), str) or properties[key].startswith("s3://"):
            continue
        path = (package_dir / properties[key]).resolve()
        if not path.is_file():
            raise RehearsalFailed(f"{name}'s {key} {properties[key]!r} is not a file in {package_dir}: run make package")
        if path.name not in uploaded:
            s3.upload_file(str(path), BUCKET, path.name)
            uploaded[path.name] = f"s3://{BUCKET}/{path.name}"
        properties[key] = uploaded[path.name]
    return packaged


def translate(packaged: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The SAM transform, as CloudFormation applies it on create."""
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The translator reads the region (and from it the partition) from a boto3 session; it calls no AWS API
    # here, since the template names no SAM managed policy.
    session = boto3.session.Session(region_name=REGION)
    try:
        return Translator({}, Parser(), boto_session=session).translate(
            copy.deepcopy(packaged), parameter_values={**parameters, "AWS::AccountId": ACCOUNT})
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise RehearsalFailed(f"the SAM transform refused the template: {causes}") from None


def references(value: Any) -> set[str]:
    """Logical ids (and pseudo parameters) that ``value`` refers to: Ref, Fn::GetAtt, Fn::Sub, DependsOn."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else str(item).split(".")[0])
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) else item
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^}!][^}]*)\}", text)}
                if isinstance(item, list):
                    found -= set(item[1])
                    found |= references(item[1])
            elif key == "DependsOn":
                found |= set(item if isinstance(item, list) else [item])
            else:
                found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def leave_out(template: dict[str, Any]) -> tuple[dict[str, Any], list[LeftOut]]:
    """The template without what moto cannot create, and without what refers to it (outputs included)."""
    kept = copy.deepcopy(template)
    resources, left = kept["Resources"], []
    for name, resource in list(resources.items()):
        reason = moto_cannot_create(resource["Type"])
        if reason:
            left.append(LeftOut(name, resource["Type"], reason))
            del resources[name]
    changed = True
    while changed:
        changed = False
        gone = {item.name for item in left}
        for name, resource in list(resources.items()):
            missing = sorted(references(resource) & gone)
            if missing:
                left.append(LeftOut(name, resource["Type"], f"refers to {', '.join(missing)}, left out"))
                del resources[name]
                changed = True
    gone = {item.name for item in left}
    for name, output in list(kept.get("Outputs", {}).items()):
        missing = sorted(references(output) & gone)
        if missing:
            left.append(LeftOut(name, "Output", f"refers to {', '.join(missing)}, left out"))
            del kept["Outputs"][name]
    return kept, left


def parameter_values(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(overrides) - set(template.get("Parameters", {})))
    if unknown:
        raise RehearsalFailed(f"the template has no parameter {', '.join(unknown)}")
    values = {name: str(spec["Default"]) for name, spec in template.get("Parameters", {}).items() if "Default" in spec}
    values.update(overrides)
    missing = sorted(set(template.get("Parameters", {})) - set(values))
    if missing:
        raise RehearsalFailed(f"parameters without a default need a value (PARAMETERS=...): {', '.join(missing)}")
    return values


def create(clients: Any, sam: dict[str, Any], package_dir: Path, overrides: dict[str, str],
           name: str = "fullwhere-bridge") -> Stack:
    """Upload, translate and create the stack; :class:`RehearsalFailed` unless it reaches CREATE_COMPLETE."""
    parameters = parameter_values(sam, overrides)
    translated = translate(upload(clients("s3"), sam, package_dir), parameters)
    template, left = leave_out(translated)
    cloudformation = clients("cloudformation")
    cloudformation.create_stack(
        StackName=name, TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in overrides.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"])
    described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    if described["StackStatus"] != "CREATE_COMPLETE":
        failures = [f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason')}"
                    for event in cloudformation.describe_stack_events(StackName=name)["StackEvents"]
                    if event["ResourceStatus"].endswith("FAILED")]
        raise RehearsalFailed(f"stack {name} is {described['StackStatus']}: {described.get('StackStatusReason')}"
                              + "".join(f"\n  {failure}" for failure in failures))
    summaries = [summary for summary in cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
                 if summary["LogicalResourceId"]]  # moto lists a resource whose condition is false without a name
    stack = Stack(name=name, template=template, parameters=parameters,
                  physical={summary["LogicalResourceId"]: summary["PhysicalResourceId"] for summary in summaries},
                  types={summary["LogicalResourceId"]: summary["ResourceType"] for summary in summaries},
                  outputs={output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])},
                  left_out=left)
    resolver = Resolver(stack, clients)
    for logical, resource in template["Resources"].items():
        condition = resource.get("Condition")
        if condition and not resolver.condition(condition):
            stack.not_created[logical] = condition
        elif logical not in stack.physical:
            raise RehearsalFailed(f"{logical} ({resource['Type']}) is in the template but moto did not create it")
    return stack


class Resolver:
    """CloudFormation's intrinsic functions, resolved against the created stack (for its IAM policies).

    Attributes come from the resources themselves, with CloudFormation's documented values: a log group's
    ``Arn`` ends with ``:*`` (moto's own Fn::GetAtt leaves it out, and its IAM keeps a null for a list
    item that is ``AWS::NoValue``: so the policies are resolved here rather than read back from moto's IAM).
    """

    def __init__(self, stack: Stack, clients: Any):
        self.stack = stack
        self.clients = clients

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.stack.template.get("Conditions", {})[name]))

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
                  "AWS::StackName": self.stack.name, "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.stack.parameters:
            return self.stack.parameters[name]
        if name in self.stack.physical:
            return self.stack.physical[name]
        raise RehearsalFailed(f"cannot resolve Ref {name}: not a parameter nor a resource of the stack")

    def get_att(self, name: str, attribute: str) -> str:
        kind, physical = self.stack.types.get(name), self.stack.physical.get(name)
        if physical is None:
            raise RehearsalFailed(f"cannot resolve Fn::GetAtt {name}.{attribute}: no such resource in the stack")
        if kind == "AWS::SQS::Queue":
            if attribute == "QueueName":
                return physical.rsplit("/", 1)[-1]
            if attribute == "Arn":
                attributes = self.clients("sqs").get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])
                return attributes["Attributes"]["QueueArn"]
        if kind == "AWS::DynamoDB::Table" and attribute == "Arn":
            return self.clients("dynamodb").describe_table(TableName=physical)["Table"]["TableArn"]
        if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
            return f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{physical}:*"
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return self.clients("iam").get_role(RoleName=physical)["Role"]["Arn"]
        if kind == "AWS::Lambda::Function" and attribute == "Arn":
            return self.clients("lambda").get_function_configuration(FunctionName=physical)["FunctionArn"]
        raise RehearsalFailed(f"the rehearsal cannot resolve Fn::GetAtt {name}.{attribute} ({kind}): add it to "
                              "deploy/rehearse/stack.py")

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::GetAtt":
                name, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self.sub(text, {name: self.resolve(item) for name, item in variables.items()})
            if key == "Fn::If":
                condition, when_true, when_false = argument
                return self.resolve(when_true if self.condition(condition) else when_false)
            if key == "Fn::Join":
                delimiter, items = argument
                return delimiter.join(str(item) for item in self.resolve(items))
            if key == "Fn::Equals":
                left, right = self.resolve(argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(argument[0])
            if key == "Fn::And":
                return all(self.resolve(item) for item in argument)
            if key == "Fn::Or":
                return any(self.resolve(item) for item in argument)
            if key == "Condition":
                return self.condition(argument)
            if key.startswith("Fn::"):
                raise RehearsalFailed(f"the rehearsal cannot resolve {key}: add it to deploy/rehearse/stack.py")
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}
