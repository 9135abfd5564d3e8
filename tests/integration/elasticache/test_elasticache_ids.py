"""ElastiCache user ids: the derivation rules (property-tested) and the registry contract (memory, moto)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from redis_scim import errors
from redis_scim.local.resources import create_resources, load_template
from redis_scim.targets.elasticache_ids import (
    MAX_USER_ID_LENGTH,
    DynamoUserIdRegistry,
    MemoryUserIdRegistry,
    UserIdRegistry,
    claim_user_id,
    derive_user_id,
)

pytestmark = pytest.mark.elasticache

# The CreateUser UserId pattern (botocore model), and the stored-lowercase rule (REDIS_ACL_FACTS.md §2.1).
USER_ID = re.compile(r"[a-z][a-z0-9-]*")


@pytest.mark.parametrize("username", ["svc-payments", "alice", "a1", "team-a-reader"])
def test_a_safe_lowercase_id_is_used_as_it_is(username: str) -> None:
    assert derive_user_id(username) == username


@pytest.mark.parametrize(
    ("username", "slug"),
    [
        ("bjensen@example.com", "bjensen-example-com"),
        ("BJensen", "bjensen"),
        ("Ünïcödé User", "unicode-user"),
        ("42-answers", "u-42-answers"),
        ("日本語", "u"),
        ("trailing-", "trailing"),
        ("double--hyphen", "double-hyphen"),
    ],
)
def test_other_usernames_get_a_readable_slug_and_a_hash(username: str, slug: str) -> None:
    user_id = derive_user_id(username)
    assert re.fullmatch(rf"{re.escape(slug)}-[0-9a-f]{{10}}", user_id), user_id


def test_a_username_shaped_like_a_hashed_id_is_hashed_too() -> None:
    # Otherwise a user named like another's derived id could take that id.
    hashed = derive_user_id("bjensen@example.com")
    assert derive_user_id(hashed) != hashed


def test_case_variants_never_share_an_id() -> None:
    # ElastiCache stores ids lowercase: `BJensen` and `bjensen` would otherwise be one user.
    assert derive_user_id("BJensen") != derive_user_id("bjensen")


def test_an_empty_username_cannot_be_mapped() -> None:
    with pytest.raises(errors.InvalidUsername):
        derive_user_id("")


@given(st.text(min_size=1, max_size=200))
def test_every_username_maps_to_a_valid_stable_id(username: str) -> None:
    user_id = derive_user_id(username)
    assert USER_ID.fullmatch(user_id)
    assert len(user_id) <= MAX_USER_ID_LENGTH
    assert "--" not in user_id and not user_id.endswith("-")
    assert derive_user_id(username) == user_id


@given(st.lists(st.text(min_size=1, max_size=40), min_size=2, max_size=30, unique=True))
def test_distinct_usernames_get_distinct_ids(usernames: list[str]) -> None:
    assert len({derive_user_id(name) for name in usernames}) == len(usernames)


@pytest.fixture(scope="module")
def directory_table_template() -> dict[str, Any]:
    template = load_template()
    template["Resources"] = {"DirectoryTable": template["Resources"]["DirectoryTable"]}  # only what is used
    return template


@pytest.fixture(params=["memory", "dynamodb"])
def registry(
    request: pytest.FixtureRequest, boto_session: boto3.Session, directory_table_template: dict[str, Any]
) -> Iterator[UserIdRegistry]:
    if request.param == "memory":
        yield MemoryUserIdRegistry()
        return
    with mock_aws():
        resources = create_resources(boto_session, template=directory_table_template)
        yield DynamoUserIdRegistry(resources.tables["DirectoryTable"], boto_session.client("dynamodb"))


def test_a_claim_records_the_owner_and_is_idempotent(registry: UserIdRegistry) -> None:
    assert registry.username_of("cache", "alice") is None
    assert registry.claim("cache", "alice", "alice") == "alice"
    assert registry.claim("cache", "alice", "alice") == "alice"
    assert registry.username_of("cache", "alice") == "alice"


def test_a_second_owner_is_refused_and_nothing_changes(registry: UserIdRegistry) -> None:
    registry.claim("cache", "shared-id", "first@example.com")
    assert registry.claim("cache", "shared-id", "second@example.com") == "first@example.com"
    assert registry.username_of("cache", "shared-id") == "first@example.com"


def test_targets_are_independent(registry: UserIdRegistry) -> None:
    registry.claim("cache-a", "alice", "alice")
    assert registry.claim("cache-b", "alice", "Alice") == "Alice"


def test_claim_user_id_maps_and_records_the_reverse_mapping(registry: UserIdRegistry) -> None:
    user_id = claim_user_id(registry, "cache", "bjensen@example.com")
    assert user_id == derive_user_id("bjensen@example.com")
    assert registry.username_of("cache", user_id) == "bjensen@example.com"


def test_claim_user_id_reports_a_collision(registry: UserIdRegistry) -> None:
    # A collision needs two usernames with one derived id; simulate the prior owner directly.
    registry.claim("cache", derive_user_id("bjensen@example.com"), "someone-else")
    with pytest.raises(errors.InvalidUsername, match="already belongs to 'someone-else'"):
        claim_user_id(registry, "cache", "bjensen@example.com")
