"""The Target port: a place where ACL users live (a self-managed Redis/Valkey, an ElastiCache user group).

The sync engine depends only on `Target`, `NodeAcl` and `TargetUnavailable` below. A target speaks
ACL rule strings (the arguments of `ACL SETUSER <name>`); it knows nothing of SCIM or the policy.
Implementation: `targets.redis.RedisTarget` (every node of a standalone server, a primary with
replicas, or a Redis Cluster), checked by `tests/integration/redis/test_redis_target*.py`.

Rules every implementation follows:
- A write is a desired-state write: `write_user(name, rules)` leaves the user with exactly `rules`
  (`reset` first), whatever it had before, so retrying a whole user write is always safe.
  `apply_batch` is the same for many users at once.
- Every mutating call is attempted on *every* node, even after one node failed; then, if any node
  failed, `TargetUnavailable` is raised naming each failed node and the nodes that were done.
- Reads return every node: `read_users` maps each requested username to every node of `nodes()`,
  with `None` where the user is absent. An unreachable node raises `TargetUnavailable`.
- `canonical(rules)` is the `NodeAcl` a node reports after `write_user(name, rules)`; compare it
  with `read_users` results with `==`. Rule strings are never compared textually: servers render
  rules in a functionally equal but different form.
- Cutting access: `write_user(name, [..., "off", ...])` stops new logins but not live connections;
  `disconnect_user` closes them; `delete_user` does both. `verify_revoked` checks, on every node,
  that the user is absent (or `off` when not deleted) and that no connection of it remains.
- Never list every user with its rules in one server command (`ACL LIST` stalls a large server):
  `list_usernames` returns names only; rules are read in bounded chunks.
- Password hashes are part of `NodeAcl` (so a password change is drift) but never appear in
  logs, errors, reprs or `describe()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis_scim.errors import ServiceUnavailable


@dataclass(frozen=True)
class Permissions:
    """Commands, keys and channels of a user's root permissions or of one selector, as a node
    renders them. `extra` holds engine-specific fields (e.g. Valkey 9.1 `databases`)."""

    commands: str
    keys: str = ""
    channels: str = ""
    extra: tuple[tuple[str, str], ...] = ()

    def rules(self) -> str:
        parts = [self.keys, self.channels, *(value for _, value in self.extra), self.commands]
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class NodeAcl:
    """One ACL user as one node has it, normalized so that equal means functionally equal.

    Hashable and comparable. Selectors are a set: a command is allowed when the root permissions
    or any selector allow it, so their order carries no meaning.
    """

    enabled: bool
    password_hashes: frozenset[str] = field(repr=False)
    nopass: bool
    root: Permissions
    selectors: frozenset[Permissions] = frozenset()
    flags: frozenset[str] = frozenset()  # other flags, e.g. sanitize-payload

    def describe(self) -> str:
        """The user as SETUSER-style rules, password hashes redacted: for audit records and logs."""
        parts = ["on" if self.enabled else "off"]
        if self.nopass:
            parts.append("nopass")
        parts += ["#<redacted>"] * len(self.password_hashes)
        if not self.nopass and not self.password_hashes:
            parts.append("resetpass")
        parts += sorted(self.flags)
        parts.append(self.root.rules())
        parts += sorted(f"({selector.rules()})" for selector in self.selectors)
        return " ".join(part for part in parts if part)

    def __str__(self) -> str:
        return self.describe()


class TargetUnavailable(ServiceUnavailable):
    """Some nodes of a target were unreachable or rejected a command.

    `failures` maps each failed node to why; `done` lists the nodes where the operation succeeded.
    Callers retry the whole operation: every Target operation is idempotent.
    """

    def __init__(self, target: str, failures: Mapping[str, str], done: Sequence[str] = ()) -> None:
        self.target = target
        self.failures = dict(failures)
        self.done = tuple(done)
        failed = "; ".join(f"{node}: {reason}" for node, reason in self.failures.items())
        total = len(self.failures) + len(self.done)
        super().__init__(f"target {target!r}: failed on {len(self.failures)} of {total} node(s): {failed}")

    @property
    def nodes(self) -> list[str]:
        """The nodes that failed."""
        return list(self.failures)


class Target(Protocol):
    """A place where ACL users live, addressed by username, applied to every node it has."""

    name: str

    def nodes(self) -> list[str]:
        """The node addresses (`host:port`) every change is applied to, discovered from the target."""
        ...

    def read_users(self, usernames: Sequence[str]) -> dict[str, dict[str, NodeAcl | None]]:
        """username -> node -> the user's ACL there, `None` where absent. Every requested name and
        every node are in the result."""
        ...

    def canonical(self, rules: Sequence[str]) -> NodeAcl:
        """The normalized form a node reports after `write_user(name, rules)`."""
        ...

    def write_user(self, username: str, rules: Sequence[str]) -> None:
        """Make the user have exactly `rules` on every node (`ACL SETUSER name reset *rules`)."""
        ...

    def delete_user(self, username: str) -> None:
        """Remove the user on every node (closing its connections); absent is fine."""
        ...

    def apply_batch(self, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Many users' `write_user` (rules) or `delete_user` (None) in as few round trips as the
        target allows (one pipelined stream per Redis node, one ModifyUserGroup per user group).
        May have applied part of the batch when it raises."""
        ...

    def disconnect_user(self, username: str) -> int:
        """Close every connection authenticated as the user on every node; how many were closed."""
        ...

    def verify_revoked(self, username: str, *, deleted: bool) -> bool:
        """True only when on every node the user is absent (or `off`, unless `deleted`) and no
        connection authenticated as it remains."""
        ...

    def list_usernames(self) -> dict[str, set[str]]:
        """node -> every ACL username on it (names only)."""
        ...

    def persist(self) -> None:
        """Make the current users survive a restart where the target is configured for it."""
        ...

    def close(self) -> None:
        """Release connections; the target may not be used afterwards."""
        ...


__all__ = ["NodeAcl", "Permissions", "Target", "TargetUnavailable"]
