"""The sync engine converging SCIM users onto an ElastiCache target (over the double, mirrored on Valkey).

What an auditor sees for each step: the audit entry (action, outcome, verified, redacted before and
after), the metrics, and the effect on a real engine (logins, ACL DRYRUN, live connections).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from control_plane import ElastiCacheControlPlane
from valkey_mirror import Valkey

from redis_scim import errors
from redis_scim.audit import Action, AuditEntry, Outcome
from redis_scim.directory import Cause, GroupChange, Member, UserRecord
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.observability import MetricName
from redis_scim.policy import ElastiCacheTargetConfig, load_policy_text
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


@pytest.fixture
def world(make_group: Callable[..., str], elasticache: Any) -> World:
    make_group("cache-users")
    config = load_policy_text(POLICY).target("prod-cache")
    assert isinstance(config, ElastiCacheTargetConfig)
    ledger, metrics = MemoryLedger(), Metrics()
    target = ElastiCacheTarget(
        config,
        client=elasticache,
        user_ids=MemoryUserIdRegistry(),
        ledger=ledger,
        metrics=metrics,  # the engine's sink: one EMF stream
        users_per_group=3,  # the admin and two users: small enough to reach
        poll_interval=0.01,
        max_wait=3.0,
    )
    return World(target, ledger, metrics)


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
