"""The sync engine converging SCIM users onto an ElastiCache target (over the double, mirrored on Valkey).

What an auditor sees for each step: the audit entry (action, outcome, verified, redacted before and
after), the metrics, and the effect on a real engine (logins, ACL DRYRUN, live connections).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from control_plane import ElastiCacheControlPlane
from valkey_mirror import Valkey

from redis_scim import errors
from redis_scim.audit import Action, AuditEntry, Outcome
from redis_scim.directory import Cause, GroupChange, Member, UserChange, UserRecord
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.local.lambda_runtime import InvocationContext
from redis_scim.observability import MetricName
from redis_scim.policy import ElastiCacheTargetConfig, load_policy_text
from redis_scim.sync.applier import AclApplier
from redis_scim.sync.engine import SyncEngine
from redis_scim.targets.elasticache import QUOTA_EXCEEDED_METRIC, ElastiCacheTarget
from redis_scim.targets.elasticache_ids import MemoryUserIdRegistry, derive_user_id

pytestmark = pytest.mark.elasticache

POLICY = """
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
  cache-writer: "+@read +@write +@connection ~cache:*"
groups:
  "Cache Readers": [cache-reader]
  "Cache Writers": [cache-writer]
targets:
  prod-cache:
    kind: elasticache
    region: eu-west-1
    engine: valkey
    user_group: cache-users
    auth: iam
    allow: [default, cache-users-admin]
"""


class AuditEntries:
    """The engine's audit sink, keeping entries in order."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def append(self, entry: AuditEntry) -> Any:
        self.entries.append(entry)
        return entry


class Metrics:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.names.append(name)


class World:
    def __init__(self, target: ElastiCacheTarget, ledger: MemoryLedger, metrics: Metrics) -> None:
        self.directory = MemoryDirectory()
        self.audit = AuditEntries()
        self.metrics = metrics
        self.engine = SyncEngine(
            directory=self.directory,
            ledger=ledger,
            policy=load_policy_text(POLICY),
            targets={"prod-cache": target},
            audit=self.audit,
            metrics=self.metrics,
        )
        self.groups: dict[str, str] = {}

    def cause(self) -> Cause:
        return Cause(request_id=f"req-{uuid.uuid4().hex[:8]}", operation="PATCH /Users")

    def create_user(self, user_name: str) -> UserRecord:
        return self.directory.create_user({"userName": user_name}, password_sha256=None, cause=self.cause())

    def join(self, user: UserRecord, group: str) -> None:
        if group not in self.groups:
            self.groups[group] = self.directory.create_group(
                {"displayName": group}, members=[], cause=self.cause()
            ).id
        self.directory.change_group(
            self.groups[group],
            GroupChange(add_members=[Member(user.id)]),
            expected_version=None,
            cause=self.cause(),
        )

    def leave(self, user: UserRecord, group: str) -> None:
        self.directory.change_group(
            self.groups[group],
            GroupChange(remove_members=[user.id]),
            expected_version=None,
            cause=self.cause(),
        )

    def set_active(self, user: UserRecord, active: bool) -> None:
        current = self.directory.get_user(user.id)
        self.directory.replace_user(
            user.id,
            {**current.resource, "active": active},
            expected_version=None,
            password_sha256=None,
            keep_password=True,
            cause=self.cause(),
        )

    def converge(self, user: UserRecord) -> Any:
        return self.engine.converge(user.id, self.cause())

    def last(self) -> AuditEntry:
        return self.audit.entries[-1]


def new_world(elasticache: Any, *, users_per_group: int) -> World:
    config = load_policy_text(POLICY).target("prod-cache")
    assert isinstance(config, ElastiCacheTargetConfig)
    ledger, metrics = MemoryLedger(), Metrics()
    target = ElastiCacheTarget(
        config,
        client=elasticache,
        user_ids=MemoryUserIdRegistry(),
        ledger=ledger,
        metrics=metrics,  # the engine's sink: one EMF stream
        users_per_group=users_per_group,
        poll_interval=0.01,
        max_wait=3.0,
    )
    return World(target, ledger, metrics)


@pytest.fixture
def world(make_group: Callable[..., str], elasticache: Any) -> World:
    make_group("cache-users")
    return new_world(elasticache, users_per_group=3)  # the admin and two users: small enough to reach


@pytest.fixture
def roomy_world(make_group: Callable[..., str], elasticache: Any) -> World:
    make_group("cache-users")
    return new_world(elasticache, users_per_group=20)


def login(valkey: Valkey, plane: ElastiCacheControlPlane, user_name: str) -> redis.Redis:
    user_id = derive_user_id(user_name)
    return valkey.login(user_id, plane.iam_token(user_id))


