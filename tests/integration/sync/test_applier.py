"""AclApplierFunction on real SQS events (moto) and real Valkey targets: partial batch failures,
retries and the dead-letter queue through the local stack's poller.

The SCIM side is the DynamoDB Directory publishing to the template's FIFO change queue, so the
messages are exactly what the SCIM API sends.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from sync_world import PASSWORD, Node, password_sha256, policy_text, wait_for

from redis_scim.directory import Cause, GroupChange, Member
from redis_scim.directory.changefeed import SqsChangeFeed
from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.local.lambda_runtime import InvocationContext, load_function
from redis_scim.local.poller import SqsPoller
from redis_scim.local.resources import LocalResources, load_template
from redis_scim.sync.applier import parse_change

EVENTS = Path(__file__).resolve().parents[3] / "events"
MODULE = "functions.acl_applier.app"


@dataclass
class Stage:
    """The applier's world: the Directory feeding the change queue, and the loaded handler."""

    directory: DynamoDirectory
    sqs: Any
    queue_url: str
    dlq_url: str
    handler: ModuleType
    run: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def cause(self) -> Cause:
        return Cause(request_id=f"req-{uuid.uuid4().hex[:8]}", operation="POST /Users")

    def user(self, label: str, group: str) -> str:
        user = self.directory.create_user(
            {"userName": f"scimtest-{self.run}-{label}@example.com"},
            password_sha256=password_sha256(PASSWORD),
            cause=self.cause(),
        )
        found = self.directory.search_groups(
            lookup=("displayName", group), predicate=None, start_index=1, count=1
        )
        if found.records:
            self.directory.change_group(
                found.records[0].id,
                GroupChange(add_members=[Member(user.id)]),
                expected_version=None,
                cause=self.cause(),
            )
        else:
            self.directory.create_group({"displayName": group}, members=[Member(user.id)], cause=self.cause())
        return user.id

    def receive(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=queue_url or self.queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=30,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                self.received += messages
                return messages
            messages += batch


@pytest.fixture
def stage(
    aws: boto3.Session,
    resources: LocalResources,
    nodes: dict[str, Node],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stage]:
    sqs = aws.client("sqs")
    queue_url, dlq_url = resources.queues["ChangeQueue"], resources.queues["ChangeDeadLetterQueue"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(nodes))
    monkeypatch.setenv("POLICY", str(policy))
    monkeypatch.setenv("DIRECTORY_TABLE", resources.tables["DirectoryTable"])
    monkeypatch.setenv("AUDIT_TABLE", resources.tables["AuditTable"])
    monkeypatch.setenv("CHANGE_QUEUE_URL", queue_url)
    sys.modules.pop(MODULE, None)  # a fresh cold start with this test's environment
    handler = load_function("acl_applier")
    directory = DynamoDirectory(
        resources.tables["DirectoryTable"], aws.client("dynamodb"), SqsChangeFeed(queue_url, sqs)
    )
    run = uuid.uuid4().hex[:8]
    stage = Stage(directory, sqs, queue_url, dlq_url, handler, run)
    yield stage
    sys.modules.pop(MODULE, None)
    # Leave both queues empty for the next test (PurgeQueue is allowed once a minute).
    for message in stage.received:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    while dead := _peek(stage, dlq_url):
        for message in dead:
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    for node in nodes.values():
        if node.server.is_running:
            ours = [u for u in node.admin().execute_command("ACL", "USERS") if run in u]
            if ours:
                node.admin().execute_command("ACL", "DELUSER", *ours)


def invoke(stage: Stage, messages: list[dict[str, Any]]) -> dict[str, Any]:
    poller = SqsPoller(stage.sqs, stage.queue_url, stage.handler.lambda_handler)
    event = {"Records": [poller.event_record(message) for message in messages]}
    result: dict[str, Any] = stage.handler.lambda_handler(event, InvocationContext("AclApplierFunction"))
    return result


def test_the_sample_event_parses_into_change_messages() -> None:
    event = json.loads((EVENTS / "sqs_change_batch.json").read_text())
    changes = [parse_change(record["body"]) for record in event["Records"]]
    assert [(c.version, c.cause.operation) for c in changes] == [
        (3, "PATCH /Groups/{id}"),
        (2, "DELETE /Users/{id}"),
    ]
    assert changes[0].cause.actor.token_id == "okta-2026-11"


def test_the_sample_event_for_unknown_users_succeeds_as_a_no_op(stage: Stage) -> None:
    event = json.loads((EVENTS / "sqs_change_batch.json").read_text())
    response = stage.handler.lambda_handler(event, InvocationContext("AclApplierFunction"))
    assert response == {"batchItemFailures": []}


def test_a_malformed_message_fails_alone(stage: Stage) -> None:
    event = json.loads((EVENTS / "sqs_change_batch.json").read_text())
    event["Records"][1]["body"] = '{"user_id": 42}'
    response = stage.handler.lambda_handler(event, InvocationContext("AclApplierFunction"))
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}


