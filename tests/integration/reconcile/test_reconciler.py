"""The reconciler on real Valkey nodes: ghosts per policy, allow-listed users, drift, restarted nodes,
deletions and deactivations missed by the applier, stale pending markers, a target that is down."""

from __future__ import annotations

from typing import Any

import pytest
from reconcile_world import PASSWORD, World, WorldFactory, free_port, is_connected

from redis_scim.audit import Action, Outcome, verify_chain
from redis_scim.errors import PolicyError
from redis_scim.sync.reconcile import GHOST_USER_PREFIX, RECONCILER, Finding, ReconcileReport, publish_metrics


def findings(report: ReconcileReport, world: World) -> set[tuple[str, str, str]]:
    """(target, username, finding) of this test's usernames."""
    return {(d.target, d.username, str(d.finding)) for d in report.discrepancies if world.run in d.username}


def test_a_ghost_is_reported_and_left_alone_under_ghosts_report(make_world: WorldFactory) -> None:
    world = make_world(ghosts="report")
    ghost = world.ghost("ghost")
    client = world.nodes["main"].login(ghost, PASSWORD)

    report = world.reconcile()

    assert findings(report, world) == {("main", ghost, "ghost")}
    [repair] = [r for r in report.targets[0].repairs if r.subject == ghost]
    assert (repair.action, repair.ok) == ("report", True)
    assert all(node.can_login(ghost, PASSWORD) for node in world.main_nodes)
    assert is_connected(client)
    assert world.history(f"{GHOST_USER_PREFIX}main:{ghost}") == []


def test_a_ghost_is_disabled_keeping_its_rules_and_its_connections_dropped(make_world: WorldFactory) -> None:
    world = make_world(ghosts="disable")
    ghost = world.ghost("ghost")
    clients = [node.login(ghost, PASSWORD) for node in world.main_nodes]

    report = world.reconcile()

    [repair] = [r for r in report.targets[0].repairs if r.subject == ghost]
    assert (repair.action, repair.ok) == ("disable", True)
    for node, client in zip(world.main_nodes, clients, strict=True):
        assert not is_connected(client)
        assert not node.can_login(ghost, PASSWORD)
        assert "off" in node.acl("GETUSER", ghost)["flags"]
        assert node.dryrun(ghost, "SET", "any", "v")  # its rules are kept for whoever adopts it
    [record] = world.history(f"{GHOST_USER_PREFIX}main:{ghost}")
    assert (record.action, record.outcome, record.verified, record.node_count) == (
        Action.DISABLE,
        Outcome.APPLIED,
        True,
        2,
    )
    assert record.cause.operation == RECONCILER and record.cause.actor.user_agent == RECONCILER
    assert record.acl_before is not None and record.acl_before.startswith("on ")
    assert record.acl_after is not None and record.acl_after.startswith("off ")

    again = world.reconcile()  # still a ghost, but nothing more to do
    [repeat] = [r for r in again.targets[0].repairs if r.subject == ghost]
    assert (repeat.action, repeat.ok) == ("none", True)
    assert len(world.history(f"{GHOST_USER_PREFIX}main:{ghost}")) == 1


def test_a_ghost_is_deleted_on_every_node_with_its_connections(make_world: WorldFactory) -> None:
    world = make_world(ghosts="delete")
    ghost = world.ghost("ghost", on=("replica",))
    client = world.nodes["replica"].login(ghost, PASSWORD)

    report = world.reconcile()

    assert ("main", ghost, "ghost") in findings(report, world)
    assert not is_connected(client)
    assert all(ghost not in node.users() for node in world.main_nodes)
    [record] = world.history(f"{GHOST_USER_PREFIX}main:{ghost}")
    assert (record.action, record.outcome, record.verified) == (Action.DELETE, Outcome.APPLIED, True)
    assert world.reconcile().discrepancies == []


def test_allow_listed_users_and_default_are_never_touched(make_world: WorldFactory) -> None:
    world = make_world(ghosts="delete", allow=("default", "rectest-breakglass"))
    for node in world.main_nodes:
        node.acl("SETUSER", "rectest-breakglass", "on", f">{PASSWORD}", "~*", "+@all")
    try:
        report = world.reconcile()
        assert not [d for d in report.discrepancies if d.username in ("default", "rectest-breakglass")]
        for node in world.main_nodes:
            assert node.can_login("rectest-breakglass", PASSWORD)
            assert "default" in node.users()
    finally:
        for node in world.main_nodes:
            node.acl("DELUSER", "rectest-breakglass")


