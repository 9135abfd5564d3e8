"""Creates the template's tables, queues and secrets in a local AWS endpoint (moto).

template.yaml is the one source of truth: the local stack and the tests read the resource
definitions from it, so the local Directory table has exactly the keys and indexes the cloud one has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[4] / "template.yaml"
DEFAULT_STACK_NAME = "redis-scim"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation short-form intrinsics (`!Ref X` → {"Ref": "X"})."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class LocalResources:
    """Physical names of what `create_resources` made, by logical id."""

    stack_name: str
    tables: dict[str, str] = field(default_factory=dict)  # logical id -> table name
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL
    secrets: dict[str, str] = field(default_factory=dict)  # logical id -> secret ARN


class _Resolver:
    """Resolves the intrinsics the template's data resources use, for a local deployment."""

    def __init__(
        self, template: dict[str, Any], stack_name: str, region: str, physical: dict[str, dict[str, str]]
    ) -> None:
        self.parameters = {
            name: spec.get("Default") for name, spec in (template.get("Parameters") or {}).items()
        }
        self.pseudo = {"AWS::StackName": stack_name, "AWS::Region": region, "AWS::AccountId": "123456789012",
                       "AWS::URLSuffix": "amazonaws.com"}
        self.physical = physical  # logical id -> {"Ref": ..., "Arn": ..., "QueueName": ...}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            name = value["Ref"]
            if name in self.pseudo:
                return self.pseudo[name]
            if name in self.parameters:
                return self.parameters[name]
            return self.physical[name]["Ref"]
        if "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            return self.physical[logical][attribute]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            replacements = {**self.pseudo, **{k: str(v) for k, v in self.parameters.items()}}
            for name, replacement in replacements.items():
                text = text.replace("${" + name + "}", str(replacement))
            return text
        return {k: self(v) for k, v in value.items()}


_TABLE_KEYS = (
    "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "BillingMode"
)
_QUEUE_ATTRIBUTES = (
    "FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
    "VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds",
)


def _used(properties: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The properties the local stack uses; the others (KMS keys, deletion protection, …) have no
    local counterpart and are left unresolved."""
    return {name: value for name, value in properties.items() if name in names}


def create_resources(
    session: Any,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    secret_values: dict[str, str] | None = None,
    template: dict[str, Any] | None = None,
) -> LocalResources:
    """Create every DynamoDB table, SQS queue and Secrets Manager secret of the template.

    `session` is a boto3 Session pointed at the local endpoint. `secret_values` overrides a
    secret's initial SecretString by logical id. Queues are created dead-letter queues first.
    """
    template = template or load_template()
    region = session.region_name or "us-east-1"
    resources = template["Resources"]
    physical: dict[str, dict[str, str]] = {}
    resolve = _Resolver(template, stack_name, region, physical)
    created = LocalResources(stack_name=stack_name)
    dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
    secrets = session.client("secretsmanager")

    def ordered_queues() -> list[str]:
        queues = [name for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
        return sorted(queues, key=lambda name: "RedrivePolicy" in resources[name].get("Properties", {}))

    for logical, resource in resources.items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resolve(_used(resource["Properties"], ("TableName", "TimeToLiveSpecification", *_TABLE_KEYS)))
        name = props.get("TableName", logical)
        dynamodb.create_table(TableName=name, **{k: props[k] for k in _TABLE_KEYS if k in props})
        if props.get("TimeToLiveSpecification", {}).get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"]
            )
        physical[logical] = {"Ref": name, "Arn": f"arn:aws:dynamodb:{region}:123456789012:table/{name}"}
        created.tables[logical] = name

    for logical in ordered_queues():
        used = ("QueueName", "RedrivePolicy", *_QUEUE_ATTRIBUTES)
        props = resolve(_used(resources[logical]["Properties"], used))
        name = props.get("QueueName", logical)
        attributes = {k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
                      for k in _QUEUE_ATTRIBUTES if k in props}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        physical[logical] = {"Ref": url, "Arn": arn, "QueueName": name}
        created.queues[logical] = url

    for logical, resource in resources.items():
        if resource["Type"] != "AWS::SecretsManager::Secret":
            continue
        props = resolve(_used(resource["Properties"], ("Name", "SecretString")))
        value = (secret_values or {}).get(logical, props.get("SecretString", ""))
        arn = secrets.create_secret(Name=props.get("Name", logical), SecretString=value)["ARN"]
        physical[logical] = {"Ref": arn}
        created.secrets[logical] = arn

    return created
