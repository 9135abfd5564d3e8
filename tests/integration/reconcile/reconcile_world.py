"""Helpers for the reconciler tests: a policy, and a World that drives the Directory, the engine and
the reconciler over the Valkey nodes of redis_nodes.py."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis_nodes import PASSWORD, Node, password_sha256

from redis_scim.audit import AuditRecord, AuditTrail
from redis_scim.directory import Cause, GroupChange, Member, UserRecord
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.policy import Policy, load_policy_text
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.reconcile import Reconciler, ReconcileReport, ReconcileSettings

POLICY = """\
version: 1
roles:
  reader: "+@read +@connection ~cache:*"
  writer: "+@read +@write +@connection ~cache:*"
groups:
  Readers: [reader]
  Writers: [writer]
targets:
  main:
    kind: redis
    url: {main_url}
    nodes: [{replica_url}]
    allow: {allow}
    ghosts: {ghosts}
  second:
    kind: redis
    url: {second_url}
    allow: {allow}
    ghosts: {ghosts}
{extra}"""

DOWN_TARGET = """\
  down:
    kind: redis
    url: {down_url}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_connected(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.ConnectionError:
        return False
    return True


def make_policy(nodes: dict[str, Node], **options: Any) -> Policy:
    return load_policy_text(policy_text(nodes, **options), env={})


def policy_text(
    nodes: dict[str, Node],
    *,
    ghosts: str = "report",
    allow: tuple[str, ...] = ("default",),
    down_url: str | None = None,
) -> str:
    return POLICY.format(
        main_url=nodes["main"].url,
        replica_url=nodes["replica"].url,
        second_url=nodes["second"].url,
        allow="[" + ", ".join(allow) + "]",
        ghosts=ghosts,
        extra=DOWN_TARGET.format(down_url=down_url) if down_url else "",
    )


@dataclass
class World:
    """A Directory, a ledger and the engine over real Valkey targets, and the reconciler on them."""

    engine: SyncEngine
    nodes: dict[str, Node]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def directory(self) -> MemoryDirectory:
        assert isinstance(self.engine.directory, MemoryDirectory)
        return self.engine.directory

    @property
    def ledger(self) -> MemoryLedger:
        assert isinstance(self.engine.ledger, MemoryLedger)
        return self.engine.ledger

    @property
    def audit(self) -> AuditTrail:
        assert isinstance(self.engine.audit, AuditTrail)
        return self.engine.audit

    @property
    def main_nodes(self) -> list[Node]:
        return [self.nodes["main"], self.nodes["replica"]]

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    def reconciler(self, *, later: float = 0.0, **settings: Any) -> Reconciler:
        """A reconciler whose clock runs `later` seconds ahead (to age markers and changes)."""
        return Reconciler(
            self.engine,
            settings=ReconcileSettings(**settings),
            clock=lambda: datetime.now(UTC) + timedelta(seconds=later),
        )

    def plan(self, **settings: Any) -> ReconcileReport:
        return self.reconciler(**settings).plan()

    def reconcile(self, **settings: Any) -> ReconcileReport:
        return self.reconciler(**settings).reconcile()

    def cause(self, operation: str = "PATCH /Users") -> Cause:
        return Cause(request_id=f"req-{uuid.uuid4().hex[:8]}", operation=operation)

    def name(self, label: str) -> str:
        return f"rectest-{self.run}-{label}"

    def create_user(self, label: str, *, group: str | None = "Readers", converge: bool = True) -> UserRecord:
        user = self.directory.create_user(
            {"userName": self.name(label)},
            password_sha256=password_sha256(PASSWORD),
            cause=self.cause("POST /Users"),
        )
        if group is not None:
            self.directory.change_group(
                self.group(group),
                GroupChange(add_members=[Member(user.id)]),
                expected_version=None,
                cause=self.cause(),
            )
        if converge:
            self.engine.converge(user.id, self.cause())
        return user

    def group(self, name: str) -> str:
        if name not in self.groups:
            self.groups[name] = self.directory.create_group(
                {"displayName": name}, members=[], cause=self.cause("POST /Groups")
            ).id
        return self.groups[name]

    def set_active(self, user: UserRecord, active: bool) -> None:
        current = self.directory.get_user(user.id)
        self.directory.replace_user(
            user.id,
            {**current.resource, "active": active},
            expected_version=None,
            password_sha256=None,
            keep_password=True,
            cause=self.cause(),
        )

    def ghost(self, label: str, *, on: tuple[str, ...] = ("main", "replica")) -> str:
        """An ACL user made by hand on the given nodes, with a password and write access."""
        username = self.name(label)
        for node in on:
            self.nodes[node].acl("SETUSER", username, "on", f">{PASSWORD}", "~*", "+@all")
        return username

    def history(self, user_id: str) -> list[AuditRecord]:
        return self.audit.history(user_id)

    def close(self) -> None:
        for target in self.engine.targets.values():
            target.close()
        for node in self.nodes.values():
            ours = [user for user in node.users() if self.run in user]
            if ours:
                node.acl("DELUSER", *ours)


# The `make_world` fixture: make_world(ghosts=..., allow=..., down_url=...).
WorldFactory = Callable[..., World]
