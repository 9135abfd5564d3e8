"""The ACL compiler: group membership → SETUSER rules and ElastiCache access strings."""

from __future__ import annotations

import hashlib

import pytest

from redis_scim.directory import UserRecord
from redis_scim.errors import InvalidUsername, InvalidValue, PolicyError
from redis_scim.policy import DesiredAcl, compile_user, load_policy_text

POLICY = """\
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
  cache-writer: "+@read +@write +@connection ~cache:* &cache-events"
  sessions-writer: "+@write ~sessions:*"
groups:
  "Cache Readers": [cache-reader]
  "Cache Writers": [cache-writer]
  "Session Writers": [sessions-writer]
  "Everything": [cache-writer, cache-reader]
targets:
  local:
    kind: redis
    url: redis://127.0.0.1:6379
  ldap:
    kind: redis
    url: redis://127.0.0.1:6379
    credentials: external
    username: "{userNameLocalPart}"
    allow: [default, breakglass]
    groups:
      "Cache Writers": [cache-reader]
      "Session Writers": []
  prod-cache:
    kind: elasticache
    region: eu-west-1
    engine: valkey
    user_group: prod-cache-users
"""

PASSWORD_HASH = hashlib.sha256(b"correct horse battery staple").hexdigest()


@pytest.fixture(scope="module")
def policy():
    return load_policy_text(POLICY, env={})


def user(
    user_name: str = "bjensen@example.com",
    *,
    active: bool = True,
    password_sha256: str | None = None,
    **attributes: object,
) -> UserRecord:
    resource = {"userName": user_name, "active": active, **attributes}
    return UserRecord(
        "2819c223", 3, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", resource, password_sha256
    )


def test_one_selector_per_role_sorted_by_role_name(policy) -> None:
    acl = compile_user(
        policy, "local", user(password_sha256=PASSWORD_HASH), ["Session Writers", "Cache Readers"]
    )

    assert acl is not None
    assert acl.setuser_rules() == [
        "reset",
        "on",
        f"#{PASSWORD_HASH}",
        "(resetchannels +@read +@connection ~cache:*)",
        "(resetchannels +@write ~sessions:*)",
    ]
    assert acl.roles == ("cache-reader", "sessions-writer")
    assert acl.username == "bjensen@example.com"


def test_group_names_match_ignoring_case_and_roles_are_not_repeated(policy) -> None:
    acl = compile_user(policy, "local", user(), ["EVERYTHING", "cache readers", "Cache Writers"])
    assert acl is not None
    assert acl.roles == ("cache-reader", "cache-writer")


def test_no_mapped_group_means_no_acl_user(policy) -> None:
    assert compile_user(policy, "local", user(), []) is None
    assert compile_user(policy, "local", user(), ["Unmapped Team"]) is None


def test_no_password_yet_means_resetpass(policy) -> None:
    acl = compile_user(policy, "local", user(), ["Cache Readers"])
    assert acl is not None
    assert acl.setuser_rules()[:3] == ["reset", "on", "resetpass"]


def test_inactive_user_is_off(policy) -> None:
    acl = compile_user(policy, "local", user(active=False, password_sha256=PASSWORD_HASH), ["Cache Readers"])
    assert acl is not None
    assert acl.enabled is False
    assert acl.setuser_rules()[:2] == ["reset", "off"]
    assert acl.access_string().startswith("off ")


def test_external_credentials_have_no_password_rule(policy) -> None:
    acl = compile_user(policy, "ldap", user(password_sha256=PASSWORD_HASH), ["Cache Readers"])
    assert acl is not None
    assert acl.credential == "external"
    assert acl.password_sha256 is None
    assert acl.setuser_rules() == ["reset", "on", "(resetchannels +@read +@connection ~cache:*)"]
    assert acl.username == "bjensen"


def test_target_group_overrides_replace_per_group_and_empty_list_removes(policy) -> None:
    # On `ldap`, writers only read and session writers get nothing; other groups inherit.
    writer = compile_user(policy, "ldap", user(), ["Cache Writers"])
    assert writer is not None
    assert writer.roles == ("cache-reader",)
    assert compile_user(policy, "ldap", user(), ["Session Writers"]) is None
    everything = compile_user(policy, "ldap", user(), ["Everything"])
    assert everything is not None
    assert everything.roles == ("cache-reader", "cache-writer")


def test_elasticache_access_string_has_no_reset_and_no_password(policy) -> None:
    acl = compile_user(policy, "prod-cache", user(password_sha256=PASSWORD_HASH), ["Cache Writers"])
    assert acl is not None
    assert acl.credential == "iam"
    assert acl.password_sha256 is None
    assert acl.access_string() == (
        "on -@all resetkeys resetchannels (resetchannels +@read +@write +@connection ~cache:* &cache-events)"
    )
    assert "reset " not in acl.access_string()


def test_password_hash_is_kept_out_of_repr_and_describe(policy) -> None:
    acl = compile_user(policy, "local", user(password_sha256=PASSWORD_HASH.upper()), ["Cache Readers"])
    assert acl is not None
    assert acl.password_sha256 == PASSWORD_HASH  # normalized to the lower-case form Redis reports
    assert PASSWORD_HASH not in repr(acl)
    assert acl.describe() == "reset on #<redacted> (resetchannels +@read +@connection ~cache:*)"


def test_a_malformed_stored_hash_is_refused(policy) -> None:
    with pytest.raises(InvalidValue, match="not a SHA-256 hex digest"):
        compile_user(policy, "local", user(password_sha256="abc on +@all"), ["Cache Readers"])


def test_desired_acls_compare_by_value(policy) -> None:
    first = compile_user(policy, "local", user(password_sha256=PASSWORD_HASH), ["Cache Readers"])
    again = compile_user(policy, "local", user(password_sha256=PASSWORD_HASH), ["cache readers"])
    other_password = compile_user(policy, "local", user(password_sha256="0" * 64), ["Cache Readers"])
    assert first == again
    assert first != other_password
    assert isinstance(first, DesiredAcl)


def test_protected_usernames_are_never_produced(policy) -> None:
    with pytest.raises(InvalidUsername, match="'default' is protected"):
        compile_user(policy, "local", user("default"), ["Cache Readers"])
    with pytest.raises(InvalidUsername, match="'DEFAULT' is protected"):
        compile_user(policy, "local", user("DEFAULT"), ["Cache Readers"])
    with pytest.raises(InvalidUsername, match="'breakglass' is protected"):
        compile_user(policy, "ldap", user("breakglass@example.com"), ["Cache Readers"])


def test_unsafe_usernames_are_refused_not_repaired(policy) -> None:
    with pytest.raises(InvalidUsername, match="contains U\\+0020"):
        compile_user(policy, "local", user("b jensen"), ["Cache Readers"])


def test_unknown_target_is_a_policy_error(policy) -> None:
    with pytest.raises(PolicyError, match="unknown target 'staging'"):
        compile_user(policy, "staging", user(), ["Cache Readers"])


def test_username_collisions_are_found_not_merged(policy) -> None:
    users = [
        UserRecord("a", 1, "", "", {"userName": "bob@example.com"}),
        UserRecord("b", 1, "", "", {"userName": "Bob@other.example"}),
        UserRecord("c", 1, "", "", {"userName": "alice@example.com"}),
        UserRecord("d", 1, "", "", {"userName": "bad name@example.com"}),
    ]
    assert policy.username_collisions("ldap", users) == {"bob": ["a", "b"]}
    assert policy.username_collisions("local", users) == {}
