"""The rules step's time budget, on a clock the test moves: it covers ordering the names, the reads
and the comparisons, and the last pipeline is cut to what fits instead of overrunning it.

The rules are read from real Valkey nodes; only time is simulated. Reading a name and comparing it
cost what the target wrapper below charges, so that a few hundred users behave like a large,
slow target.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from reconcile_world import World, WorldFactory

from redis_scim.sync.reconcile import Reconciler, ReconcileSettings
from redis_scim.targets import NodeAcl

USERS = 150
BUDGET = 1.0
READ_SECONDS = 0.0002  # per name: cheap reads make large pipelines (100 names for 20 ms)
COMPARE_SECONDS = 0.01  # per name, charged when its desired ACL is first put in canonical form
EPSILON = 1e-9  # float sums of the simulated costs


class ManualTimer:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SlowTarget:
    """A real target whose reads and comparisons take simulated time."""

    def __init__(self, inner: Any, timer: ManualTimer) -> None:
        self.inner = inner
        self.timer = timer

    def read_users(self, usernames: Sequence[str]) -> dict[str, dict[str, NodeAcl | None]]:
        self.timer.advance(READ_SECONDS * len(usernames))
        result: dict[str, dict[str, NodeAcl | None]] = self.inner.read_users(usernames)
        return result

    def canonical(self, rules: Sequence[str]) -> NodeAcl:
        self.timer.advance(COMPARE_SECONDS)
        acl: NodeAcl = self.inner.canonical(rules)
        return acl

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def slow_world(make_world: WorldFactory) -> tuple[World, ManualTimer]:
    world = make_world()
    for index in range(USERS):
        world.create_user(f"u{index:03d}")
    timer = ManualTimer()
    targets = cast(dict[str, Any], world.engine.targets)
    targets["main"] = SlowTarget(targets["main"], timer)
    return world, timer


def two_hours_on() -> datetime:
    """Wall time for the reconciler: no user counts as recently changed."""
    return datetime.now(UTC) + timedelta(hours=2)


def test_the_last_pipeline_is_cut_to_what_fits_in_the_budget(make_world: WorldFactory) -> None:
    world, timer = slow_world(make_world)
    reconciler = Reconciler(
        world.engine, settings=ReconcileSettings(rules_budget_seconds=BUDGET), clock=two_hours_on, timer=timer
    )

    report = reconciler.plan(["main"]).targets[0]

    assert report.rules_eligible >= USERS
    assert report.seconds["rules"] <= BUDGET + EPSILON
    # The budget is spent, not given up early: to within two names' cost.
    per_name = READ_SECONDS + COMPARE_SECONDS
    assert report.rules_read >= int(BUDGET / per_name) - 1
    assert report.seconds["rules"] > BUDGET - 2 * per_name


def test_ordering_the_names_is_part_of_the_budget(make_world: WorldFactory) -> None:
    """Ordering is made to take 0.8 s here, standing for ordering 100,000 names."""
    world, timer = slow_world(make_world)
    ordering = 0.8
    reconciler = Reconciler(
        world.engine, settings=ReconcileSettings(rules_budget_seconds=BUDGET), clock=two_hours_on, timer=timer
    )
    order = reconciler._reading_order

    def slow_order(*args: Any, **kwargs: Any) -> Any:
        timer.advance(ordering)
        return order(*args, **kwargs)

    reconciler._reading_order = slow_order  # type: ignore[method-assign]

    report = reconciler.plan(["main"]).targets[0]

    assert report.seconds["rules"] <= BUDGET + EPSILON
    per_name = READ_SECONDS + COMPARE_SECONDS
    assert 0 < report.rules_read <= (BUDGET - ordering) / per_name
