"""Helpers of the sync tests: the test policy and the `World` a test drives (Directory, ledger,
engine, audit trail) over the Valkey nodes of redis_nodes.py. Fixtures live in conftest.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis_nodes import PASSWORD, Node, password_sha256

from redis_scim.audit import AuditRecord, AuditTrail
from redis_scim.directory import Cause, GroupChange, Member, UserRecord
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.sync.engine import SyncEngine

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
    username: "{{userName}}"
  second:
    kind: redis
    url: {second_url}
    username: "{{userNameLocalPart}}"
    groups:
      Writers: []
"""


def policy_text(nodes: dict[str, Node]) -> str:
    return POLICY.format(
        main_url=nodes["main"].url, replica_url=nodes["replica"].url, second_url=nodes["second"].url
    )


class RecordingMetrics:
    """Keeps what the engine counts (the MetricsSink protocol)."""

    def __init__(self) -> None:
        self.values: list[tuple[str, float]] = []

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.values.append((name, value))

    def count(self, name: str) -> int:
        return sum(1 for metric, _ in self.values if metric == name)


@dataclass
class World:
    """A Directory, a ledger, the engine over real Valkey targets, and helpers to drive them."""

    directory: MemoryDirectory
    ledger: MemoryLedger
    engine: SyncEngine
    audit: AuditTrail
    metrics: RecordingMetrics
    nodes: dict[str, Node]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def main_nodes(self) -> list[Node]:
        return [self.nodes["main"], self.nodes["replica"]]

    def cause(self, operation: str = "PATCH /Users") -> Cause:
        return Cause(request_id=f"req-{uuid.uuid4().hex[:8]}", operation=operation)

    def user_name(self, label: str) -> str:
        return f"scimtest-{self.run}-{label}@example.com"

    def create_user(self, label: str, *, password: str | None = PASSWORD, **attributes: Any) -> UserRecord:
        return self.directory.create_user(
            {"userName": self.user_name(label), **attributes},
            password_sha256=password_sha256(password) if password else None,
            cause=self.cause("POST /Users"),
        )

    def group(self, name: str) -> str:
        if name not in self.groups:
            self.groups[name] = self.directory.create_group(
                {"displayName": name}, members=[], cause=self.cause("POST /Groups")
            ).id
        return self.groups[name]

    def join(self, user_id: str, group: str) -> None:
        self.directory.change_group(
            self.group(group),
            GroupChange(add_members=[Member(user_id)]),
            expected_version=None,
            cause=self.cause(),
        )

    def leave(self, user_id: str, group: str) -> None:
        self.directory.change_group(
            self.group(group),
            GroupChange(remove_members=[user_id]),
            expected_version=None,
            cause=self.cause(),
        )

    def set_active(self, user: UserRecord, active: bool) -> UserRecord:
        current = self.directory.get_user(user.id)
        return self.directory.replace_user(
            user.id,
            {**current.resource, "active": active},
            expected_version=None,
            password_sha256=None,
            keep_password=True,
            cause=self.cause(),
        )

    def rename(self, user: UserRecord, label: str) -> UserRecord:
        current = self.directory.get_user(user.id)
        return self.directory.replace_user(
            user.id,
            {**current.resource, "userName": self.user_name(label)},
            expected_version=None,
            password_sha256=None,
            keep_password=True,
            cause=self.cause(),
        )

    def converge(self, user_id: str) -> Any:
        return self.engine.converge(user_id, self.cause())

    def history(self, user_id: str) -> list[AuditRecord]:
        return self.audit.history(user_id)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
