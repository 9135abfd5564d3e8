"""SqsChangeFeed on moto's SQS FIFO queue, created from template.yaml's ChangeQueue."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from directory_subject import CAUSE

from redis_scim import errors
from redis_scim.directory import Actor, Cause, Member, UserChange
from redis_scim.directory.changefeed import SqsChangeFeed
from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.local.resources import create_resources, load_template


@pytest.fixture
def queue_url(aws: boto3.Session) -> str:
    template = load_template()
    resources = template["Resources"]
    template["Resources"] = {name: resources[name] for name in ("ChangeQueue", "ChangeDeadLetterQueue")}
    return create_resources(aws, stack_name=f"q{uuid.uuid4().hex[:12]}", template=template).queues[
        "ChangeQueue"
    ]


@pytest.fixture(scope="module")
def sqs(aws: boto3.Session) -> Any:
    return aws.client("sqs")


def _drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message, in delivery order, each deleted once received (as the applier does)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages += batch
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_messages_carry_the_change_grouped_and_deduplicated_by_user(sqs: Any, queue_url: str) -> None:
    cause = Cause("req-9", "PATCH /Groups/g1", Actor(token_id="t1", source_ip="192.0.2.1", user_agent="Okta"))
    changes = [UserChange(f"user-{n:02d}", n + 1, cause) for n in range(25)]
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    sqs.meta.events.register("before-call.sqs.*", count)
    try:
        SqsChangeFeed(queue_url, sqs).publish(changes)
    finally:
        sqs.meta.events.unregister("before-call.sqs.*", count)
    assert calls == {"SendMessageBatch": 3}

    messages = _drain(sqs, queue_url)
    assert len(messages) == 25
    by_user = {json.loads(m["Body"])["user_id"]: m for m in messages}
    first = by_user["user-00"]
    assert json.loads(first["Body"]) == {
        "user_id": "user-00",
        "version": 1,
        "cause": {
            "request_id": "req-9",
            "operation": "PATCH /Groups/g1",
            "actor": {"token_id": "t1", "source_ip": "192.0.2.1", "user_agent": "Okta"},
        },
    }
    assert first["Attributes"]["MessageGroupId"] == "user-00"
    assert first["Attributes"]["MessageDeduplicationId"] == "user-00:1"
    assert by_user["user-24"]["Attributes"]["MessageDeduplicationId"] == "user-24:25"


def test_a_redriven_change_is_delivered_once(sqs: Any, queue_url: str) -> None:
    feed = SqsChangeFeed(queue_url, sqs)
    change = UserChange("user-1", 7, CAUSE)
    feed.publish([change])
    feed.publish([change])
    feed.publish([UserChange("user-1", 8, CAUSE)])
    versions = [json.loads(m["Body"])["version"] for m in _drain(sqs, queue_url)]
    assert versions == [7, 8]


class _PartlyRefusingSqs:
    """An SQS client whose second batch loses one entry and whose third call fails outright."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append(Entries)
        if len(self.batches) == 2:
            return {
                "Successful": [{"Id": e["Id"]} for e in Entries[1:]],
                "Failed": [{"Id": Entries[0]["Id"], "Code": "InternalError", "SenderFault": False}],
            }
        if len(self.batches) == 3:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "SendMessageBatch"
            )
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def test_refused_messages_raise_after_every_batch_was_tried() -> None:
    client = _PartlyRefusingSqs()
    changes = [UserChange(f"u{n}", 1, CAUSE) for n in range(35)]
    with pytest.raises(errors.ServiceUnavailable) as raised:
        SqsChangeFeed("https://queue", client).publish(changes)
    assert len(client.batches) == 4  # the batch after the failures was still sent
    assert raised.value.detail.startswith("11 of 35 change messages refused: u10:1 (InternalError)")
    assert "u20:1 (ThrottlingException)" in raised.value.detail


def test_directory_changes_reach_the_queue(
    sqs: Any, queue_url: str, directory_table: str, dynamodb_client: Any
) -> None:
    directory = DynamoDirectory(directory_table, dynamodb_client, SqsChangeFeed(queue_url, sqs))
    alice = directory.create_user({"userName": "alice"}, password_sha256="ef" * 32, cause=CAUSE)
    bob = directory.create_user({"userName": "bob"}, password_sha256=None, cause=CAUSE)
    directory.create_group({"displayName": "team"}, members=[Member(alice.id), Member(bob.id)], cause=CAUSE)
    messages = _drain(sqs, queue_url)
    ids = [m["Attributes"]["MessageDeduplicationId"] for m in messages]
    assert sorted(ids) == sorted([f"{alice.id}:1", f"{bob.id}:1", f"{alice.id}:2", f"{bob.id}:2"])
    assert ids.index(f"{alice.id}:1") < ids.index(f"{alice.id}:2")  # in order within a user
    assert all("ef" * 32 not in message["Body"] for message in messages)
