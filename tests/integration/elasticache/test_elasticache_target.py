"""The ElastiCache target over the control-plane double, checked on the real Valkey it mirrors onto.

Lifecycle (onboard, group move, deactivate, reactivate, delete), one ModifyUserGroup per batch,
never a removal of a non-member, the users-per-group quota, `modifying` contention between two
writers, the Redis OSS `default` rule, IAM and password authentication (Secrets Manager, rotation).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import redis
from control_plane import ElastiCacheControlPlane
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from valkey_mirror import Valkey

from redis_scim import errors
from redis_scim.directory import UserRecord
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.policy import ElastiCacheTargetConfig, Policy, compile_user, load_policy_text
from redis_scim.targets import Target, TargetUnavailable
from redis_scim.targets.elasticache import (
    BUSY_RETRY_METRIC,
    QUOTA_EXCEEDED_METRIC,
    ElastiCacheAcl,
    ElastiCacheTarget,
    UserGroupFull,
    access_string_from_rules,
    parse_access_string,
)
from redis_scim.targets.elasticache_ids import MemoryUserIdRegistry, derive_user_id

pytestmark = pytest.mark.elasticache

POLICY = """
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
  cache-writer: "+@read +@write +@connection ~cache:* &cache-events"
  session-writer: "+@write ~sessions:*"
  admin-lite: "+@all -flushall -flushdb -@dangerous allkeys"
groups:
  "Cache Readers": [cache-reader]
  "Cache Writers": [cache-writer]
  "Session Writers": [session-writer]
  "Admins": [admin-lite]
targets:
  prod-cache:
    kind: elasticache
    region: eu-west-1
    engine: valkey
    user_group: cache-users
    auth: iam
    allow: [default, cache-users-admin]
