"""The ElastiCache control-plane double pins AWS's documented behaviour (REDIS_ACL_FACTS.md §2, per test).

Every call goes through a real boto3 client (parameter validation, query serialization, XML
parsing) to moto, and every member of the attached group is checked on a real Valkey.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from botocore.exceptions import ParamValidationError
from control_plane import ElastiCacheControlPlane
from valkey_mirror import Valkey

pytestmark = pytest.mark.elasticache

PASSWORD = "a-valid-password-0123456789"


def create_user(
    elasticache: Any, user_id: str, access: str = "on ~cache:* +@read", **kwargs: Any
) -> dict[str, Any]:
    kwargs.setdefault("AuthenticationMode", {"Type": "password", "Passwords": [PASSWORD]})
    return elasticache.create_user(
        UserId=user_id,
        UserName=kwargs.pop("UserName", user_id),
        Engine=kwargs.pop("Engine", "valkey"),
        AccessString=access,
        **kwargs,
    )


def group_of(elasticache: Any, group_id: str) -> dict[str, Any]:
    return elasticache.describe_user_groups(UserGroupId=group_id)["UserGroups"][0]


def user_of(elasticache: Any, user_id: str) -> dict[str, Any]:
    return elasticache.describe_users(UserId=user_id)["Users"][0]


def error_code(error: Any) -> str:
    return str(error.value.response["Error"]["Code"])


# --- states (§2.7) -------------------------------------------------------------------------------


@pytest.mark.parametrize("settle_delay", [None])
def test_a_user_is_creating_until_it_settles_and_only_active_users_can_change(
    elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    assert create_user(elasticache, "alice")["Status"] == "creating"
    with pytest.raises(elasticache.exceptions.InvalidUserStateFault) as refused:
        elasticache.modify_user(UserId="alice", AccessString="on ~cache:* +@write")
    assert "has status creating. Only active users can be modified." in str(refused.value)
    with pytest.raises(elasticache.exceptions.InvalidUserStateFault):
        elasticache.delete_user(UserId="alice")
    plane.settle()
    assert user_of(elasticache, "alice")["Status"] == "active"
    assert (
        elasticache.modify_user(UserId="alice", AccessString="on ~cache:* +@write")["Status"] == "modifying"
    )
    with pytest.raises(elasticache.exceptions.InvalidUserStateFault):
        elasticache.modify_user(UserId="alice", AccessString="on ~cache:* +@read")


@pytest.mark.parametrize("settle_delay", [0.2])
def test_changes_settle_by_themselves_after_the_delay(elasticache: Any) -> None:
    import time

    create_user(elasticache, "alice")
    assert user_of(elasticache, "alice")["Status"] == "creating"
    time.sleep(0.25)
    assert user_of(elasticache, "alice")["Status"] == "active"


@pytest.mark.parametrize("settle_delay", [None])
def test_a_group_change_is_pending_while_modifying_and_a_second_change_is_refused(
    elasticache: Any, plane: ElastiCacheControlPlane, make_group: Callable[..., str]
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice")
    create_user(elasticache, "bob")
    plane.settle()
    answer = elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice"])
    assert answer["Status"] == "modifying"
    assert answer["PendingChanges"]["UserIdsToAdd"] == ["alice"]
    assert "alice" not in answer["UserIds"]
    with pytest.raises(elasticache.exceptions.InvalidUserGroupStateFault) as refused:
        elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["bob"])
    assert "has status modifying. Only active user groups can be modified." in str(refused.value)
    plane.settle()
    group = group_of(elasticache, group_id)
    assert (group["Status"], "PendingChanges" in group) == ("active", False)
    assert "alice" in group["UserIds"] and "bob" not in group["UserIds"]
    assert user_of(elasticache, "alice")["UserGroupIds"] == [group_id]


# --- whole-request rejection (§2.7, terraform-provider-aws #49948) --------------------------------


def test_removing_a_non_member_rejects_the_whole_request_adds_included(
    elasticache: Any, make_group: Callable[..., str]
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice")
    create_user(elasticache, "stranger")
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException) as refused:
        elasticache.modify_user_group(
            UserGroupId=group_id, UserIdsToAdd=["alice"], UserIdsToRemove=["stranger"]
        )
    assert "stranger is not a member of user group" in str(refused.value)
    group = group_of(elasticache, group_id)
    assert "alice" not in group["UserIds"] and "PendingChanges" not in group


# --- quota (§2.8) ----------------------------------------------------------------------------------


def test_a_group_holds_at_most_100_users(
    elasticache: Any, plane: ElastiCacheControlPlane, make_group: Callable[..., str]
) -> None:
    group_id = make_group(attach=False)  # holds one admin user
    user_ids = [f"user-{n}" for n in range(100)]
    for user_id in user_ids:
        create_user(elasticache, user_id)
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=user_ids[:99])
    with pytest.raises(elasticache.exceptions.UserGroupQuotaExceededFault) as refused:
        elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=user_ids[99:])
    assert "The number of users exceeds the user group limit" in str(refused.value)
    assert len(group_of(elasticache, group_id)["UserIds"]) == 100
    with pytest.raises(elasticache.exceptions.UserGroupQuotaExceededFault):
        elasticache.create_user_group(
            UserGroupId="too-big", Engine="valkey", UserIds=[*user_ids, "cache-users-admin"]
        )


# --- the default user (§2.6) and Valkey's no-password rule (§2.2) ---------------------------------


def test_a_redis_oss_group_must_always_hold_a_user_named_default(
    elasticache: Any, make_group: Callable[..., str]
) -> None:
    create_user(elasticache, "alice", Engine="redis")
    with pytest.raises(elasticache.exceptions.DefaultUserRequired) as refused:
        elasticache.create_user_group(UserGroupId="no-default", Engine="redis", UserIds=["alice"])
    assert "User group needs to contain a user with the user name default." in str(refused.value)
    group_id = make_group("oss-users", engine="redis")
    with pytest.raises(elasticache.exceptions.DefaultUserRequired):
        elasticache.modify_user_group(UserGroupId=group_id, UserIdsToRemove=["oss-users-default"])
    with pytest.raises(elasticache.exceptions.DefaultUserAssociatedToUserGroupFault):
        elasticache.delete_user(UserId="oss-users-default")


def test_a_valkey_group_needs_no_default_but_refuses_users_without_a_password(
    elasticache: Any, make_group: Callable[..., str]
) -> None:
    create_user(elasticache, "alice")
    elasticache.create_user_group(UserGroupId="valkey-only", Engine="valkey", UserIds=["alice"])
    create_user(elasticache, "open", AuthenticationMode={"Type": "no-password-required"})
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        elasticache.modify_user_group(UserGroupId="valkey-only", UserIdsToAdd=["open"])
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        elasticache.create_user_group(UserGroupId="open-group", Engine="valkey", UserIds=["open"])


def test_one_user_name_per_group(elasticache: Any, make_group: Callable[..., str]) -> None:
    group_id = make_group()
    create_user(elasticache, "alice-1", UserName="alice")
    create_user(elasticache, "alice-2", UserName="alice")
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice-1"])
    with pytest.raises(elasticache.exceptions.DuplicateUserNameFault):
        elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice-2"])


# --- users: ids, passwords, IAM, access strings (§2.1, §2.2, §2.4, §2.5) --------------------------


def test_user_ids_are_stored_lowercase_and_must_match_the_pattern(elasticache: Any) -> None:
    assert create_user(elasticache, "Alice", UserName="alice")["UserId"] == "alice"
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        create_user(elasticache, "9lives")


@pytest.mark.parametrize(
    "passwords",
    [
        ["too-short"],
        ["x" * 129],
        ["has,comma-0123456789"],
        ['has"quote-0123456789'],
        ["has/slash-0123456789"],
        ["has@at-sign-0123456789"],
        ["tab\tinside-0123456789"],
        [PASSWORD, PASSWORD + "2", PASSWORD + "3"],
    ],
)
def test_password_rules(elasticache: Any, passwords: list[str]) -> None:
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        create_user(elasticache, "alice", AuthenticationMode={"Type": "password", "Passwords": passwords})


def test_two_passwords_of_16_to_128_printable_characters_are_accepted(elasticache: Any) -> None:
    answer = create_user(
        elasticache, "alice", AuthenticationMode={"Type": "password", "Passwords": ["p" * 16, "q" * 128]}
    )
    assert answer["Authentication"] == {"Type": "password", "PasswordCount": 2}


def test_iam_authentication_needs_the_user_name_to_equal_the_id(elasticache: Any) -> None:
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        create_user(elasticache, "alice", UserName="Alice Smith", AuthenticationMode={"Type": "iam"})
    assert (
        create_user(elasticache, "alice", AuthenticationMode={"Type": "iam"})["Authentication"]["Type"]
        == "iam"
    )


@pytest.mark.parametrize(
    "access", ["reset on ~* +@all", "on >secret-password-0123 ~* +@all", "on nopass ~* +@all"]
)
def test_access_strings_hold_neither_reset_nor_passwords(elasticache: Any, access: str) -> None:
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        create_user(elasticache, "alice", access)


def test_access_strings_are_reported_as_the_engine_renders_them_and_modify_replaces_them(
    elasticache: Any,
) -> None:
    # AWS's ModifyUser example: "~objects:* ~items:* ~public:*" comes back "off ~objects:* … -@all".
    answer = create_user(elasticache, "alice", "~objects:* ~items:* ~public:*")
    assert answer["AccessString"] == "off ~objects:* ~items:* ~public:* resetchannels -@all"
    answer = elasticache.modify_user(UserId="alice", AccessString="on ~cache:* +get")
    assert answer["AccessString"] == "on ~cache:* resetchannels -@all +get"
    with pytest.raises(elasticache.exceptions.InvalidParameterValueException):
        elasticache.modify_user(UserId="alice", AccessString="on +@no-such-category")


def test_the_real_client_validates_before_anything_is_sent(
    elasticache: Any, plane: ElastiCacheControlPlane
) -> None:
    with pytest.raises(ParamValidationError):
        elasticache.modify_user_group(UserGroupId="cache-users", UserIdsToAdd=[])
    assert plane.operations("modify_user_group") == []


def test_describe_users_pages_with_a_marker(elasticache: Any) -> None:
    for n in range(5):
        create_user(elasticache, f"user-{n}")
    pages = list(elasticache.get_paginator("describe_users").paginate(PaginationConfig={"PageSize": 2}))
    ids = [user["UserId"] for page in pages for user in page["Users"]]
    assert len(pages) >= 3 and {f"user-{n}" for n in range(5)} <= set(ids)


# --- the mirror: permissions and connections on a real Valkey (§2.7) ------------------------------


def test_a_member_can_log_in_and_is_limited_to_its_access_string(
    elasticache: Any, make_group: Callable[..., str], valkey: Valkey
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice", "on ~cache:* +@read +@connection")
    assert not valkey.can_login("alice", PASSWORD)  # not a member yet: not on the cache
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice"])
    group_of(elasticache, group_id)  # the next call sees the addition settled
    assert valkey.login("alice", PASSWORD).get("cache:1") is None
    assert valkey.dryrun("alice", "get", "cache:1")
    assert not valkey.dryrun("alice", "set", "cache:1", "x")
    assert not valkey.dryrun("alice", "get", "other:1")


def test_modify_user_keeps_live_connections_with_the_new_rights(
    elasticache: Any, make_group: Callable[..., str], valkey: Valkey
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice", "on ~cache:* +@read +@connection")
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice"])
    group_of(elasticache, group_id)  # the next call sees the addition settled
    live = valkey.login("alice", PASSWORD)
    elasticache.modify_user(UserId="alice", AccessString="on ~cache:* +@read +@write +@connection")
    elasticache.describe_users(UserId="alice")  # the modification settles
    assert live.set("cache:1", "x") is True
    assert "alice" in valkey.connected_users()


def test_removal_from_the_group_drops_live_connections(
    elasticache: Any, make_group: Callable[..., str], valkey: Valkey
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice", "on ~cache:* +@read +@connection")
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice"])
    group_of(elasticache, group_id)  # the next call sees the addition settled
    live = valkey.login("alice", PASSWORD)
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToRemove=["alice"])
    elasticache.describe_user_groups(UserGroupId=group_id)  # the removal settles
    with pytest.raises(redis.ConnectionError):
        live.get("cache:1")
    assert "alice" not in valkey.connected_users()
    assert not valkey.can_login("alice", PASSWORD)


def test_delete_user_removes_it_from_its_groups_and_drops_its_connections(
    elasticache: Any, make_group: Callable[..., str], valkey: Valkey
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice", "on ~cache:* +@read +@connection")
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice"])
    group_of(elasticache, group_id)  # the next call sees the addition settled
    live = valkey.login("alice", PASSWORD)
    assert elasticache.delete_user(UserId="alice")["Status"] == "deleting"
    assert "alice" not in group_of(elasticache, group_id)["UserIds"]
    with pytest.raises(elasticache.exceptions.UserNotFoundFault):
        elasticache.describe_users(UserId="alice")
    with pytest.raises(redis.ConnectionError):
        live.get("cache:1")


def test_an_iam_user_logs_in_with_its_token(
    elasticache: Any, make_group: Callable[..., str], valkey: Valkey, plane: ElastiCacheControlPlane
) -> None:
    group_id = make_group()
    create_user(elasticache, "alice", "on ~cache:* +@read", AuthenticationMode={"Type": "iam"})
    elasticache.modify_user_group(UserGroupId=group_id, UserIdsToAdd=["alice"])
    group_of(elasticache, group_id)  # the next call sees the addition settled
    assert valkey.can_login("alice", plane.iam_token("alice"))
    assert not valkey.can_login("alice", "not-the-token-0123456789")


def test_a_cache_without_a_default_member_has_its_default_user_off(
    make_group: Callable[..., str], valkey: Valkey
) -> None:
    make_group()
    assert not valkey.can_login("default", "")