def test_onboard_move_deactivate_reactivate_delete_each_audited_and_verified(
    world: World, valkey: Valkey, plane: ElastiCacheControlPlane
) -> None:
    alice = world.create_user("alice@example.com")
    user_id = derive_user_id("alice@example.com")
    world.join(alice, "Cache Readers")
    world.converge(alice)
    entry = world.last()
    assert (entry.action, entry.outcome, entry.verified) == (Action.CREATE, Outcome.APPLIED, True)
    assert entry.node_count == 1 and entry.acl_before is None
    assert entry.acl_after == "on auth:iam -@all (~cache:* -@all +@read +@connection)"
    assert valkey.dryrun(user_id, "get", "cache:1") and not valkey.dryrun(user_id, "set", "cache:1", "x")
    live = login(valkey, plane, "alice@example.com")

    world.leave(alice, "Cache Readers")
    world.join(alice, "Cache Writers")
    world.converge(alice)
    assert (world.last().action, world.last().verified) == (Action.UPDATE, True)
    assert live.set("cache:1", "x") is True  # ModifyUser keeps the connection, with the new rights

    world.set_active(alice, False)
    world.converge(alice)
    entry = world.last()
    assert (entry.action, entry.outcome, entry.verified) == (Action.DISABLE, Outcome.APPLIED, True)
    assert entry.acl_after is not None and "not-in-user-group" in entry.acl_after
    with pytest.raises(redis.ConnectionError):
        live.get("cache:1")
    assert not valkey.can_login(user_id, plane.iam_token(user_id))
    assert MetricName.DEPROVISIONED in world.metrics.names
    count = len(world.audit.entries)
    world.converge(alice)  # a replayed message changes nothing and records nothing
    assert len(world.audit.entries) == count

    world.set_active(alice, True)
    world.converge(alice)
    assert world.last().verified and valkey.can_login(user_id, plane.iam_token(user_id))

    world.directory.delete_user(alice.id, expected_version=None, cause=world.cause())
    world.converge(alice)
    entry = world.last()
    assert (entry.action, entry.outcome, entry.verified) == (Action.DELETE, Outcome.APPLIED, True)
    assert not valkey.can_login(user_id, plane.iam_token(user_id))


def test_a_full_group_is_a_failed_audit_record_a_metric_and_a_retry_never_a_partial_apply(
    world: World, elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    for name in ("one@example.com", "two@example.com"):
        user = world.create_user(name)
        world.join(user, "Cache Readers")
        world.converge(user)
    third = world.create_user("three@example.com")
    world.join(third, "Cache Readers")
    with pytest.raises(errors.SyncIncomplete):
        world.converge(third)
    entry = world.last()
    assert (entry.action, entry.outcome, entry.verified) == (Action.CREATE, Outcome.FAILED, False)
    assert entry.reason is not None and "UserGroupFull" in entry.reason and "quota is 3" in entry.reason
    assert QUOTA_EXCEEDED_METRIC in world.metrics.names and MetricName.APPLY_FAILURES in world.metrics.names
    with pytest.raises(elasticache.exceptions.UserNotFoundFault):
        elasticache.describe_users(UserId=derive_user_id("three@example.com"))
    state = world.directory.user_state(third.id)
    assert state is not None and state.pending  # the message stays for SQS to retry


# --- one ModifyUserGroup per SQS batch -------------------------------------------------------------

NAMES = [f"batch{n}@example.com" for n in range(5)]


def group_changes(plane: ElastiCacheControlPlane) -> int:
    return len(plane.operations("modify_user_group"))


def test_a_batch_of_onboardings_then_of_deactivations_is_one_modify_user_group_each(
    roomy_world: World, valkey: Valkey, plane: ElastiCacheControlPlane
) -> None:
    world = roomy_world
    users = [world.create_user(name) for name in NAMES]
    for user in users:
        world.join(user, "Cache Readers")
    before = group_changes(plane)
    with world.engine.batch([user.id for user in users]):
        onboarded = [world.converge(user) for user in users]
    assert group_changes(plane) - before == 1
    assert all(result.cleared for result in onboarded)
    entries = world.audit.entries
    assert sorted(entry.user_id for entry in entries) == sorted(user.id for user in users)
    assert all(
        (entry.action, entry.outcome, entry.verified, entry.acl_before)
        == (Action.CREATE, Outcome.APPLIED, True, None)
        for entry in entries
    )
    assert all(valkey.dryrun(derive_user_id(name), "get", "cache:1") for name in NAMES)
    live = [login(valkey, plane, name) for name in NAMES]

    for user in users:
        world.set_active(user, False)
    before, audited = group_changes(plane), len(entries)
    with world.engine.batch([user.id for user in users]):
        for user in users:
            world.converge(user)
    assert group_changes(plane) - before == 1
    disabled = world.audit.entries[audited:]
    assert sorted(entry.user_id for entry in disabled) == sorted(user.id for user in users)
    assert all(
        (entry.action, entry.outcome, entry.verified) == (Action.DISABLE, Outcome.APPLIED, True)
        and entry.acl_before is not None
        and "on auth:iam" in entry.acl_before
        for entry in disabled
    )
    for connection in live:
        with pytest.raises(redis.ConnectionError):
            connection.get("cache:1")
    assert all(not world.directory.user_state(user.id).pending for user in users)  # type: ignore[union-attr]


def test_outside_a_batch_each_user_is_its_own_modify_user_group(
    roomy_world: World, plane: ElastiCacheControlPlane
) -> None:
    users = [roomy_world.create_user(name) for name in NAMES[:3]]
    for user in users:
        roomy_world.join(user, "Cache Readers")
    before = group_changes(plane)
    for user in users:
        roomy_world.converge(user)
    assert group_changes(plane) - before == 3


def sqs_record(user: UserRecord, version: int, message_id: str) -> dict[str, Any]:
    body = json.dumps(
        UserChange(
            user.id, version, Cause(request_id=f"req-{message_id}", operation="PATCH /Users")
        ).to_json()
    )
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"MessageGroupId": user.id, "MessageDeduplicationId": f"{user.id}:{version}"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:changes.fifo",
        "awsRegion": "eu-west-1",
    }


