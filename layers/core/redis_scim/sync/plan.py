"""The plan of one user on one target: what the target has, what it must have, and the steps between.

Pure code, shared by the applier, the reconciler and `redis-scim plan`: the caller reads the
target (every node) and the ownership ledger, and `plan_target` compares. A step is about one
Redis username; a renamed user has two (create the new name, delete the old one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis_scim.audit import Action
from redis_scim.policy import DesiredAcl
from redis_scim.targets import NodeAcl

NodeAcls = Mapping[str, NodeAcl | None]  # node -> the user's ACL there (None: absent)


class Drift(StrEnum):
    """How the target differs from the desired state for one username."""

    MISSING = "missing"  # desired, absent on every node
    DRIFTED = "drifted"  # present everywhere, but the rules differ somewhere (after normalization)
    NODE_DIVERGENT = "node-divergent"  # present on some nodes only (a node restarted or was replaced)
    STALE = "stale"  # present, but the user is no longer entitled to this name here


@dataclass(frozen=True)
class Step:
    """One username's change on one target. `action` NONE means the target already matches."""

    target: str
    username: str
    action: Action
    drift: Drift | None
    desired: DesiredAcl | None  # None: the username must not exist
    before: NodeAcls
    reason: str | None = None
    desired_acl: NodeAcl | None = None  # `desired` as the nodes report it: what a read-back must equal

    @property
    def changes_target(self) -> bool:
        return self.action in (Action.CREATE, Action.UPDATE, Action.DISABLE, Action.DELETE)


@dataclass(frozen=True)
class Rejection:
    """Why the user's desired username is not provisioned on a target (audited as `rejected`)."""

    username: str | None  # None when no safe username could even be made
    reason: str
    collision: bool = False  # the name belongs to another live user


@dataclass(frozen=True)
class TargetPlan:
    """Everything to do for one user on one target. Empty `steps` and no rejection: in sync."""

    target: str
    user_id: str
    user_version: int
    nodes: tuple[str, ...]
    steps: tuple[Step, ...]
    rejection: Rejection | None = None

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.changes_target)


def describe_nodes(before: NodeAcls) -> str | None:
    """A redacted, one-line description of a username's ACL across nodes; None when absent everywhere.

    Identical nodes read as one description; divergent nodes are listed each with its node.
    """
    descriptions = {node: acl.describe() if acl is not None else None for node, acl in before.items()}
    distinct = set(descriptions.values())
    if distinct <= {None}:
        return None
    if len(distinct) == 1:
        return next(iter(distinct))
    return "; ".join(
        f"{node}: {text if text is not None else '(absent)'}" for node, text in descriptions.items()
    )


def plan_target(
    *,
    target: str,
    user_id: str,
    user_version: int,
    nodes: Sequence[str],
    desired: DesiredAcl | None,
    desired_acl: NodeAcl | None,
    held: Iterable[str],
    actual: Mapping[str, NodeAcls],
    stale_reason: str,
    rejection: Rejection | None = None,
) -> TargetPlan:
    """Compare one user's desired state on `target` with what every node has.

    `desired_acl` is the target's normalized form of `desired` (so it compares with what the nodes
    report); `held` are the usernames the ledger says the user holds there; `actual` maps each of
    those names (and the desired one) to its ACL per node. Every held name other than the desired
    one is stale and removed, with `stale_reason` (rename, deletion, no mapped group, rejection).
    """
    steps: list[Step] = []
    if desired is not None:
        if desired_acl is None:
            raise ValueError("a desired ACL needs its normalized form to compare with")
        before = _on_every_node(actual.get(desired.username), nodes)
        steps.append(_desired_step(target, desired, desired_acl, before))
    for username in sorted(set(held) - ({desired.username} if desired is not None else set())):
        before = _on_every_node(actual.get(username), nodes)
        present = any(acl is not None for acl in before.values())
        steps.append(
            Step(
                target=target,
                username=username,
                action=Action.DELETE if present else Action.NONE,
                drift=Drift.STALE if present else None,
                desired=None,
                before=before,
                reason=stale_reason,
            )
        )
    return TargetPlan(
        target=target,
        user_id=user_id,
        user_version=user_version,
        nodes=tuple(nodes),
        steps=tuple(steps),
        rejection=rejection,
    )


def _on_every_node(per_node: NodeAcls | None, nodes: Sequence[str]) -> dict[str, NodeAcl | None]:
    per_node = per_node or {}
    return {node: per_node.get(node) for node in nodes}


def _desired_step(target: str, desired: DesiredAcl, desired_acl: NodeAcl, before: NodeAcls) -> Step:
    present = [node for node, acl in before.items() if acl is not None]
    absent = [node for node, acl in before.items() if acl is None]
    if not absent and all(acl == desired_acl for acl in before.values()):
        action, drift, reason = Action.NONE, None, None
    elif not present:
        action, drift, reason = Action.CREATE, Drift.MISSING, None
    else:
        was_enabled = any(acl is not None and acl.enabled for acl in before.values())
        action = Action.DISABLE if not desired.enabled and was_enabled else Action.UPDATE
        drift = Drift.NODE_DIVERGENT if absent else Drift.DRIFTED
        reason = f"absent on {', '.join(absent)}" if absent else None
    return Step(target, desired.username, action, drift, desired, before, reason, desired_acl)
