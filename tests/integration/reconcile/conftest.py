"""Fixtures for the reconciler: real Valkey nodes, the audit trail on moto, a Directory in memory.

Target `main` has two nodes (a primary and its replica are two ACL stores), target `second` one.
Servers are shared by the module; each test gets its own Directory, ledger and engine, uses
usernames unique to the test, and the fixture removes every ACL user the test made.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reconcile_world import World, WorldFactory, make_policy
from redis_nodes import Node, start_node

from redis_scim.audit import AuditTrail
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.runtime import open_targets


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, Node]]:
    started = {name: start_node() for name in ("main", "replica", "second")}
    yield started
    for node in started.values():
        node.stop()


@pytest.fixture
def make_world(nodes: dict[str, Node], audit: AuditTrail) -> Iterator[WorldFactory]:
    """`make_world(ghosts="report", allow=(...), down_url=None)`: a fresh Directory, ledger and
    engine over the shared nodes, with that ghost setting and allow list on every target."""
    made: list[World] = []

    def make(**options: object) -> World:
        policy = make_policy(nodes, **options)  # type: ignore[arg-type]
        targets = open_targets(policy)
        engine = SyncEngine(
            directory=MemoryDirectory(), ledger=MemoryLedger(), policy=policy, targets=targets, audit=audit
        )
        world = World(engine, nodes)
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()
