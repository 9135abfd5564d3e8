"""The Redis target's core behaviour on every deployment shape: standalone Valkey, Redis OSS 7.0, a
primary+replica pair, a 3-primary cluster with a replica, and REDIS_URL when set.

Each test checks the outcome on every node with its own admin connection, never through the
target under test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis
from conftest import Cluster, ReplicaPair, ServerProcess

from redis_scim.targets import NodeAcl
from redis_scim.targets.redis import RedisTarget

PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hashlib.sha256(PASSWORD.encode()).hexdigest()
READER = "+@read +@connection ~cache:*"
# -@dangerous matters: FLUSHALL is in @write and takes no key, so a key pattern does not limit it.
WRITER = "+@write -@dangerous +@connection ~sessions:*"


def user_rules(*, enabled: bool = True) -> list[str]:
    return ["reset", "on" if enabled else "off", f"#{PASSWORD_HASH}", f"({READER})", f"({WRITER})"]


@dataclass
class Deployment:
    """A target's URL, its extra node URLs, and an admin client per node address."""

    url: str
    extra_nodes: tuple[str, ...] = ()
    admins: dict[str, redis.Redis] = field(default_factory=dict)

    def target(self, **options: object) -> RedisTarget:
        return RedisTarget("test", self.url, nodes=self.extra_nodes, **options)  # type: ignore[arg-type]

    def connect_as(self, address: str, username: str, password: str = PASSWORD) -> redis.Redis:
        """A new connection authenticated as `username` (raises AuthenticationError if refused)."""
        host, port = address.rsplit(":", 1)
        client = redis.Redis(
            host=host, port=int(port), username=username, password=password, socket_timeout=2, retry=None
        )
        client.ping()
        return client


def _from_servers(servers: list[ServerProcess], extra: tuple[str, ...] = ()) -> Deployment:
    return Deployment(
        url=servers[0].url, extra_nodes=extra, admins={server.address: server.client() for server in servers}
    )