def test_a_batch_converges_its_users_and_reports_only_the_failed_users_messages(
    stage: Stage, nodes: dict[str, Node]
) -> None:
    writer = stage.user("writer", "Writers")  # only on target `main`
    reader = stage.user("reader", "Readers")  # on `main` and `second`
    messages = stage.receive()
    by_user: dict[str, list[str]] = {}
    for message in messages:
        by_user.setdefault(json.loads(message["Body"])["user_id"], []).append(message["MessageId"])
    assert set(by_user) == {writer, reader}

    nodes["second"].stop()
    try:
        response = invoke(stage, messages)
    finally:
        nodes["second"].start()

    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(by_user[reader])
    writer_name = f"scimtest-{stage.run}-writer@example.com"
    reader_name = f"scimtest-{stage.run}-reader@example.com"
    assert nodes["main"].can_login(writer_name, PASSWORD)
    assert nodes["main"].can_login(reader_name, PASSWORD)  # the reachable target still converged
    assert stage.directory.user_state(writer).pending is False  # type: ignore[union-attr]
    assert stage.directory.user_state(reader).pending is True  # type: ignore[union-attr]

    redelivered = [m for m in messages if m["MessageId"] in by_user[reader]]
    retry = invoke(stage, redelivered)  # SQS redelivers the failed messages; the target is back
    assert retry["batchItemFailures"] == []
    assert nodes["second"].can_login(f"scimtest-{stage.run}-reader", PASSWORD)
    assert stage.directory.user_state(reader).pending is False  # type: ignore[union-attr]


def test_the_poller_retries_a_failing_message_then_dead_letters_it(
    stage: Stage, nodes: dict[str, Node]
) -> None:
    max_receive = int(load_template()["Parameters"]["MaxReceiveCount"]["Default"])
    nodes["second"].stop()
    poller = SqsPoller(stage.sqs, stage.queue_url, stage.handler.lambda_handler, visibility_timeout=1)
    poller.start()
    try:
        healthy = stage.user("healthy", "Writers")
        stuck = stage.user("stuck", "Readers")
        healthy_name = f"scimtest-{stage.run}-healthy@example.com"
        assert wait_for(lambda: nodes["main"].has_user(healthy_name), timeout=5)
        assert wait_for(lambda: bool(_peek(stage, stage.dlq_url)), timeout=max_receive * 3 + 10)
    finally:
        poller.stop()
        nodes["second"].start()
    dead = _peek(stage, stage.dlq_url)
    assert {json.loads(m["Body"])["user_id"] for m in dead} == {stuck}
    assert all(int(m["Attributes"]["ApproximateReceiveCount"]) >= max_receive for m in dead)
    assert stage.directory.user_state(healthy).pending is False  # type: ignore[union-attr]
    assert stage.directory.user_state(stuck).pending is True  # type: ignore[union-attr]


def _peek(stage: Stage, queue_url: str) -> list[dict[str, Any]]:
    return stage.sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageSystemAttributeNames=["All"]
    ).get("Messages", [])


class _ShrinkingContext(InvocationContext):
    """A Lambda context whose remaining time runs out after `records` convergences."""

    def __init__(self, records: int) -> None:
        super().__init__("AclApplierFunction", timeout_seconds=60)
        self.calls = 0
        self.records = records

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        return 60_000 if self.calls <= self.records else 5_000


def test_records_left_when_the_invocation_runs_out_of_time_are_the_only_ones_retried(
    stage: Stage, nodes: dict[str, Node]
) -> None:
    users = [stage.user(f"late{index}", "Writers") for index in range(3)]
    messages = stage.receive()
    poller = SqsPoller(stage.sqs, stage.queue_url, stage.handler.lambda_handler)
    event = {"Records": [poller.event_record(message) for message in messages]}

    # Out of time from the start: nothing is applied ahead, every record is left (powertools then
    # fails the invocation, so SQS redelivers the whole batch), and nothing was changed.
    with pytest.raises(BatchProcessingError, match="All records failed"):
        stage.handler.lambda_handler(event, _ShrinkingContext(records=0))

    assert all(stage.directory.user_state(u).pending for u in users)  # type: ignore[union-attr]
    assert all(_ours(stage, node) == [] for node in nodes.values())
    retry = stage.handler.lambda_handler(event, InvocationContext("AclApplierFunction"))
    assert retry["batchItemFailures"] == []
    assert all(not stage.directory.user_state(u).pending for u in users)  # type: ignore[union-attr]


def test_users_the_batch_already_changed_are_finished_even_when_time_runs_short(
    stage: Stage, nodes: dict[str, Node]
) -> None:
    users = [stage.user(f"late{index}", "Writers") for index in range(3)]
    messages = stage.receive()
    poller = SqsPoller(stage.sqs, stage.queue_url, stage.handler.lambda_handler)
    event = {"Records": [poller.event_record(message) for message in messages]}

    # Time runs short after the batch's changes were applied ahead: only read-back and audit remain.
    response = stage.handler.lambda_handler(event, _ShrinkingContext(records=1))

    assert response["batchItemFailures"] == []
    assert all(not stage.directory.user_state(u).pending for u in users)  # type: ignore[union-attr]
    assert len(_ours(stage, nodes["main"])) == len(_ours(stage, nodes["replica"])) == len(users)


def _ours(stage: Stage, node: Node) -> list[str]:
    """The ACL users of this test's run on the node."""
    return [name for name in node.admin().execute_command("ACL", "USERS") if stage.run in name]
