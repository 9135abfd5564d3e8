"""Wrong controller credentials: the applier fails with a clear reason naming the target and the
refused login, counts an ApplyFailures metric, leaves the change pending for a retry, writes nothing
on the target, and never puts the controller's password in the reason or the logs."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import redis
from hardening_support import MemoryAudit, remove_users

from redis_scim import errors
from redis_scim.directory import Cause, GroupChange, Member
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.observability import MetricName
from redis_scim.policy import load_policy_text
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.runtime import open_targets

CONTROLLER_PASSWORD = "the-right-controller-password"
WRONG_PASSWORD = "a-wrong-controller-password"
POLICY = """\
version: 1
roles:
  reader: "+@read +@connection ~cache:*"
groups:
  Readers: [reader]
targets:
  main:
    kind: redis
    url: redis://controller:{password}@127.0.0.1:{port}
    username: "{{userName}}"
    allow: [default, controller]
"""
CAUSE = Cause("req-controller", "POST /Users")


class RecordingMetrics:
    def __init__(self) -> None:
        self.values: list[tuple[str, float]] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.values.append((name, value))


def engine_with(
    password: str, port: int, directory: MemoryDirectory, metrics: RecordingMetrics
) -> SyncEngine:
    policy = load_policy_text(POLICY.format(password=password, port=port), env={})
    return SyncEngine(
        directory=directory,
        ledger=MemoryLedger(),
        policy=policy,
        targets=open_targets(policy),
        audit=MemoryAudit(),
        metrics=metrics,
    )


def test_wrong_controller_credentials_are_a_clear_counted_failure_that_changes_nothing(
    valkey: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    remove_users(valkey)
    valkey.execute_command(
        "ACL", "SETUSER", "controller", "on", f">{CONTROLLER_PASSWORD}", "+@all", "~*", "&*"
    )
    port = int(valkey.connection_pool.connection_kwargs["port"])
    directory = MemoryDirectory(ListFeed())
    group = directory.create_group({"displayName": "Readers"}, members=[], cause=CAUSE)
    user = directory.create_user(
        {"userName": "alice"}, password_sha256=hashlib.sha256(b"pw").hexdigest(), cause=CAUSE
    )
    change = GroupChange(add_members=[Member(user.id)])
    directory.change_group(group.id, change, expected_version=None, cause=CAUSE)
    metrics = RecordingMetrics()

    with pytest.raises(errors.SyncIncomplete) as failed:
        engine_with(WRONG_PASSWORD, port, directory, metrics).converge(user.id, CAUSE)

    reason = failed.value.failures["main"]
    assert "main" in failed.value.detail
    assert "WRONGPASS" in reason or "invalid username-password" in reason
    assert [name for name, _ in metrics.values].count(MetricName.APPLY_FAILURES) == 1
    assert set(valkey.execute_command("ACL", "USERS")) == {"default", "controller"}  # nothing half-applied
    state = directory.user_state(user.id)
    assert state is not None and state.pending  # retried later (SQS redelivers the message)
    for text in (failed.value.detail, caplog.text):
        assert WRONG_PASSWORD not in text and CONTROLLER_PASSWORD not in text

    # With the right credentials the same change goes through.
    engine_with(CONTROLLER_PASSWORD, port, directory, RecordingMetrics()).converge(user.id, CAUSE)
    assert "alice" in valkey.execute_command("ACL", "USERS")
    remove_users(valkey)
