"""The sync engine on real Valkey nodes: onboarding, moves, cut-off, deletion, renames, collisions, drift.

Target `main` has two nodes (ACLs are per node: both must always agree); target `second` has one
node and uses the local part of the userName (so two SCIM users can collide there) and does not
map the Writers group.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sync_world import PASSWORD, Node, World, password_sha256

from redis_scim import errors
from redis_scim.audit import Action, Outcome, verify_chain
from redis_scim.observability import MetricName
from redis_scim.sync.engine import REJECTED_USERNAMES, USERNAME_COLLISIONS


def assert_reader(node: Node, username: str) -> None:
    assert node.dryrun(username, "GET", "cache:1")
    assert not node.dryrun(username, "SET", "cache:1", "v")
    assert not node.dryrun(username, "GET", "other:1")


def assert_writer(node: Node, username: str) -> None:
    assert node.dryrun(username, "SET", "cache:1", "v")
    assert not node.dryrun(username, "SET", "other:1", "v")


def test_onboarding_creates_the_user_on_every_node_limited_to_its_roles(world: World) -> None:
    user = world.create_user("alice")
    world.join(user.id, "Readers")

    result = world.converge(user.id)

    username = user.user_name
    for node in world.main_nodes:
        assert node.can_login(username, PASSWORD)
        assert not node.can_login(username, "wrong-password")
        assert_reader(node, username)
    second = world.nodes["second"]
    assert second.can_login(username.split("@")[0], PASSWORD)
    assert result.cleared and not result.failures
    assert world.directory.user_state(user.id).pending is False  # type: ignore[union-attr]
    records = world.history(user.id)
    assert [(r.target, r.action, r.outcome, r.verified, r.node_count) for r in records] == [
        ("main", Action.CREATE, Outcome.APPLIED, True, 2),
        ("second", Action.CREATE, Outcome.APPLIED, True, 1),
    ]
    assert records[0].redis_username == username and records[0].acl_before is None
    assert records[0].acl_after and "~cache:*" in records[0].acl_after
    assert password_sha256(PASSWORD) not in str([r.to_json() for r in records])
    assert verify_chain(records).ok
    assert world.metrics.count(MetricName.PROVISIONED) == 2


def test_a_user_without_a_password_exists_but_cannot_log_in(world: World) -> None:
    user = world.create_user("nopass", password=None)
    world.join(user.id, "Readers")
    world.converge(user.id)
    for node in world.main_nodes:
        assert node.has_user(user.user_name)
        assert not node.can_login(user.user_name, "")
        assert not node.can_login(user.user_name, "anything")


def test_moving_between_groups_changes_rights_on_every_node(world: World) -> None:
    user = world.create_user("mover")
    world.join(user.id, "Readers")
    world.converge(user.id)
    world.leave(user.id, "Readers")
    world.join(user.id, "Writers")

    world.converge(user.id)

    for node in world.main_nodes:
        assert_writer(node, user.user_name)
    # `second` does not map Writers: the user lost every role there and is removed.
    assert not world.nodes["second"].has_user(user.user_name.split("@")[0])
    actions = [(r.target, r.action) for r in world.history(user.id)[2:]]
    assert sorted(actions) == [("main", Action.UPDATE), ("second", Action.DELETE)]


def test_deactivation_drops_authenticated_connections_on_every_node_and_blocks_logins(world: World) -> None:
    user = world.create_user("leaver")
    world.join(user.id, "Readers")
    world.converge(user.id)
    sessions = [node.login(user.user_name, PASSWORD) for node in world.main_nodes]

    world.set_active(user, False)
    world.converge(user.id)

    for session in sessions:
        try:
            session.get("cache:1")
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError("an authenticated connection survived the deactivation")
    for node in world.main_nodes:
        assert node.has_user(user.user_name)
        assert not node.can_login(user.user_name, PASSWORD)
    disable = [r for r in world.history(user.id) if r.action is Action.DISABLE]
    assert {r.target for r in disable} == {"main", "second"}
    assert all(r.verified and r.outcome is Outcome.APPLIED for r in disable)
    assert world.metrics.count(MetricName.DEPROVISIONED) == 2
    assert world.metrics.count(MetricName.DEPROVISION_LATENCY) == 2

    world.set_active(user, True)
    world.converge(user.id)
    for node in world.main_nodes:
        assert node.can_login(user.user_name, PASSWORD)
        assert_reader(node, user.user_name)


def test_deletion_removes_the_user_everywhere_and_releases_its_names(world: World) -> None:
    user = world.create_user("gone")
    world.join(user.id, "Readers")
    world.converge(user.id)
    session = world.nodes["replica"].login(user.user_name, PASSWORD)

    world.directory.delete_user(user.id, expected_version=None, cause=world.cause("DELETE /Users"))
    result = world.converge(user.id)

    assert result.cleared
    for node in world.main_nodes:
        assert not node.has_user(user.user_name)
    assert not world.nodes["second"].has_user(user.user_name.split("@")[0])
    try:
        session.ping()
    except redis.ConnectionError:
        pass
    else:
        raise AssertionError("a connection of a deleted user survived")
    assert world.directory.user_state(user.id) is None
    assert world.ledger.held(user.id) == {}
    entry = world.ledger.owner("main", user.user_name)
    assert entry is not None and entry.released and entry.user_id == user.id
    deletes = [r for r in world.history(user.id) if r.action is Action.DELETE]
    assert len(deletes) == 2 and all(r.verified and r.reason == "user deleted" for r in deletes)
    # A message for a user whose tombstone is gone is a harmless no-op.
    assert world.converge(user.id).version is None


def test_rename_removes_the_old_username(world: World) -> None:
    user = world.create_user("before")
    world.join(user.id, "Readers")
    world.converge(user.id)
    old = user.user_name

    renamed = world.rename(user, "after")
    world.converge(user.id)

    for node in world.main_nodes:
        assert not node.has_user(old)
        assert node.can_login(renamed.user_name, PASSWORD)
    assert world.ledger.held(user.id) == {
        "main": frozenset({renamed.user_name}),
        "second": frozenset({renamed.user_name.split("@")[0]}),
    }
    main = [r for r in world.history(user.id) if r.target == "main"][1:]
    assert [(r.action, r.redis_username) for r in main] == [
        (Action.CREATE, renamed.user_name),
        (Action.DELETE, old),
    ]
    assert main[1].reason == f"renamed to {renamed.user_name!r}"


def test_a_username_collision_is_rejected_and_never_merged(world: World) -> None:
    first = world.create_user("bob")
    world.join(first.id, "Readers")
    world.converge(first.id)
    local_part = first.user_name.split("@")[0]
    second_node = world.nodes["second"]
    before = second_node.admin().execute_command("ACL", "GETUSER", local_part)

    other = world.directory.create_user(
        {"userName": f"{local_part}@other.example.org"},
        password_sha256=password_sha256("other-password"),
        cause=world.cause("POST /Users"),
    )
    world.join(other.id, "Readers")
    result = world.converge(other.id)

    assert result.cleared  # retrying cannot help: the message succeeds, the rejection is audited
    assert second_node.admin().execute_command("ACL", "GETUSER", local_part) == before
    assert second_node.can_login(local_part, PASSWORD)
    assert not second_node.can_login(local_part, "other-password")
    records = world.history(other.id)
    rejected = [r for r in records if r.target == "second"]
    assert [(r.action, r.outcome, r.verified) for r in rejected] == [
        (Action.SKIPPED, Outcome.REJECTED, False)
    ]
    assert first.id in (rejected[0].reason or "")
    assert [r.action for r in records if r.target == "main"] == [Action.CREATE]  # no collision there
    assert world.metrics.count(USERNAME_COLLISIONS) == 1


def test_an_unsafe_username_is_rejected_without_touching_the_target(world: World) -> None:
    user = world.directory.create_user(
        {"userName": f"scimtest {world.run} spaced"}, password_sha256=None, cause=world.cause("POST /Users")
    )
    world.join(user.id, "Readers")
    users_before = set(world.nodes["main"].admin().execute_command("ACL", "USERS"))

    result = world.converge(user.id)

    assert result.cleared and not result.failures
    assert set(world.nodes["main"].admin().execute_command("ACL", "USERS")) == users_before
    records = world.history(user.id)
    assert {(r.target, r.outcome) for r in records} == {
        ("main", Outcome.REJECTED),
        ("second", Outcome.REJECTED),
    }
    assert world.metrics.count(REJECTED_USERNAMES) == 2


def test_duplicate_and_stale_messages_are_harmless(world: World) -> None:
    user = world.create_user("dup")
    world.join(user.id, "Readers")
    world.converge(user.id)
    records = len(world.history(user.id))

    again = world.converge(user.id)  # a duplicate delivery
    assert again.results == [] and len(world.history(user.id)) == records

    world.leave(user.id, "Readers")
    world.join(user.id, "Writers")
    world.converge(user.id)
    world.converge(user.id)  # an old message replayed after the newer one: converges to the current state
    for node in world.main_nodes:
        assert_writer(node, user.user_name)


def test_a_hand_edited_user_is_restored_on_the_next_message(world: World) -> None:
    user = world.create_user("edited")
    world.join(user.id, "Readers")
    world.converge(user.id)
    world.nodes["replica"].admin().execute_command("ACL", "SETUSER", user.user_name, "+@all", "~*")
    assert world.nodes["replica"].dryrun(user.user_name, "FLUSHALL")

    world.converge(user.id)

    for node in world.main_nodes:
        assert not node.dryrun(user.user_name, "FLUSHALL")
        assert_reader(node, user.user_name)
    last = world.history(user.id)[-1]
    assert (last.target, last.action, last.verified) == ("main", Action.UPDATE, True)
    assert "+@all" in (last.acl_before or "")


def test_a_node_restarted_empty_is_repaired(world: World) -> None:
    user = world.create_user("restart")
    world.join(user.id, "Readers")
    world.converge(user.id)
    replica = world.nodes["replica"]
    replica.restart_empty()
    assert not replica.has_user(user.user_name)

    world.converge(user.id)

    assert replica.can_login(user.user_name, PASSWORD)
    last = world.history(user.id)[-1]
    assert (last.action, last.verified) == (Action.UPDATE, True)
    assert "absent on" in (last.reason or "")


def test_a_target_down_fails_the_message_while_the_other_target_converges(world: World) -> None:
    user = world.create_user("outage")
    world.join(user.id, "Readers")
    second = world.nodes["second"]
    second.stop()
    try:
        try:
            world.converge(user.id)
        except errors.SyncIncomplete as failure:
            assert set(failure.failures) == {"second"}
        else:
            raise AssertionError("a converge with a target down must fail")
        for node in world.main_nodes:
            assert node.can_login(user.user_name, PASSWORD)
        assert world.directory.user_state(user.id).pending is True  # type: ignore[union-attr]
        assert world.metrics.count(MetricName.APPLY_FAILURES) >= 1
    finally:
        second.start()

    result = world.converge(user.id)  # the retry
    assert result.cleared
    assert second.can_login(user.user_name.split("@")[0], PASSWORD)


def test_an_unknown_user_is_a_no_op(world: World) -> None:
    result = world.converge("no-such-user")
    assert result.version is None and result.results == [] and not result.cleared


def test_a_name_released_by_a_deleted_user_waits_for_its_deprovisioning(world: World) -> None:
    old = world.create_user("heir")
    world.join(old.id, "Readers")
    world.converge(old.id)
    world.directory.delete_user(old.id, expected_version=None, cause=world.cause("DELETE /Users"))
    # The same userName comes back as a new SCIM user before the deletion was applied.
    new = world.create_user("heir")
    world.join(new.id, "Readers")

    try:
        world.converge(new.id)
    except errors.SyncIncomplete as failure:
        assert "UsernameHeld" in failure.failures["main"]
    else:
        raise AssertionError("the name is still held by the deleted user")

    world.converge(old.id)
    assert world.converge(new.id).cleared
    for node in world.main_nodes:
        assert node.can_login(new.user_name, PASSWORD)


def _round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command or pipeline any client sends from now on, by name."""
    sent: list[str] = []
    send_command, send_pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def command(self: redis.Redis, *args: Any, **options: Any) -> Any:
        sent.append(" ".join(str(arg) for arg in args[:2]))
        return send_command(self, *args, **options)

    def pipeline(self: redis.client.Pipeline, *args: Any, **options: Any) -> Any:
        sent.append("pipeline")
        return send_pipeline(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline)
    return sent


