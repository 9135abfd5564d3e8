"""Duplicate, replayed and out-of-order change messages through the ACL applier onto a real Valkey:
convergence is level-triggered, so whatever order and however often messages arrive, each user ends
with the ACL of its latest state (rights, on/off, password) and a deleted user never comes back.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from typing import Any

import redis
from hardening_support import MemoryAudit, remove_users

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
    url: {url}
    username: "{{userName}}"
"""
CAUSE = Cause("req-replay", "PATCH /Users/{id}")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sqs_event(changes: list[UserChange]) -> dict[str, Any]:
    """An SQS FIFO event as the event source mapping delivers it (one record per message)."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"handle-{position}",
                "body": json.dumps(change.to_json()),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "MessageGroupId": change.user_id,
                    "MessageDeduplicationId": change.deduplication_id,
                    "SequenceNumber": str(position),
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:redis-scim-changes.fifo",
                "awsRegion": "us-east-1",
            }
            for position, change in enumerate(changes)
        ]
    }


def dryrun(valkey: redis.Redis, username: str, *command: str) -> bool:
    try:
        return bool(valkey.execute_command("ACL", "DRYRUN", username, *command) == "OK")
    except redis.ResponseError:
        return False


def test_duplicated_replayed_and_reordered_messages_converge_to_the_latest_state(valkey: redis.Redis) -> None:
    remove_users(valkey)
    feed = ListFeed()
    directory = MemoryDirectory(feed)
    url = f"redis://127.0.0.1:{valkey.connection_pool.connection_kwargs['port']}"
    policy = load_policy_text(POLICY.format(url=url), env={})
    engine = SyncEngine(
        directory=directory,
        ledger=MemoryLedger(),
        policy=policy,
        targets=open_targets(policy),
        audit=MemoryAudit(),
    )
    readers = directory.create_group({"displayName": "Readers"}, members=[], cause=CAUSE).id
    writers = directory.create_group({"displayName": "Writers"}, members=[], cause=CAUSE).id

    # Moved: reader -> writer, deactivated, reactivated with a new password.
    moved = directory.create_user({"userName": "moved"}, password_sha256=sha256("first"), cause=CAUSE)
    directory.change_group(
        readers, GroupChange(add_members=[Member(moved.id)]), expected_version=None, cause=CAUSE
    )
    directory.change_group(
        readers, GroupChange(remove_members=[moved.id]), expected_version=None, cause=CAUSE
    )
    directory.change_group(
        writers, GroupChange(add_members=[Member(moved.id)]), expected_version=None, cause=CAUSE
    )
    for active, password in ((False, None), (True, sha256("latest"))):
        current = directory.get_user(moved.id)
        directory.replace_user(
            moved.id,
            {**current.resource, "active": active},
            expected_version=None,
            password_sha256=password,
            keep_password=password is None,
            cause=CAUSE,
        )
    # Deleted after having been a writer.
    gone = directory.create_user({"userName": "gone"}, password_sha256=sha256("pw"), cause=CAUSE)
    directory.change_group(
        writers, GroupChange(add_members=[Member(gone.id)]), expected_version=None, cause=CAUSE
    )
    directory.delete_user(gone.id, expected_version=None, cause=CAUSE)

    changes = list(feed.changes)
    assert {c.user_id for c in changes} == {moved.id, gone.id} and len(changes) >= 8
    # Every message twice, shuffled, the oldest versions last; then a late replay of everything.
    delivered = sorted(changes * 2, key=lambda change: -change.version)
    random.Random(7).shuffle(delivered[: len(delivered) // 2])
    applier = AclApplier(engine)
    for batch in (delivered[:5], delivered[5:], list(reversed(changes))):
        assert applier.handle_batch(sqs_event(batch), None) == {"batchItemFailures": []}

    acl = valkey.acl_getuser("moved")
    assert "on" in acl["flags"]
    assert acl["passwords"] == [sha256("latest")]
    assert dryrun(valkey, "moved", "SET", "cache:1", "v")  # writer, the latest group
    assert not dryrun(valkey, "moved", "SET", "other:1", "v")
    assert "gone" not in valkey.execute_command("ACL", "USERS")
    for user in (moved.id, gone.id):
        state = directory.user_state(user)
        assert state is None or not state.pending