@pytest.fixture(scope="module", params=["standalone", "redis7", "replica-pair", "cluster", "redis-url"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    if request.param == "standalone":
        found = _from_servers([request.getfixturevalue("standalone_valkey")])
    elif request.param == "redis7":
        found = _from_servers([request.getfixturevalue("standalone_redis7")])
    elif request.param == "replica-pair":
        pair: ReplicaPair = request.getfixturevalue("valkey_replica_pair")
        found = _from_servers(pair.nodes, extra=(pair.replica.address,))
    elif request.param == "cluster":
        cluster: Cluster = request.getfixturevalue("valkey_cluster")
        found = _from_servers(cluster.nodes)
    else:
        url = request.getfixturevalue("redis_url")
        admin = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)
        where = admin.connection_pool.connection_kwargs
        address = f"{where['host']}:{where['port']}"
        found = Deployment(url=url, admins={address: admin})
    yield found
    for admin in found.admins.values():
        admin.close()


@pytest.fixture
def target(deployment: Deployment) -> Iterator[RedisTarget]:
    target = deployment.target()
    yield target
    target.close()


@pytest.fixture
def username(deployment: Deployment, unique_username: Callable[[str], str]) -> Iterator[str]:
    """A fresh username, removed from every node afterwards (shared servers stay clean)."""
    name = unique_username("u")
    yield name
    for admin in deployment.admins.values():
        admin.execute_command("ACL", "DELUSER", name)


def dryrun(admin: redis.Redis, username: str, *command: str) -> bool:
    try:
        return admin.execute_command("ACL", "DRYRUN", username, *command) == "OK"
    except redis.ResponseError:
        return False


def is_connected(client: redis.Redis) -> bool:
    try:
        client.ping()
        return True
    except redis.ConnectionError:
        return False


def test_every_node_is_discovered(deployment: Deployment, target: RedisTarget) -> None:
    assert sorted(target.nodes()) == sorted(deployment.admins)


def test_a_written_user_can_log_in_on_every_node_and_is_limited_to_its_rules(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())

    for address, admin in deployment.admins.items():
        with deployment.connect_as(address, username) as session:
            assert session.ping()
            # ACLs are checked before cluster redirection, so this holds on any node.
            with pytest.raises(redis.exceptions.NoPermissionError):
                session.set("cache:1", "v")
        assert dryrun(admin, username, "GET", "cache:1")
        assert dryrun(admin, username, "SET", "sessions:1", "v")
        # Read on cache:* plus write on sessions:* never becomes write on cache:* (one selector per role).
        assert not dryrun(admin, username, "SET", "cache:1", "v")
        assert not dryrun(admin, username, "GET", "other:1")
        assert not dryrun(admin, username, "FLUSHALL")


def test_rewriting_a_user_replaces_its_rules_instead_of_adding_to_them(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())
    target.write_user(username, ["reset", "on", f"#{PASSWORD_HASH}", f"({READER})"])

    for admin in deployment.admins.values():
        assert dryrun(admin, username, "GET", "cache:1")
        assert not dryrun(admin, username, "SET", "sessions:1", "v")


def test_read_back_of_a_fresh_write_equals_its_canonical_form(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())

    read = target.read_users([username])

    assert set(read[username]) == set(deployment.admins)
    expected = target.canonical(user_rules())
    assert all(acl == expected for acl in read[username].values())


def test_canonical_form_ignores_textual_differences_that_do_not_change_rights(target: RedisTarget) -> None:
    written = target.canonical(["reset", "on", f"#{PASSWORD_HASH}", f"({READER})", f"({WRITER})"])
    # Selectors in another order, key patterns before commands, the password in clear, no `reset`.
    reordered = target.canonical(
        [
            "on",
            f">{PASSWORD}",
            "(~sessions:* +@write -@dangerous +@connection)",
            "(~cache:* +@read +@connection)",
        ]
    )
    assert written == reordered


def test_canonical_form_tells_apart_rights_passwords_and_state(target: RedisTarget) -> None:
    base = target.canonical(user_rules())
    assert target.canonical(["reset", "on", f"#{PASSWORD_HASH}", f"({READER})"]) != base
    assert target.canonical(["reset", "on", f">{PASSWORD}x", f"({READER})", f"({WRITER})"]) != base
    assert target.canonical(user_rules(enabled=False)) != base
    assert target.canonical(["reset", "on", "nopass", f"({READER})", f"({WRITER})"]) != base


def test_a_hand_edited_user_reads_as_different_on_the_edited_node_only(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())
    edited, edited_admin = next(iter(deployment.admins.items()))
    edited_admin.execute_command("ACL", "SETUSER", username, "+@all")

    read = target.read_users([username])[username]

    expected = target.canonical(user_rules())
    assert read[edited] != expected
    assert all(acl == expected for node, acl in read.items() if node != edited)


def test_absent_users_read_as_none_on_every_node(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    assert target.read_users([username]) == {username: dict.fromkeys(deployment.admins)}


def test_reads_are_chunked_and_still_return_every_user(
    deployment: Deployment, unique_username: Callable[[str], str]
) -> None:
    names = [unique_username(f"chunk{index}") for index in range(7)]
    target = deployment.target(read_chunk=3)
    try:
        for name in names[:5]:
            target.write_user(name, user_rules())
        read = target.read_users(names)
        assert set(read) == set(names)
        assert all(isinstance(acl, NodeAcl) for name in names[:5] for acl in read[name].values())
        assert all(acl is None for name in names[5:] for acl in read[name].values())
        assert all(set(names[:5]) <= found for found in target.list_usernames().values())
    finally:
        for admin in deployment.admins.values():
            admin.execute_command("ACL", "DELUSER", *names)
        target.close()


def test_a_batch_writes_and_deletes_many_users_on_every_node_in_chunks(
    deployment: Deployment, unique_username: Callable[[str], str]
) -> None:
    names = [unique_username(f"batch{index}") for index in range(7)]
    target = deployment.target()
    try:
        for name in names[5:]:
            target.write_user(name, user_rules())
        reader_only = ["on", f"#{PASSWORD_HASH}", f"({READER})"]  # no `reset`: the batch adds it
        changes: dict[str, list[str] | None] = {name: reader_only for name in names[:5]}
        changes |= dict.fromkeys(names[5:])

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("redis_scim.targets.redis.WRITE_CHUNK", 2)  # 7 commands: 4 round trips
            target.apply_batch(changes)

        read = target.read_users(names)
        expected = target.canonical(["reset", *reader_only])
        for address, admin in deployment.admins.items():
            assert all(read[name][address] == expected for name in names[:5])
            assert all(read[name][address] is None for name in names[5:])
            assert dryrun(admin, names[0], "GET", "cache:1")
            assert not dryrun(admin, names[0], "SET", "sessions:1", "v")
    finally:
        for admin in deployment.admins.values():
            admin.execute_command("ACL", "DELUSER", *names)
        target.close()


def test_large_reads_and_batches_go_in_pipelines_sized_to_hold_a_node_briefly(
    deployment: Deployment, unique_username: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [unique_username(f"sized{index}") for index in range(40)]
    target = deployment.target()
    sizes: dict[int, list[int]] = {}  # node port -> commands per pipeline
    execute = redis.client.Pipeline.execute

    def counted(pipe: redis.client.Pipeline, *args: object, **options: object) -> object:
        port = pipe.connection_pool.connection_kwargs["port"]
        sizes.setdefault(port, []).append(len(pipe.command_stack))
        return execute(pipe, *args, **options)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    try:
        # Commands far below the bound: a first small pipeline times them, one more takes the rest.
        monkeypatch.setattr("redis_scim.targets.redis.MAX_ROUND_TRIP", 10.0)
        target.apply_batch(dict.fromkeys(names, user_rules()))
        assert len(sizes) == len(deployment.admins)
        assert all(per_node == [16, 24] for per_node in sizes.values())
        sizes.clear()
        # Commands above the bound (a slow node): one per round trip after the first pipeline.
        monkeypatch.setattr("redis_scim.targets.redis.MAX_ROUND_TRIP", 1e-9)
        read = target.read_users(names)
        assert all(per_node == [16] + [1] * 24 for per_node in sizes.values())
        assert all(acl is not None for per_node in read.values() for acl in per_node.values())
    finally:
        for admin in deployment.admins.values():
            admin.execute_command("ACL", "DELUSER", *names)
        target.close()


def test_off_plus_disconnect_drops_live_sessions_on_every_node_and_blocks_new_logins(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())
    sessions = {address: deployment.connect_as(address, username) for address in deployment.admins}

    target.write_user(username, user_rules(enabled=False))
    # `off` alone leaves authenticated connections working: that is why disconnect_user exists.
    assert all(is_connected(session) for session in sessions.values())
    assert not target.verify_revoked(username, deleted=False)

    closed = target.disconnect_user(username)

    assert closed == len(sessions)
    assert not any(is_connected(session) for session in sessions.values())
    for address in deployment.admins:
        with pytest.raises(redis.AuthenticationError):
            deployment.connect_as(address, username)
    assert target.verify_revoked(username, deleted=False)
    assert not target.verify_revoked(username, deleted=True)  # it still exists (off)


def test_delete_drops_live_sessions_on_every_node(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())
    sessions = {address: deployment.connect_as(address, username) for address in deployment.admins}
    assert not target.verify_revoked(username, deleted=True)

    target.delete_user(username)

    assert not any(is_connected(session) for session in sessions.values())
    assert target.verify_revoked(username, deleted=True)
    assert all(acl is None for acl in target.read_users([username])[username].values())
    # Deleting or disconnecting an absent user is not an error.
    target.delete_user(username)
    assert target.disconnect_user(username) == 0


def test_revocation_is_not_verified_while_one_node_still_allows_the_user(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())
    target.delete_user(username)
    lagging_address, lagging_admin = list(deployment.admins.items())[-1]
    lagging_admin.execute_command("ACL", "SETUSER", username, *user_rules())

    assert not target.verify_revoked(username, deleted=True)
    assert not target.verify_revoked(username, deleted=False)

    lagging_admin.execute_command("ACL", "SETUSER", username, "off")
    assert target.verify_revoked(username, deleted=False)
    assert lagging_address in target.nodes()


def test_revocation_is_not_verified_while_a_connection_of_the_user_remains(
    deployment: Deployment, target: RedisTarget, username: str
) -> None:
    target.write_user(username, user_rules())
    address = next(iter(deployment.admins))
    session = deployment.connect_as(address, username)
    target.write_user(username, user_rules(enabled=False))

    assert not target.verify_revoked(username, deleted=False)

    target.disconnect_user(username)
    assert not is_connected(session)
    assert target.verify_revoked(username, deleted=False)