def test_a_mixed_sqs_batch_fails_only_the_user_whose_change_failed(
    roomy_world: World, elasticache: Any, valkey: Valkey, plane: ElastiCacheControlPlane
) -> None:
    world = roomy_world
    good = [world.create_user(name) for name in NAMES[:3]]
    bad = world.create_user("taken@example.com")
    # A user made by hand holds the id `taken@example.com` maps to: that user is refused.
    elasticache.create_user(
        UserId=derive_user_id("taken@example.com"),
        UserName="someone-else",
        Engine="valkey",
        AccessString="on ~* +@all",
        AuthenticationMode={"Type": "password", "Passwords": ["hand-made-password-0123"]},
    )
    plane.settle()
    for user in [*good, bad]:
        world.join(user, "Cache Readers")
    event = {
        "Records": [
            sqs_record(user, world.directory.user_state(user.id).version, f"m{n}")  # type: ignore[union-attr]
            for n, user in enumerate([good[0], bad, *good[1:]])
        ]
    }
    applier = AclApplier(world.engine)
    target = world.engine.targets["prod-cache"]
    assert isinstance(target, ElastiCacheTarget)
    before = group_changes(plane)

    response = applier.handle_batch(event, InvocationContext("AclApplierFunction", timeout_seconds=60))

    assert response["batchItemFailures"] == [{"itemIdentifier": "m1"}]
    assert group_changes(plane) - before == 1
    assert target.remaining_time is None  # the invocation's budget was lent for the batch only
    by_user = {entry.user_id: entry for entry in world.audit.entries}
    assert all((by_user[user.id].action, by_user[user.id].verified) == (Action.CREATE, True) for user in good)
    assert (by_user[bad.id].outcome, by_user[bad.id].verified) == (Outcome.FAILED, False)
    assert all(
        valkey.can_login(derive_user_id(user.user_name), plane.iam_token(derive_user_id(user.user_name)))
        for user in good
    )
    assert world.directory.user_state(bad.id).pending  # type: ignore[union-attr]
    assert not any(world.directory.user_state(user.id).pending for user in good)  # type: ignore[union-attr]


def test_the_invocation_time_left_caps_the_wait_for_a_busy_group(
    roomy_world: World, elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    world = roomy_world
    user = world.create_user(NAMES[0])
    world.join(user, "Cache Readers")
    target = world.engine.targets["prod-cache"]
    assert isinstance(target, ElastiCacheTarget)
    target.max_wait = 60.0
    plane.settle_delay = None  # another writer's change stays in flight: the group stays `modifying`
    elasticache.modify_user_group(UserGroupId="cache-users", UserIdsToRemove=["cache-users-admin"])
    event = {"Records": [sqs_record(user, world.directory.user_state(user.id).version, "m0")]}  # type: ignore[union-attr]
    context = InvocationContext("AclApplierFunction", timeout_seconds=10.2)  # 10 s reserve: ~0.2 s to wait
    started = time.monotonic()

    # Every record failed: powertools raises, and SQS redelivers the batch.
    with pytest.raises(BatchProcessingError, match="retry later"):
        AclApplier(world.engine).handle_batch(event, context)

    assert time.monotonic() - started < 5
    assert world.last().outcome is Outcome.FAILED and "retry later" in (world.last().reason or "")
    assert target.remaining_time is None


class _RunningOutAfterTheGroupChange(InvocationContext):
    """A Lambda context with plenty of time until the batch's ModifyUserGroup, then too little."""

    def __init__(self, plane: ElastiCacheControlPlane) -> None:
        super().__init__("AclApplierFunction", timeout_seconds=60)
        self.plane = plane

    def get_remaining_time_in_millis(self) -> int:
        return 5_000 if self.plane.operations("modify_user_group") else 60_000


def test_users_the_batch_already_changed_are_audited_even_when_time_runs_out(
    roomy_world: World, plane: ElastiCacheControlPlane
) -> None:
    world = roomy_world
    users = [world.create_user(name) for name in NAMES[:3]]
    for user in users:
        world.join(user, "Cache Readers")
    event = {
        "Records": [
            sqs_record(user, world.directory.user_state(user.id).version, f"m{n}")  # type: ignore[union-attr]
            for n, user in enumerate(users)
        ]
    }

    response = AclApplier(world.engine).handle_batch(event, _RunningOutAfterTheGroupChange(plane))

    assert response["batchItemFailures"] == []
    assert sorted(entry.user_id for entry in world.audit.entries) == sorted(user.id for user in users)
    assert all(entry.verified for entry in world.audit.entries)
