"""The access-string normalizer agrees with the engine: what we write equals what Valkey renders back.

ElastiCache reports access strings in the engine's rendering (REDIS_ACL_FACTS.md §2.2), so for random
rule sets the parse of the string we send must equal the parse of Valkey's `ACL LIST` rendering of
it, and two rule sets the engine renders differently must not compare equal.
"""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from valkey_mirror import ADMIN, ADMIN_PASSWORD, Valkey

from redis_scim.targets.elasticache import parse_access_string, split_rules

pytestmark = pytest.mark.elasticache

COMMANDS = [
    "+get",
    "-get",
    "+set",
    "-set",
    "+@read",
    "-@read",
    "+@write",
    "-@write",
    "+config|get",
    "-config|get",
    "+@all",
    "-@all",
    "+GET",
    "+@connection",
    "-flushall",
]
KEYS = ["~a:*", "~b:*", "%R~c:*", "%W~d:*", "%RW~e:*", "allkeys", "resetkeys"]
CHANNELS = ["&x", "&y:*", "allchannels", "resetchannels"]
RULES = st.lists(st.sampled_from(COMMANDS + KEYS + CHANNELS), max_size=8)
# Few rules from a small alphabet: different lists that still compare equal come up often.
SMALL_RULES = st.lists(
    st.sampled_from(["+get", "-get", "+@read", "~a:*", "~c:*", "&x", "allkeys", "resetkeys"]), max_size=4
)


def render(admin: redis.Redis, access_string: str) -> str | None:
    """Valkey's rendering of `access_string` (None when the engine refuses it)."""
    try:
        admin.execute_command("ACL", "SETUSER", "probe", "reset", *split_rules(access_string))
    except redis.ResponseError:
        return None
    line = next(u for u in admin.execute_command("ACL", "LIST") if u.startswith("user probe "))
    return line.removeprefix("user probe ").replace("resetpass ", "")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(root=RULES, selectors=st.lists(RULES.filter(bool), max_size=3), enabled=st.booleans())
def test_what_we_write_parses_like_what_the_engine_renders(
    valkey: Valkey, root: list[str], selectors: list[list[str]], enabled: bool
) -> None:
    access_string = " ".join(
        [
            "on" if enabled else "off",
            "-@all",
            "resetkeys",
            "resetchannels",
            *root,
            *(f"({' '.join(selector)})" for selector in selectors),
        ]
    )
    rendered = render(valkey.client(username=ADMIN, password=ADMIN_PASSWORD), access_string)
    assume(rendered is not None)
    assert rendered is not None
    assert parse_access_string(access_string) == parse_access_string(rendered), rendered


SAMPLES = [
    ("get", "a:1"),
    ("set", "a:1", "v"),
    ("get", "c:1"),
    ("set", "c:1", "v"),
    ("get", "d:1"),
    ("set", "d:1", "v"),
    ("get", "e:1"),
    ("get", "z:1"),
    ("config", "get", "maxmemory"),
    ("config", "set", "maxmemory", "1"),
    ("publish", "x", "m"),
    ("publish", "y:1", "m"),
    ("publish", "w", "m"),
    ("flushall",),
    ("ping",),
]


def allowed(admin: redis.Redis, username: str) -> list[bool]:
    results = []
    for command in SAMPLES:
        try:
            results.append(admin.execute_command("ACL", "DRYRUN", username, *command) == "OK")
        except redis.ResponseError:
            results.append(False)
    return results


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(first=SMALL_RULES, second=SMALL_RULES)
def test_access_strings_that_compare_equal_allow_the_same_commands(
    valkey: Valkey, first: list[str], second: list[str]
) -> None:
    one, two = " ".join(["on", *first]), " ".join(["on", *second])
    assume(parse_access_string(one) == parse_access_string(two))
    admin = valkey.client(username=ADMIN, password=ADMIN_PASSWORD)
    try:
        admin.execute_command("ACL", "SETUSER", "one", "reset", *split_rules(one))
        admin.execute_command("ACL", "SETUSER", "two", "reset", *split_rules(two))
    except redis.ResponseError:
        assume(False)
    assert allowed(admin, "one") == allowed(admin, "two")