def test_a_batch_converges_many_users_in_a_few_round_trips_each_audited_on_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [world.create_user(f"bulk{index}") for index in range(20)]
    for index, user in enumerate(users):
        world.join(user.id, "Writers" if index % 2 else "Readers")
    sent = _round_trips(monkeypatch)

    with world.engine.batch([user.id for user in users]):
        ahead = len(sent)
        results = [world.converge(user.id) for user in users]
        assert sent[ahead:] == []  # each user's converge found its write already made and read back

    assert all(result.cleared and not result.failures for result in results)
    # Per target: nodes, one read, one write, one read-back (+ normalizing each distinct role set),
    # then one save: not a round trip per user.
    assert len(sent) < 30
    for user in users:
        records = world.history(user.id)
        assert [(r.target, r.action, r.outcome, r.verified) for r in records if r.target == "main"] == [
            ("main", Action.CREATE, Outcome.APPLIED, True)
        ]
        assert verify_chain(records).ok
        for node in world.main_nodes:
            assert node.can_login(user.user_name, PASSWORD)


def test_a_failed_batch_write_leaves_each_user_to_fail_and_be_audited_on_its_own(world: World) -> None:
    users = [world.create_user(f"bulkdown{index}") for index in range(3)]
    for user in users:
        world.join(user.id, "Readers")
    replica = world.nodes["replica"]
    replica.stop()
    try:
        with world.engine.batch([user.id for user in users]):
            for user in users:
                try:
                    world.converge(user.id)
                except errors.SyncIncomplete as failure:
                    assert set(failure.failures) == {"main"}
                else:
                    raise AssertionError("a node of `main` is down: the user cannot converge there")
    finally:
        replica.start()
    for user in users:
        assert world.directory.user_state(user.id).pending is True  # type: ignore[union-attr]
        # The node could not even be read: nothing was written there, so nothing is audited for it.
        assert [r.target for r in world.history(user.id)] == ["second"]

    with world.engine.batch([user.id for user in users]):
        assert all(world.converge(user.id).cleared for user in users)
    for node in world.main_nodes:
        assert all(node.can_login(user.user_name, PASSWORD) for user in users)


def test_a_disabled_user_in_a_batch_still_has_its_sessions_cut_and_verified(world: World) -> None:
    user = world.create_user("bulkoff")
    world.join(user.id, "Readers")
    world.converge(user.id)
    sessions = [node.login(user.user_name, PASSWORD) for node in world.main_nodes]
    world.set_active(user, False)

    with world.engine.batch([user.id]):
        world.converge(user.id)

    for session in sessions:
        with pytest.raises(redis.ConnectionError):
            session.ping()
    last = [r for r in world.history(user.id) if r.target == "main"][-1]
    assert (last.action, last.outcome, last.verified) == (Action.DISABLE, Outcome.APPLIED, True)