def test_a_hand_edited_managed_user_is_restored_and_audited(make_world: WorldFactory) -> None:
    world = make_world()
    user = world.create_user("alice")
    replica = world.nodes["replica"]
    replica.acl("SETUSER", user.user_name, "+@write", "~*")
    assert replica.dryrun(user.user_name, "SET", "other", "v")

    plan = world.plan()
    assert findings(plan, world) == {("main", user.user_name, "drifted")}
    [drift] = plan.discrepancies
    assert "127.0.0.1:" in drift.detail and PASSWORD not in drift.detail

    world.reconcile()

    assert not replica.dryrun(user.user_name, "SET", "other", "v")
    assert replica.dryrun(user.user_name, "GET", "cache:1")
    records = world.history(user.id)
    assert [(r.action, r.outcome, r.verified, r.cause.operation) for r in records[-1:]] == [
        (Action.UPDATE, Outcome.APPLIED, True, RECONCILER)
    ]
    assert verify_chain(records).ok
    assert findings(world.plan(), world) == set()


def test_rules_of_users_not_changed_lately_are_read_from_the_ring_within_the_budget(
    make_world: WorldFactory,
) -> None:
    world = make_world()
    user = world.create_user("old")
    world.nodes["main"].acl("SETUSER", user.user_name, "+@write")
    later = 2 * 3600.0  # the user's last change is no longer recent

    no_time = world.reconciler(later=later, rules_budget_seconds=0).plan()
    assert findings(no_time, world) == set()
    assert no_time.targets[0].rules_read == 0

    ring = world.reconciler(later=later).plan()
    assert findings(ring, world) == {("main", user.user_name, "drifted")}
    assert world.reconciler(later=later, rules_budget_seconds=0).plan(all_rules=True).discrepancies


def test_a_node_restarted_empty_is_repaired(make_world: WorldFactory) -> None:
    world = make_world()
    users = [world.create_user(label) for label in ("a", "b")]
    replica = world.nodes["replica"]
    replica.restart_empty()

    plan = world.plan()
    assert findings(plan, world) == {("main", u.user_name, "node-divergent") for u in users}

    report = world.reconcile()

    assert not report.failed_repairs
    for user in users:
        assert replica.can_login(user.user_name, PASSWORD)
        assert world.history(user.id)[-1].cause.operation == RECONCILER
    assert findings(world.plan(), world) == set()


def test_a_user_deleted_while_the_applier_was_down_is_removed(make_world: WorldFactory) -> None:
    world = make_world()
    user = world.create_user("gone")
    client = world.nodes["main"].login(user.user_name, PASSWORD)
    world.directory.delete_user(user.id, expected_version=None, cause=world.cause("DELETE /Users"))

    plan = world.plan()
    assert findings(plan, world) == {
        ("main", user.user_name, "stale"),
        ("second", user.user_name, "stale"),
    }

    world.reconcile()

    assert not is_connected(client)
    for node in world.nodes.values():
        assert user.user_name not in node.users()
    deletes = [r for r in world.history(user.id) if r.action is Action.DELETE]
    assert {(r.target, r.verified, r.cause.operation) for r in deletes} == {
        ("main", True, RECONCILER),
        ("second", True, RECONCILER),
    }
    assert world.ledger.held(user.id) == {}
    assert findings(world.plan(), world) == set()


def test_a_deactivated_user_still_on_is_stale_and_cut_off(make_world: WorldFactory) -> None:
    world = make_world()
    user = world.create_user("quit")
    client = world.nodes["replica"].login(user.user_name, PASSWORD)
    world.set_active(user, False)

    assert ("main", user.user_name, "stale") in findings(world.plan(), world)
    world.reconcile()

    assert not is_connected(client)
    assert not any(node.can_login(user.user_name, PASSWORD) for node in world.main_nodes)


def test_a_formerly_managed_user_recreated_by_hand_is_stale_not_a_ghost(make_world: WorldFactory) -> None:
    world = make_world(ghosts="report")
    user = world.create_user("former")
    world.directory.delete_user(user.id, expected_version=None, cause=world.cause("DELETE /Users"))
    world.engine.converge(user.id, world.cause())  # deprovisioned and the tombstone cleared
    world.nodes["main"].acl("SETUSER", user.user_name, "on", f">{PASSWORD}", "+@all", "~*")
    world.nodes["replica"].acl("SETUSER", user.user_name, "on", f">{PASSWORD}", "+@all", "~*")

    plan = world.plan()
    assert findings(plan, world) == {("main", user.user_name, "stale")}

    world.reconcile()
    assert all(user.user_name not in node.users() for node in world.main_nodes)
    assert world.history(user.id)[-1].reason == "stale: formerly managed; released"


def test_a_stale_pending_marker_is_redriven(make_world: WorldFactory) -> None:
    world = make_world()
    user = world.create_user("lost", converge=False)  # its change message was lost
    assert world.directory.user_state(user.id).pending  # type: ignore[union-attr]

    fresh = world.reconcile()  # a marker younger than the grace period is the applier's
    assert not [r for r in fresh.redriven if r.subject == user.id]

    report = world.reconcile(later=600)

    assert [(r.subject, r.ok) for r in report.redriven if r.subject == user.id] == [(user.id, True)]
    assert world.directory.user_state(user.id).pending is False  # type: ignore[union-attr]
    assert all(node.can_login(user.user_name, PASSWORD) for node in world.main_nodes)