"""


class Metrics:
    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.counts[name] = self.counts.get(name, 0) + value


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy_text(POLICY)


def user(user_name: str, *, active: bool = True, user_id: str | None = None) -> UserRecord:
    return UserRecord(
        id=user_id or f"scim-{user_name}",
        version=1,
        created="2026-01-01T00:00:00.000Z",
        last_modified="2026-01-01T00:00:00.000Z",
        resource={"userName": user_name, "active": active},
    )


def rules(policy: Policy, user_name: str, *groups: str, active: bool = True) -> list[str]:
    desired = compile_user(policy, "prod-cache", user(user_name, active=active), list(groups))
    assert desired is not None
    return desired.setuser_rules()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def registry() -> MemoryUserIdRegistry:
    return MemoryUserIdRegistry()


@pytest.fixture
def make_target(
    elasticache: Any, policy: Policy, registry: MemoryUserIdRegistry, metrics: Metrics
) -> Callable[..., ElastiCacheTarget]:
    def make(config: ElastiCacheTargetConfig | None = None, **options: Any) -> ElastiCacheTarget:
        options.setdefault("poll_interval", 0.01)
        options.setdefault("max_wait", 3.0)
        target_config = config or policy.target("prod-cache")
        assert isinstance(target_config, ElastiCacheTargetConfig)
        return ElastiCacheTarget(
            target_config, client=elasticache, user_ids=registry, metrics=metrics, **options
        )

    return make


@pytest.fixture
def target(
    make_group: Callable[..., str], make_target: Callable[..., ElastiCacheTarget]
) -> ElastiCacheTarget:
    make_group("cache-users")
    return make_target()


def members(elasticache: Any, group_id: str = "cache-users") -> set[str]:
    return set(elasticache.describe_user_groups(UserGroupId=group_id)["UserGroups"][0]["UserIds"])


def login(valkey: Valkey, plane: ElastiCacheControlPlane, username: str) -> redis.Redis:
    user_id = derive_user_id(username)
    return valkey.login(user_id, plane.iam_token(user_id))


# --- access strings ------------------------------------------------------------------------------


def test_the_access_string_is_the_compiled_one_without_reset(policy: Policy) -> None:
    desired = compile_user(policy, "prod-cache", user("alice"), ["Cache Readers"])
    assert desired is not None
    assert access_string_from_rules(desired.setuser_rules()) == desired.access_string()
    assert access_string_from_rules(["reset", "+@read"]).startswith("off ")  # always an explicit state


@pytest.mark.parametrize("rule", [">secret-password", "#" + "0" * 64, "nopass", "resetpass", "<old"])
def test_credential_rules_never_go_into_an_access_string(rule: str) -> None:
    # Authentication changes only through AuthenticationMode; an access string never carries it.
    assert access_string_from_rules(["reset", "on", rule, "+get"]) == "on -@all resetkeys resetchannels +get"


def test_what_we_write_and_what_the_engine_reports_compare_equal() -> None:
    written = "on -@all resetkeys resetchannels (resetchannels +@read +@connection ~cache:*)"
    reported = "on resetchannels -@all (~cache:* resetchannels -@all +@read +@connection)"
    assert parse_access_string(written) == parse_access_string(reported)
    assert parse_access_string(written) != parse_access_string(reported.replace("+@read", "+@write"))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.sets(
        st.sampled_from(["Cache Readers", "Cache Writers", "Session Writers", "Admins"]), min_size=1
    )
)
def test_read_back_equals_canonical_for_any_role_set(
    target: ElastiCacheTarget, policy: Policy, groups: set[str]
) -> None:
    desired = rules(policy, "prop-user", *sorted(groups))
    target.write_user("prop-user", desired)
    assert target.read_users(["prop-user"])["prop-user"] == {target.node: target.canonical(desired)}


# --- lifecycle ----------------------------------------------------------------------------------


def test_onboard_creates_an_iam_user_in_the_group_limited_to_its_roles(
    target: ElastiCacheTarget,
    policy: Policy,
    elasticache: Any,
    valkey: Valkey,
    plane: ElastiCacheControlPlane,
    registry: MemoryUserIdRegistry,
) -> None:
    username = "bjensen@example.com"
    user_id = derive_user_id(username)
    desired = rules(policy, username, "Cache Readers")
    target.write_user(username, desired)
    described = elasticache.describe_users(UserId=user_id)["Users"][0]
    assert (described["UserName"], described["Authentication"]["Type"]) == (user_id, "iam")
    assert user_id in members(elasticache)
    assert registry.username_of("prod-cache", user_id) == username
    assert target.read_users([username]) == {username: {target.node: target.canonical(desired)}}
    assert login(valkey, plane, username).get("cache:1") is None
    assert valkey.dryrun(user_id, "get", "cache:1")
    assert not valkey.dryrun(user_id, "set", "cache:1", "x")


def test_a_group_move_changes_rights_with_one_modify_user_and_keeps_the_connection(
    target: ElastiCacheTarget, policy: Policy, valkey: Valkey, plane: ElastiCacheControlPlane
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    live = login(valkey, plane, "alice")
    group_calls = len(plane.operations("modify_user_group"))
    target.write_user("alice", rules(policy, "alice", "Session Writers"))
    assert len(plane.operations("modify_user")) == 1
    assert len(plane.operations("modify_user_group")) == group_calls  # membership unchanged
    assert live.set("sessions:1", "x") is True  # same connection, new rights
    assert not valkey.dryrun("alice", "get", "cache:1")


def test_deactivate_drops_the_live_connection_and_leaves_an_off_user_outside_the_group(
    target: ElastiCacheTarget,
    policy: Policy,
    elasticache: Any,
    valkey: Valkey,
    plane: ElastiCacheControlPlane,
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    live = login(valkey, plane, "alice")
    disabled = rules(policy, "alice", "Cache Readers", active=False)
    target.write_user("alice", disabled)
    with pytest.raises(redis.ConnectionError):
        live.get("cache:1")
    assert "alice" not in valkey.connected_users()
    assert not valkey.can_login("alice", plane.iam_token("alice"))
    assert "alice" not in members(elasticache)
    assert elasticache.describe_users(UserId="alice")["Users"][0]["AccessString"].startswith("off ")
    assert target.read_users(["alice"]) == {"alice": {target.node: target.canonical(disabled)}}
    assert target.verify_revoked("alice", deleted=False)
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))  # reactivate
    assert login(valkey, plane, "alice").get("cache:1") is None


def test_delete_drops_the_connection_and_removes_the_user(
    target: ElastiCacheTarget,
    policy: Policy,
    elasticache: Any,
    valkey: Valkey,
    plane: ElastiCacheControlPlane,
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    live = login(valkey, plane, "alice")
    assert not target.verify_revoked("alice", deleted=True)
    target.delete_user("alice")
    with pytest.raises(redis.ConnectionError):
        live.get("cache:1")
    assert target.read_users(["alice"]) == {"alice": {target.node: None}}
    assert target.verify_revoked("alice", deleted=True)
    target.delete_user("alice")  # absent is fine


def test_deleting_a_deactivated_user_never_sends_a_removal_of_a_non_member(
    target: ElastiCacheTarget, policy: Policy, plane: ElastiCacheControlPlane
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers", active=False))
    target.delete_user("alice")
    assert all(
        "alice" not in call.params.get("UserIdsToRemove", [])
        for call in plane.operations("modify_user_group")
    )
    assert [call.error for call in plane.operations("modify_user_group") if call.error] == []


def test_a_batch_is_one_modify_user_group_with_every_add_and_remove(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    target.apply_batch(
        {"old-1": rules(policy, "old-1", "Cache Readers"), "old-2": rules(policy, "old-2", "Admins")}
    )
    before = len(plane.operations("modify_user_group"))
    batch: dict[str, list[str] | None] = {
        f"new-{n}": rules(policy, f"new-{n}", "Cache Writers") for n in range(5)
    }
    batch["old-1"] = None
    batch["old-2"] = rules(policy, "old-2", "Admins", active=False)
    target.apply_batch(batch)
    calls = plane.operations("modify_user_group")[before:]
    assert len(calls) == 1
    assert sorted(calls[0].params["UserIdsToAdd"]) == [f"new-{n}" for n in range(5)]
    assert sorted(calls[0].params["UserIdsToRemove"]) == ["old-1", "old-2"]
    assert members(elasticache) == {"cache-users-admin", *(f"new-{n}" for n in range(5))}


def test_protected_users_are_never_changed(target: ElastiCacheTarget, policy: Policy) -> None:
    with pytest.raises(errors.InvalidUsername):
        target.write_user("cache-users-admin", rules(policy, "x", "Cache Readers"))
    with pytest.raises(errors.InvalidUsername):
        target.delete_user("default")


# --- the quota: a clear error, a metric, nothing half-applied ------------------------------------


def test_additions_a_full_group_cannot_take_fail_before_anything_is_created(
    target: ElastiCacheTarget,
    policy: Policy,
    elasticache: Any,
    plane: ElastiCacheControlPlane,
    metrics: Metrics,
) -> None:
    target.apply_batch({f"user-{n}": rules(policy, f"user-{n}", "Cache Readers") for n in range(98)})
    assert len(members(elasticache)) == 99
    creates = len(plane.operations("create_user"))
    with pytest.raises(UserGroupFull, match="would have 101 users; its quota is 100") as full:
        target.apply_batch({name: rules(policy, name, "Cache Readers") for name in ("late-1", "late-2")})
    assert "not applied for late-1, late-2" in full.value.detail
    assert len(plane.operations("create_user")) == creates
    assert metrics.counts[QUOTA_EXCEEDED_METRIC] == 1
    target.write_user("late-1", rules(policy, "late-1", "Cache Readers"))  # one still fits
    assert len(members(elasticache)) == 100


def test_a_full_group_never_holds_up_a_deactivation_or_a_deletion(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    target.apply_batch({f"user-{n}": rules(policy, f"user-{n}", "Cache Readers") for n in range(99)})
    late = ("late-1", "late-2", "late-3")  # 100 + 3 added - 2 removed: one too many
    batch: dict[str, list[str] | None] = {name: rules(policy, name, "Cache Readers") for name in late}
    batch["user-0"] = rules(policy, "user-0", "Cache Readers", active=False)
    batch["user-1"] = None
    with pytest.raises(UserGroupFull, match="not applied for late-1, late-2, late-3"):
        target.apply_batch(batch)
    assert not {"user-0", "user-1", *late} & members(elasticache)
    assert target.verify_revoked("user-0", deleted=False) and target.verify_revoked("user-1", deleted=True)
    assert not set(late) & {call.params["UserId"] for call in plane.operations("create_user")}


def test_a_lower_service_quota_is_reported_and_the_batch_rolled_back(
    make_group: Callable[..., str],
    make_target: Callable[..., ElastiCacheTarget],
    policy: Policy,
    elasticache: Any,
    plane: ElastiCacheControlPlane,
    metrics: Metrics,
) -> None:
    make_group("cache-users")
    plane.users_per_group = 3  # the account's quota is lower than the target was told
    target = make_target(users_per_group=100)
    with pytest.raises(UserGroupFull, match="is full"):
        target.apply_batch({f"user-{n}": rules(policy, f"user-{n}", "Cache Readers") for n in range(3)})
    assert metrics.counts[QUOTA_EXCEEDED_METRIC] == 1
    assert members(elasticache) == {"cache-users-admin"}
    remaining = {u["UserId"] for u in elasticache.describe_users()["Users"]}
    assert not {f"user-{n}" for n in range(3)} & remaining


# --- modifying contention --------------------------------------------------------------------------


@pytest.mark.parametrize("settle_delay", [None])
def test_a_busy_group_past_the_budget_is_a_retryable_error_and_changes_nothing(
    make_group: Callable[..., str],
    make_target: Callable[..., ElastiCacheTarget],
    policy: Policy,
    elasticache: Any,
    plane: ElastiCacheControlPlane,
) -> None:
    make_group("cache-users")
    first, second = make_target(max_wait=0.0), make_target(max_wait=0.05)
    first.write_user("alice", rules(policy, "alice", "Cache Readers"))  # accepted, still modifying
    assert (
        elasticache.describe_user_groups(UserGroupId="cache-users")["UserGroups"][0]["Status"] == "modifying"
    )
    with pytest.raises(TargetUnavailable, match="retry later") as busy:
        second.write_user("bob", rules(policy, "bob", "Cache Readers"))
    assert isinstance(busy.value, errors.ServiceUnavailable)
    assert "bob" not in members(elasticache)
    plane.settle()
    second.write_user("bob", rules(policy, "bob", "Cache Readers"))  # SQS's retry
    plane.settle()
    assert {"alice", "bob"} <= members(elasticache)


@pytest.mark.parametrize("settle_delay", [0.5])
def test_two_batches_contending_for_the_group_both_land(
    make_group: Callable[..., str],
    make_target: Callable[..., ElastiCacheTarget],
    policy: Policy,
    elasticache: Any,
    plane: ElastiCacheControlPlane,
    metrics: Metrics,
    valkey: Valkey,
) -> None:
    make_group("cache-users")
    failures: list[BaseException] = []

    def run(names: list[str]) -> None:
        try:
            make_target(max_wait=10.0).apply_batch(
                {name: rules(policy, name, "Cache Readers") for name in names}
            )
        except BaseException as error:  # reported to the test thread
            failures.append(error)

    first = threading.Thread(target=run, args=(["a-1", "a-2"],))
    first.start()
    # The second batch starts while the first one's group change is in flight.
    deadline = time.monotonic() + 10
    while not plane.operations("modify_user_group") and time.monotonic() < deadline:
        time.sleep(0.005)
    second = threading.Thread(target=run, args=(["b-1", "b-2"],))
    second.start()
    first.join()
    second.join()
    assert failures == []
    assert {"a-1", "a-2", "b-1", "b-2"} <= members(elasticache)
    assert metrics.counts.get(BUSY_RETRY_METRIC, 0) > 0  # the second one waited for the first
    assert len([call for call in plane.operations("modify_user_group") if call.error is None]) == 2
    assert valkey.can_login("b-2", plane.iam_token("b-2"))


@pytest.mark.parametrize("settle_delay", [None])
def test_a_removal_is_not_verified_until_it_settles(
    make_group: Callable[..., str],
    make_target: Callable[..., ElastiCacheTarget],
    policy: Policy,
    plane: ElastiCacheControlPlane,
) -> None:
    make_group("cache-users")
    target = make_target(max_wait=0.0)
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    plane.settle()
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    plane.settle()
    target.write_user("alice", rules(policy, "alice", "Cache Readers", active=False))
    plane.settle()  # the removal settled, the ModifyUser `off` may still be pending
    target.write_user("alice", rules(policy, "alice", "Cache Readers", active=False))
    assert target.verify_revoked("alice", deleted=False) is False or plane.operations("modify_user")
    plane.settle()
    assert target.verify_revoked("alice", deleted=False)


# --- Redis OSS groups: the `default` user ----------------------------------------------------------


def test_on_a_redis_oss_group_the_default_user_stays_and_users_come_and_go(
    make_group: Callable[..., str],
    make_target: Callable[..., ElastiCacheTarget],
    policy: Policy,
    elasticache: Any,
) -> None:
    make_group("oss-users", engine="redis")
    config = ElastiCacheTargetConfig(
        name="oss-cache",
        region="eu-west-1",
        engine="redis",
        user_group="oss-users",
        auth="iam",
        allow=("default",),
    )
    target = make_target(config)
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    assert members(elasticache, "oss-users") == {"oss-users-default", "alice"}
    target.delete_user("alice")
    assert members(elasticache, "oss-users") == {"oss-users-default"}
    assert target.list_usernames() == {target.node: {"default"}}


# --- the reconciler's view -------------------------------------------------------------------------


def test_list_users_maps_managed_users_back_and_reports_the_others(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any
) -> None:
    target.write_user("bjensen@example.com", rules(policy, "bjensen@example.com", "Cache Readers"))
    elasticache.create_user(
        UserId="hand-made",
        UserName="hand-made",
        Engine="valkey",
        AccessString="on ~* +@all",
        AuthenticationMode={"Type": "iam"},
    )
    elasticache.modify_user_group(UserGroupId="cache-users", UserIdsToAdd=["hand-made"])
    listed = {member.username: member for member in target.list_users()}
    assert set(listed) == {"bjensen@example.com", "hand-made", "cache-users-admin"}
    assert listed["bjensen@example.com"].managed and not listed["hand-made"].managed
    assert listed["hand-made"].access_string == "on ~* resetchannels +@all"
    assert listed["bjensen@example.com"].acl == target.canonical(
        rules(policy, "bjensen@example.com", "Cache Readers")
    )


# --- password authentication ---------------------------------------------------------------------


def test_password_users_get_a_tagged_secret_and_rotate_with_two_live_passwords(
    make_group: Callable[..., str],
    elasticache: Any,
    aws: boto3.Session,
    policy: Policy,
    registry: MemoryUserIdRegistry,
    valkey: Valkey,
) -> None:
    make_group("cache-users")
    config = ElastiCacheTargetConfig(
        name="pw-cache",
        region="eu-west-1",
        engine="valkey",
        user_group="cache-users",
        auth="password",
        allow=("default", "cache-users-admin"),
    )
    ledger = MemoryLedger()
    ledger.claim("pw-cache", "alice", "scim-alice")
    secrets_client = aws.client("secretsmanager")
    target = ElastiCacheTarget(
        config,
        client=elasticache,
        user_ids=registry,
        secrets_client=secrets_client,
        ledger=ledger,
        poll_interval=0.01,
        max_wait=3.0,
    )
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    secret_id = "redis-scim/pw-cache/alice"
    first = json.loads(secrets_client.get_secret_value(SecretId=secret_id)["SecretString"])
    assert len(first["password"]) >= 32 and first["username"] == "alice"
    tags = {t["Key"]: t["Value"] for t in secrets_client.describe_secret(SecretId=secret_id)["Tags"]}
    assert tags["redis-scim:scim-id"] == "scim-alice"
    assert valkey.can_login("alice", first["password"])
    assert elasticache.describe_users(UserId="alice")["Users"][0]["Authentication"]["Type"] == "password"

    target.rotate_password("alice")
    second = json.loads(secrets_client.get_secret_value(SecretId=secret_id)["SecretString"])["password"]
    assert valkey.can_login("alice", first["password"]) and valkey.can_login("alice", second)  # the overlap
    target.rotate_password("alice")
    third = json.loads(secrets_client.get_secret_value(SecretId=secret_id)["SecretString"])["password"]
    assert not valkey.can_login("alice", first["password"])
    assert valkey.can_login("alice", second) and valkey.can_login("alice", third)

    target.delete_user("alice")
    with pytest.raises(secrets_client.exceptions.ResourceNotFoundException):
        secrets_client.get_secret_value(SecretId=secret_id)


# --- odds and ends of the port -----------------------------------------------------------------


def test_built_from_the_policy_with_a_session(
    make_group: Callable[..., str], aws: boto3.Session, policy: Policy, registry: MemoryUserIdRegistry
) -> None:
    make_group("cache-users")
    config = policy.target("prod-cache")
    assert isinstance(config, ElastiCacheTargetConfig)
    target = ElastiCacheTarget.from_config(config, session=aws, user_ids=registry, poll_interval=0.01)
    assert target.nodes() == ["eu-west-1/cache-users"]
    assert target.secrets_client is None  # IAM: no secrets at all
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    assert target.read_users(["alice", "nobody"])["nobody"] == {target.node: None}


@pytest.mark.parametrize("settle_delay", [None])
def test_the_lambda_time_left_caps_the_wait(
    make_group: Callable[..., str],
    make_target: Callable[..., ElastiCacheTarget],
    policy: Policy,
    plane: ElastiCacheControlPlane,
) -> None:
    make_group("cache-users")
    make_target(max_wait=0.0).write_user("alice", rules(policy, "alice", "Cache Readers"))
    almost_out_of_time = make_target(max_wait=60.0, remaining_time=lambda: 0.02)
    with pytest.raises(TargetUnavailable, match="user group is modifying"):
        almost_out_of_time.write_user("bob", rules(policy, "bob", "Cache Readers"))


def test_disconnect_takes_a_member_out_of_the_group_which_drops_its_connections(
    target: ElastiCacheTarget, policy: Policy, valkey: Valkey, plane: ElastiCacheControlPlane
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    live = login(valkey, plane, "alice")
    assert target.disconnect_user("alice") == 1
    with pytest.raises(redis.ConnectionError):
        live.get("cache:1")
    assert target.disconnect_user("alice") == 0


@pytest.mark.parametrize("settle_delay", [0.1])
def test_a_user_recreated_while_being_deleted_waits_for_the_deletion(
    target: ElastiCacheTarget,
    policy: Policy,
    elasticache: Any,
    valkey: Valkey,
    plane: ElastiCacheControlPlane,
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    target.delete_user("alice")
    assert target.read_users(["alice"]) == {"alice": {target.node: None}}  # deleting reads as gone
    target.write_user("alice", rules(policy, "alice", "Cache Writers"))
    assert "alice" in members(elasticache)
    assert valkey.dryrun("alice", "set", "cache:1", "x")


def test_switching_to_password_authentication_is_a_modify_user(
    target: ElastiCacheTarget,
    policy: Policy,
    aws: boto3.Session,
    elasticache: Any,
    registry: MemoryUserIdRegistry,
    valkey: Valkey,
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    config = ElastiCacheTargetConfig(
        name="prod-cache", region="eu-west-1", engine="valkey", user_group="cache-users", auth="password"
    )
    secrets_client = aws.client("secretsmanager")
    switched = ElastiCacheTarget(
        config, client=elasticache, user_ids=registry, secrets_client=secrets_client, poll_interval=0.01
    )
    desired = rules(policy, "alice", "Cache Readers")
    assert switched.read_users(["alice"])["alice"][switched.node] != switched.canonical(desired)
    switched.write_user("alice", desired)
    assert switched.read_users(["alice"])["alice"][switched.node] == switched.canonical(desired)
    password = json.loads(
        secrets_client.get_secret_value(SecretId="redis-scim/prod-cache/alice")["SecretString"]
    )
    assert valkey.can_login("alice", password["password"])


def test_the_target_fits_the_port(target: ElastiCacheTarget) -> None:
    port: Target = target  # checked by mypy: the engine drives it like any other target
    assert port.nodes() == [target.node]
    target.persist()
    target.close()


def test_a_user_deleted_behind_our_back_is_recreated_and_a_missing_group_is_a_target_error(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any
) -> None:
    target.write_user("alice", rules(policy, "alice", "Cache Readers", active=False))
    elasticache.delete_user(UserId="alice")  # gone behind the target's back
    elasticache.describe_users()
    target.write_user("alice", rules(policy, "alice", "Cache Readers"))  # re-created from scratch
    assert "alice" in members(elasticache)
    with pytest.raises(TargetUnavailable, match="user group not found"):
        ElastiCacheTarget(
            ElastiCacheTargetConfig(
                name="gone", region="eu-west-1", engine="valkey", user_group="no-such-group"
            ),
            client=elasticache,
            user_ids=MemoryUserIdRegistry(),
        ).write_user("bob", rules(policy, "bob", "Cache Readers"))


def hand_made(elasticache: Any, user_id: str, user_name: str) -> None:
    elasticache.create_user(
        UserId=user_id,
        UserName=user_name,
        Engine="valkey",
        AccessString="on ~* +@all",
        AuthenticationMode={"Type": "password", "Passwords": ["hand-made-password-0123"]},
    )
    elasticache.describe_users(UserId=user_id)
    elasticache.modify_user_group(UserGroupId="cache-users", UserIdsToAdd=[user_id])
    elasticache.describe_user_groups(UserGroupId="cache-users")


def test_ghosts_are_disabled_and_deleted_through_the_port_by_their_user_name(
    target: ElastiCacheTarget,
    policy: Policy,
    elasticache: Any,
    valkey: Valkey,
    registry: MemoryUserIdRegistry,
) -> None:
    # What the reconciler does with `ghosts: disable` / `delete`: the port's calls, by the name
    # `list_usernames` gave, on users whose id is not derived from their name.
    hand_made(elasticache, "ghost-1", "Ghost.One")
    hand_made(elasticache, "ghost-2", "ghost.two")
    live = valkey.login("Ghost.One", "hand-made-password-0123")
    assert target.list_usernames()[target.node] >= {"Ghost.One", "ghost.two"}
    before = target.read_users(["Ghost.One"])["Ghost.One"][target.node]
    assert isinstance(before, ElastiCacheAcl) and before.enabled and before.authentication == "password"
    target.write_user("Ghost.One", ["off", "nopass", *before.root.rules().split()])
    target.disconnect_user("Ghost.One")
    with pytest.raises(redis.ConnectionError):
        live.get("k")
    assert target.verify_revoked("Ghost.One", deleted=False)
    ghost = elasticache.describe_users(UserId="ghost-1")["Users"][0]
    assert ghost["AccessString"].startswith("off ") and ghost["Authentication"]["Type"] == "password"
    assert registry.username_of("prod-cache", "ghost-1") is None  # still not ours
    target.delete_user("ghost.two")
    assert target.verify_revoked("ghost.two", deleted=True)
    assert target.read_users(["ghost.two"])["ghost.two"] == {target.node: None}


def test_deleting_a_name_never_provisioned_touches_nobody_else(
    target: ElastiCacheTarget, elasticache: Any
) -> None:
    hand_made(elasticache, "other", "someone-else")  # holds the id the name "other" would derive
    target.delete_user("other")
    assert "other" in members(elasticache)
    assert elasticache.describe_users(UserId="other")["Users"][0]["Status"] == "active"


def test_a_username_whose_id_a_hand_made_user_holds_is_refused_not_merged(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any, registry: MemoryUserIdRegistry
) -> None:
    hand_made(elasticache, "other", "someone-else")
    with pytest.raises(errors.InvalidUsername, match="taken by a user redis-scim did not create"):
        target.write_user("other", rules(policy, "other", "Cache Readers"))
    assert registry.username_of("prod-cache", "other") is None
    assert (
        elasticache.describe_users(UserId="other")["Users"][0]["AccessString"] == "on ~* resetchannels +@all"
    )


def test_a_refused_username_does_not_hold_up_the_rest_of_its_batch(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    hand_made(elasticache, "other", "someone-else")
    before = len(plane.operations("modify_user_group"))
    with pytest.raises(errors.InvalidUsername, match="taken by a user redis-scim did not create"):
        target.apply_batch(
            {name: rules(policy, name, "Cache Readers") for name in ("fine-1", "other", "fine-2")}
        )
    assert len(plane.operations("modify_user_group")) - before == 1
    assert {"fine-1", "fine-2"} <= members(elasticache)
    assert (
        elasticache.describe_users(UserId="other")["Users"][0]["AccessString"] == "on ~* resetchannels +@all"
    )


def test_a_hand_made_user_is_never_given_rights_only_revoked(
    target: ElastiCacheTarget, policy: Policy, elasticache: Any
) -> None:
    hand_made(elasticache, "hand-made-alice", "alice")  # a ghost with the name a SCIM user now wants
    with pytest.raises(errors.InvalidUsername, match="never given rights"):
        target.write_user("alice", rules(policy, "alice", "Cache Readers"))
    assert (
        elasticache.describe_users(UserId="hand-made-alice")["Users"][0]["AccessString"]
        == "on ~* resetchannels +@all"
    )
    target.write_user("alice", rules(policy, "alice", "Cache Readers", active=False))
    assert "hand-made-alice" not in members(elasticache)
