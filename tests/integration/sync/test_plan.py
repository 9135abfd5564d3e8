"""The pure planner: every drift class, stale names after a rename or deprovisioning, descriptions."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from redis_scim.audit import Action
from redis_scim.policy import DesiredAcl
from redis_scim.sync.plan import Drift, TargetPlan, describe_nodes, plan_target
from redis_scim.targets import NodeAcl, Permissions

NODES = ("n1:6379", "n2:6379")
READER = Permissions("+@read", "~cache:*")
WRITER = Permissions("+@read +@write", "~cache:*")


def acl(*, enabled: bool = True, selector: Permissions = READER) -> NodeAcl:
    return NodeAcl(
        enabled=enabled,
        password_hashes=frozenset({"a" * 64}),
        nopass=False,
        root=Permissions("-@all"),
        selectors=frozenset({selector}),
    )


def desired(username: str = "alice", *, enabled: bool = True) -> DesiredAcl:
    return DesiredAcl(
        target="t",
        username=username,
        enabled=enabled,
        credential="scim-password",
        roles=("reader",),
        selectors=("(resetchannels +@read ~cache:*)",),
        password_sha256="a" * 64,
    )


def plan(
    want: DesiredAcl | None,
    actual: Mapping[str, Mapping[str, NodeAcl | None]],
    *,
    held: tuple[str, ...] = (),
    canonical: NodeAcl | None = None,
) -> TargetPlan:
    return plan_target(
        target="t",
        user_id="u1",
        user_version=3,
        nodes=NODES,
        desired=want,
        desired_acl=canonical if canonical is not None else (acl(enabled=want.enabled) if want else None),
        held=held,
        actual=actual,
        stale_reason="renamed to 'alice'" if want else "user deleted",
    )


def only(result: TargetPlan) -> tuple[str, Action, Drift | None, str | None]:
    (step,) = result.steps
    return step.username, step.action, step.drift, step.reason


def test_absent_everywhere_is_missing_and_created() -> None:
    assert only(plan(desired(), {})) == ("alice", Action.CREATE, Drift.MISSING, None)


def test_equal_on_every_node_needs_nothing() -> None:
    result = plan(desired(), {"alice": {node: acl() for node in NODES}})
    assert only(result) == ("alice", Action.NONE, None, None)
    assert result.changes == ()


def test_absent_on_one_node_is_node_divergent() -> None:
    result = plan(desired(), {"alice": {"n1:6379": acl(), "n2:6379": None}})
    assert only(result) == ("alice", Action.UPDATE, Drift.NODE_DIVERGENT, "absent on n2:6379")


def test_different_rules_are_drift() -> None:
    result = plan(desired(), {"alice": {"n1:6379": acl(), "n2:6379": acl(selector=WRITER)}})
    assert only(result) == ("alice", Action.UPDATE, Drift.DRIFTED, None)


def test_an_enabled_user_that_must_be_off_is_disabled() -> None:
    result = plan(desired(enabled=False), {"alice": {node: acl() for node in NODES}})
    assert only(result)[1] == Action.DISABLE


def test_an_already_disabled_user_with_other_rules_is_updated_not_disabled_again() -> None:
    actual = {"alice": {node: acl(enabled=False, selector=WRITER) for node in NODES}}
    assert only(plan(desired(enabled=False), actual))[1] == Action.UPDATE


def test_held_names_other_than_the_desired_one_are_stale() -> None:
    actual = {"alice": {node: acl() for node in NODES}, "alice.old": {"n1:6379": acl(), "n2:6379": None}}
    result = plan(desired(), actual, held=("alice", "alice.old", "never.written"))
    steps = {step.username: (step.action, step.drift, step.reason) for step in result.steps}
    assert steps == {
        "alice": (Action.NONE, None, None),
        "alice.old": (Action.DELETE, Drift.STALE, "renamed to 'alice'"),
        "never.written": (Action.NONE, None, "renamed to 'alice'"),  # held, absent: only released
    }


def test_no_desired_state_deletes_every_held_name() -> None:
    result = plan(None, {"alice": {node: acl() for node in NODES}}, held=("alice",))
    assert only(result) == ("alice", Action.DELETE, Drift.STALE, "user deleted")


def test_a_desired_state_needs_its_normalized_form() -> None:
    with pytest.raises(ValueError, match="normalized"):
        plan_target(
            target="t",
            user_id="u",
            user_version=1,
            nodes=NODES,
            desired=desired(),
            desired_acl=None,
            held=(),
            actual={},
            stale_reason="",
        )


def test_descriptions_merge_identical_nodes_and_list_divergent_ones() -> None:
    assert describe_nodes({node: None for node in NODES}) is None
    same = describe_nodes({node: acl() for node in NODES})
    assert same == acl().describe() and "#<redacted>" in same and "a" * 64 not in same
    divergent = describe_nodes({"n1:6379": acl(), "n2:6379": None})
    assert divergent == f"n1:6379: {acl().describe()}; n2:6379: (absent)"