def test_a_target_that_is_down_is_reported_and_the_others_reconcile(make_world: WorldFactory) -> None:
    world = make_world(ghosts="delete", down_url=f"redis://127.0.0.1:{free_port()}")
    ghost = world.ghost("ghost")

    report = world.reconcile()

    down = {r.target: r for r in report.targets}["down"]
    assert down.unreachable is not None and "down" in down.unreachable
    assert [r.target for r in report.unreachable] == ["down"]
    assert all(ghost not in node.users() for node in world.main_nodes)
    sent: list[tuple[str, float, dict[str, str]]] = []
    publish_metrics(report, lambda name, value, unit, dims: sent.append((name, value, dict(dims))))
    assert ("TargetsUnreachable", 1, {}) in sent
    assert ("GhostsFound", 1, {"target": "main"}) in sent
    assert ("DriftFound", 0, {"class": "missing"}) in sent
    assert any(name == "ReconcileDuration" for name, _, _ in sent)


def test_a_missing_user_is_created_and_an_unknown_target_is_refused(make_world: WorldFactory) -> None:
    world = make_world()
    user = world.create_user("new", converge=False)
    world.directory.clear_pending(user.id, version=world.directory.get_user(user.id).version)

    assert findings(world.plan(), world) == {
        ("main", user.user_name, "missing"),
        ("second", user.user_name, "missing"),
    }
    report = world.reconciler().reconcile(["second"])
    assert [r.target for r in report.targets] == ["second"]
    assert world.nodes["second"].can_login(user.user_name, PASSWORD)
    assert not world.nodes["main"].can_login(user.user_name, PASSWORD)
    assert report.counts()[str(Finding.MISSING)] == 1

    with pytest.raises(PolicyError, match="unknown target 'nope'"):
        world.reconciler().plan(["nope"])


def test_a_run_nearing_its_time_limit_defers_the_rest_and_still_reports(
    make_world: WorldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    users = [world.create_user(f"late{index}", converge=False) for index in range(5)]
    for user in users:  # missed by the applier, and not yet stale enough to be re-driven
        world.directory.clear_pending(user.id, version=world.directory.get_user(user.id).version)
    monkeypatch.setattr("redis_scim.sync.reconcile.REPAIR_BATCH", 2)  # the time is checked per batch
    checks = iter([600.0] * 2)  # seconds left at each check: enough for two batches, then 30 s

    report = world.reconciler().reconcile(time_left=lambda: next(checks, 30.0))

    by_target = {r.target: r for r in report.targets}
    assert (by_target["main"].deferred, by_target["second"].deferred, report.deferred) == (1, 5, 6)
    assert report.failed_repairs == []
    assert sum(world.nodes["main"].can_login(user.user_name, PASSWORD) for user in users) == 4
    assert all(r.action == "create" and r.ok for r in by_target["main"].repairs)
    sent: list[tuple[str, float, dict[str, str]]] = []
    publish_metrics(report, lambda name, value, unit, dims: sent.append((name, value, dict(dims))))
    assert ("RepairsDeferred", 6, {}) in sent
    assert report.to_json()["deferred"] == 6

    # The next run finds what was left and repairs it.
    again = world.reconcile()
    assert again.deferred == 0 and again.failed_repairs == []
    assert all(node.can_login(user.user_name, PASSWORD) for user in users for node in world.main_nodes)
    assert all(world.nodes["second"].can_login(user.user_name, PASSWORD) for user in users)


def test_repairs_are_written_in_batches_and_each_user_is_audited_and_verified(
    make_world: WorldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    users = [world.create_user(f"bulk{index}") for index in range(6)]
    replica = world.nodes["replica"]
    replica.restart_empty()  # every user is now node-divergent on `main`
    batches: list[int] = []
    apply_batch = type(world.engine.targets["main"]).apply_batch

    def counted(target: Any, changes: Any) -> None:
        batches.append(len(changes))
        apply_batch(target, changes)

    monkeypatch.setattr(type(world.engine.targets["main"]), "apply_batch", counted)
    monkeypatch.setattr("redis_scim.sync.reconcile.REPAIR_BATCH", 4)

    report = world.reconcile()

    assert batches == [4, 2]
    assert report.failed_repairs == []
    assert all(replica.can_login(user.user_name, PASSWORD) for user in users)
    for user in users:
        last = [r for r in world.history(user.id) if r.target == "main"][-1]
        assert (last.action, last.outcome, last.verified) == (Action.UPDATE, Outcome.APPLIED, True)
        assert last.cause.operation == RECONCILER
