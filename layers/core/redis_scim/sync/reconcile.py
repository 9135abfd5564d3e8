"""The reconciler: what every target really has against what the Directory and the policy want.

Per target and per node it classifies each username as missing, drifted, node-divergent, stale or
ghost (`Finding`), then repairs through the same `SyncEngine` the applier uses (plan a user,
apply, verify, audit), handles ghosts per the target's `ghosts:` setting, re-drives users whose
pending-sync marker outlived a grace period, and persists every reachable target once at the end.

Scale (100,000 users on a target) shapes the reads, because one slow server command stalls every
client of that server:
- names come from `ACL USERS` on every node, every run (one command; `ACL LIST` is never used);
- rules (`ACL GETUSER`, ≈3.7 ms per user on Redis 7.0) are read incrementally: every name whose
  user changed recently or is pending, plus a rotating slice of the others in a fixed hash order,
  chosen from the clock so consecutive runs walk the whole ring, within a time budget; reads go in
  small pipelines sized from measured per-user cost so that no round trip holds a node for more
  than `max_round_trip_ms`;
- the Directory side is read page by page: the members of every group the policy maps, then users.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from redis_scim import errors
from redis_scim.audit import Action, AuditEntry, Outcome
from redis_scim.directory import Actor, Cause, UserRecord, UserState
from redis_scim.directory.ledger import Ownership
from redis_scim.observability import MetricName
from redis_scim.policy import DesiredAcl, Policy, compile_user
from redis_scim.policy.model import group_key
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.plan import Drift, describe_nodes, plan_target
from redis_scim.targets import NodeAcl, Target, TargetUnavailable

RECONCILER = "reconciler"  # the audit cause's operation, and the actor
GHOST_USER_PREFIX = "ghost:"  # audit records of a ghost are chained under "ghost:<target>:<username>"
RING = 2**32  # positions of usernames on the rules-reading ring (CRC-32)
# Users repaired together (one read, one write and one read-back per node); between two such
# batches a run checks its time limit, so one batch must fit well within the reserve.
REPAIR_BATCH = 500

Progress = Callable[[int, int, str], None]  # (done, total, what) for long runs


class Finding(StrEnum):
    """How one username on one target differs from the desired state."""

    MISSING = Drift.MISSING.value  # desired, absent on every node
    DRIFTED = Drift.DRIFTED.value  # present everywhere, rules differ somewhere (after normalization)
    NODE_DIVERGENT = Drift.NODE_DIVERGENT.value  # desired, present on some nodes only
    STALE = Drift.STALE.value  # present but no longer entitled (deleted, deactivated and on, no group)
    GHOST = "ghost"  # present, never owned per the ledger, not allow-listed


@dataclass(frozen=True)
class Discrepancy:
    """One username that is not as it should be on one target."""

    target: str
    username: str
    finding: Finding
    user_id: str | None  # the SCIM user who owns (or owned) the name; None for a ghost
    detail: str
    present_on: tuple[str, ...]  # the nodes that have the username

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "username": self.username,
            "finding": str(self.finding),
            "user_id": self.user_id,
            "detail": self.detail,
            "present_on": list(self.present_on),
        }


@dataclass(frozen=True)
class Repair:
    """What the reconciler did about one discrepancy (or one re-driven pending user)."""

    target: str | None  # None: a pending user re-driven on every target
    subject: str  # a username, or a SCIM id for a re-drive
    action: str  # create/update/disable/delete (as audited), redrive, report, none
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "subject": self.subject,
            "action": self.action,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass
class TargetReport:
    """One target's part of a run. `unreachable` set: nothing else was done on it."""

    target: str
    nodes: tuple[str, ...] = ()
    usernames: int = 0  # distinct usernames over every node
    desired: int = 0
    rules_read: int = 0  # usernames whose rules were read and compared this run
    rules_eligible: int = 0  # desired usernames present on every node (the ring)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    unreachable: str | None = None
    deferred: int = 0  # users and ghosts left for the next run: this one ran out of time
    seconds: dict[str, float] = field(default_factory=dict)  # per step

    def count(self, finding: Finding) -> int:
        return sum(1 for discrepancy in self.discrepancies if discrepancy.finding is finding)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "nodes": list(self.nodes),
            "usernames": self.usernames,
            "desired": self.desired,
            "rules_read": self.rules_read,
            "rules_eligible": self.rules_eligible,
            "unreachable": self.unreachable,
            "deferred": self.deferred,
            "counts": {str(finding): self.count(finding) for finding in Finding},
            "discrepancies": [d.to_json() for d in self.discrepancies],
            "repairs": [r.to_json() for r in self.repairs],
            "seconds": {step: round(value, 3) for step, value in self.seconds.items()},
        }


@dataclass
class ReconcileReport:
    """A whole run: per target, plus the pending users re-driven. `applied` False: a plan only."""

    run_id: str
    applied: bool
    targets: list[TargetReport] = field(default_factory=list)
    redriven: list[Repair] = field(default_factory=list)
    redrives_deferred: int = 0
    seconds: float = 0.0
    directory_seconds: float = 0.0

    @property
    def unreachable(self) -> list[TargetReport]:
        return [report for report in self.targets if report.unreachable is not None]

    @property
    def discrepancies(self) -> list[Discrepancy]:
        return [d for report in self.targets for d in report.discrepancies]

    @property
    def deferred(self) -> int:
        """Repairs and re-drives not attempted because the run was running out of time."""
        return sum(report.deferred for report in self.targets) + self.redrives_deferred

    @property
    def failed_repairs(self) -> list[Repair]:
        repairs = [r for report in self.targets for r in report.repairs] + self.redriven
        return [repair for repair in repairs if not repair.ok]

    def counts(self) -> dict[str, int]:
        return {str(finding): sum(r.count(finding) for r in self.targets) for finding in Finding}

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "applied": self.applied,
            "seconds": round(self.seconds, 3),
            "directory_seconds": round(self.directory_seconds, 3),
            "counts": self.counts(),
            "targets": [report.to_json() for report in self.targets],
            "redriven": [repair.to_json() for repair in self.redriven],
            "deferred": self.deferred,
        }


@dataclass(frozen=True)
class ReconcileSettings:
    """Tuning of a run. Defaults suit a schedule of one run a minute."""

    pending_grace_seconds: float = 300.0  # a marker older than this lost its message (or its apply)
    rules_budget_seconds: float = 3.0  # time for reading rules per target per run
    rules_cycle_seconds: float = 3600.0  # the ring's start position goes round once per cycle
    recent_seconds: float = 3600.0  # users changed this recently have their rules read every run
    max_round_trip_ms: float = 20.0  # one rules pipeline may hold a node at most about this long
    max_chunk: int = 500
    # Kept back at the end of a run with a time limit (the Lambda's timeout): persisting every
    # target (ACL SAVE of 100,000 users blocks a node for seconds) and reporting.
    reserve_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReconcileSettings:
        """RECONCILE_PENDING_GRACE_SECONDS, RECONCILE_RULES_BUDGET_SECONDS, RECONCILE_RULES_CYCLE_SECONDS."""
        defaults = cls()

        def number(variable: str, default: float) -> float:
            return float(env[variable]) if env.get(variable) else default

        return cls(
            pending_grace_seconds=number("RECONCILE_PENDING_GRACE_SECONDS", defaults.pending_grace_seconds),
            rules_budget_seconds=number("RECONCILE_RULES_BUDGET_SECONDS", defaults.rules_budget_seconds),
            rules_cycle_seconds=number("RECONCILE_RULES_CYCLE_SECONDS", defaults.rules_cycle_seconds),
        )


@dataclass(slots=True)
class _Compiled:
    """A user's desired ACL on one target at one Directory version, kept between runs (a warm
    Lambda recompiles only users whose version changed). `acl` is computed when first compared."""

    version: int
    desired: DesiredAcl | None
    acl: NodeAcl | None = None


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A desired username on one target in this run."""

    user_id: str
    compiled: _Compiled
    recent: bool  # changed recently or pending: its rules are read every run


@dataclass
class _DirectorySnapshot:
    """The desired side of one run, shared by every target: users in a mapped group, with those groups."""

    users: list[tuple[UserRecord, tuple[str, ...]]]
    pending: set[str]


class Reconciler:
    """Plans and carries out a reconciliation of the policy's targets through `engine`."""

    def __init__(
        self,
        engine: SyncEngine,
        *,
        settings: ReconcileSettings | None = None,
        logger: logging.Logger | Any | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings or ReconcileSettings()
        self.logger = logger or logging.getLogger(__name__)
        self.clock = clock  # wall time: ages of changes and markers, the ring's start position
        self.timer = timer  # seconds on a monotonic clock: step timings and the rules budget
        self._compiled: dict[str, dict[str, _Compiled]] = {}  # target -> user id -> compiled
        self._ring_position: dict[str, int] = {}  # target -> where the next run reads rules from

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    # --- entry points ------------------------------------------------------------------------------

    def plan(
        self,
        targets: Sequence[str] | None = None,
        *,
        all_rules: bool = False,
        progress: Progress | None = None,
    ) -> ReconcileReport:
        """What a reconciliation would change. Reads the targets, the ledger and the Directory only."""
        return self._run(targets, apply=False, all_rules=all_rules, progress=progress)

    def reconcile(
        self,
        targets: Sequence[str] | None = None,
        *,
        all_rules: bool = False,
        progress: Progress | None = None,
        time_left: Callable[[], float] | None = None,
    ) -> ReconcileReport:
        """Plan, then repair every discrepancy, act on ghosts, re-drive stale pending markers (only
        when every target is reconciled: a re-drive converges the user on every target) and persist
        every reachable target. An unreachable target is reported; the others still reconcile.

        `time_left` (seconds, e.g. the Lambda's remaining time): once less than the settings'
        `reserve_seconds` is left, no further repair or re-drive is started; those left are counted
        as `deferred` (the next run finds them again), and the targets are still persisted and the
        run reported."""
        return self._run(targets, apply=True, all_rules=all_rules, progress=progress, time_left=time_left)

    def _run(
        self,
        targets: Sequence[str] | None,
        *,
        apply: bool,
        all_rules: bool,
        progress: Progress | None,
        time_left: Callable[[], float] | None = None,
    ) -> ReconcileReport:
        def out_of_time() -> bool:
            return time_left is not None and time_left() < self.settings.reserve_seconds

        started = self.timer()
        names = list(targets) if targets else list(self.policy.targets)
        for name in names:
            self.policy.target(name)  # an unknown name is a PolicyError before anything is read
        report = ReconcileReport(run_id=uuid.uuid4().hex[:12], applied=apply)
        cause = Cause(
            request_id=f"reconcile-{report.run_id}", operation=RECONCILER, actor=Actor(user_agent=RECONCILER)
        )
        directory_started = self.timer()
        snapshot = self._directory_snapshot()
        report.directory_seconds = self.timer() - directory_started
        try:
            # Repairs persist once per target at the end of the batch, not after every user.
            with self.engine.batch():
                for name in names:
                    target_report = self._plan_target(name, snapshot, all_rules=all_rules, progress=progress)
                    report.targets.append(target_report)
                    if apply and target_report.unreachable is None:
                        repair_started = self.timer()
                        self._repair(target_report, cause, progress, out_of_time)
                        target_report.seconds["repair"] = self.timer() - repair_started
                if apply and not targets:
                    report.redriven = self._redrive(report, cause, progress, out_of_time)
        except TargetUnavailable:
            pass  # the batch's persist failed; `_persist` below tries every target again and reports it
        if apply:
            self._persist(report)
        report.seconds = self.timer() - started
        self._log(report)
        return report

    # --- the desired side --------------------------------------------------------------------------

    def _directory_snapshot(self) -> _DirectorySnapshot:
        """One pass over the groups, the members of the mapped ones, and one over the users.

        Each listing is a single search whose predicate collects and returns False: the Directory
        streams every record through it (DynamoDB: one index query, then batches of items) without
        building a page, where paging would re-read the index once per page.
        """
        directory = self.engine.directory
        mapped = {
            key
            for name in self.policy.targets
            for key, roles in self.policy.group_roles(name).items()
            if roles
        }
        mapped_groups: list[tuple[str, str]] = []

        def collect_group(group: Any) -> bool:
            if group_key(group.display_name) in mapped:
                mapped_groups.append((group.id, group.display_name))
            return False

        directory.search_groups(lookup=None, predicate=collect_group, start_index=1, count=0)
        memberships: dict[str, list[str]] = {}
        for group_id, display_name in mapped_groups:
            for member in directory.group_members(group_id):
                memberships.setdefault(member.value, []).append(display_name)
        interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        users: list[tuple[UserRecord, tuple[str, ...]]] = []

        def collect_user(record: UserRecord) -> bool:
            groups = memberships.get(record.id)
            if groups is not None:
                key = tuple(sorted(groups))
                users.append((record, interned.setdefault(key, key)))
            return False

        directory.search_users(lookup=None, predicate=collect_user, start_index=1, count=0)
        pending = {entry.user_id for entry in directory.pending_users()}
        return _DirectorySnapshot(users, pending)

    def _wanted(
        self, target_name: str, target: Target, snapshot: _DirectorySnapshot, owners: Mapping[str, Ownership]
    ) -> dict[str, _Wanted]:
        """Desired username -> its user, on one target. Unsafe or colliding names are the engine's
        to reject when it converges the user; here a name another user still holds stays that
        user's (it is stale if that user no longer wants it), otherwise the first user keeps it."""
        recent_since = _iso(self.clock() - timedelta(seconds=self.settings.recent_seconds))
        previous = self._compiled.get(target_name, {})
        compiled: dict[str, _Compiled] = {}
        wanted: dict[str, _Wanted] = {}
        for record, groups in snapshot.users:
            entry = previous.get(record.id)
            if entry is None or entry.version != record.version:
                try:
                    desired = compile_user(self.policy, target_name, record, groups)
                except errors.InvalidUsername:
                    desired = None
                entry = _Compiled(record.version, desired)
            compiled[record.id] = entry
            desired = entry.desired
            if desired is None or desired.username in wanted:
                continue
            owner = owners.get(desired.username)
            if owner is not None and not owner.released and owner.user_id != record.id:
                continue
            recent = record.last_modified >= recent_since or record.id in snapshot.pending
            wanted[desired.username] = _Wanted(record.id, entry, recent)
        self._compiled[target_name] = compiled
        return wanted

    # --- plan --------------------------------------------------------------------------------------

    def _plan_target(
        self, name: str, snapshot: _DirectorySnapshot, *, all_rules: bool, progress: Progress | None
    ) -> TargetReport:
        report = TargetReport(target=name)
        target = self.engine.targets[name]
        config = self.policy.target(name)
        try:
            step = self.timer()
            on_nodes = target.list_usernames()
            report.seconds["list_usernames"] = self.timer() - step
            report.nodes = tuple(on_nodes)
            step = self.timer()
            owners = {entry.username: entry for entry in self.engine.ledger.entries(name)}
            report.seconds["ledger"] = self.timer() - step
            step = self.timer()
            with _cyclic_gc_paused():
                wanted = self._wanted(name, target, snapshot, owners)
            report.seconds["desired"] = self.timer() - step
            step = self.timer()
            eligible = self._classify(report, on_nodes, wanted, owners, config.protected_usernames)
            report.seconds["classify"] = self.timer() - step
            step = self.timer()
            self._compare_rules(report, target, wanted, eligible, all_rules=all_rules, progress=progress)
            report.seconds["rules"] = self.timer() - step
        except (TargetUnavailable, errors.ServiceUnavailable) as error:
            report.unreachable = _explain(error)
            self.logger.warning("target unreachable", extra={"target": name, "error": report.unreachable})
        return report

    def _classify(
        self,
        report: TargetReport,
        on_nodes: Mapping[str, set[str]],
        wanted: Mapping[str, _Wanted],
        owners: Mapping[str, Ownership],
        protected: frozenset[str],
    ) -> list[str]:
        """Presence findings (missing, node-divergent, stale, ghost); returns the desired names
        present on every node, whose rules may differ."""
        nodes = list(on_nodes)
        everywhere: list[str] = []
        present_anywhere: set[str] = set().union(*on_nodes.values()) if on_nodes else set()
        report.usernames = len(present_anywhere)
        report.desired = len(wanted)
        for username in sorted(present_anywhere):
            if username in protected:
                continue
            present = tuple(node for node in nodes if username in on_nodes[node])
            entry = wanted.get(username)
            if entry is not None:
                if len(present) == len(nodes):
                    everywhere.append(username)
                else:
                    absent = ", ".join(node for node in nodes if node not in present)
                    report.discrepancies.append(
                        Discrepancy(
                            report.target,
                            username,
                            Finding.NODE_DIVERGENT,
                            entry.user_id,
                            f"absent on {absent}",
                            present,
                        )
                    )
                continue
            owner = owners.get(username)
            if owner is not None:
                detail = "formerly managed; released" if owner.released else "no longer entitled"
                report.discrepancies.append(
                    Discrepancy(report.target, username, Finding.STALE, owner.user_id, detail, present)
                )
            else:
                report.discrepancies.append(
                    Discrepancy(
                        report.target,
                        username,
                        Finding.GHOST,
                        None,
                        "not owned by any identity and not allow-listed",
                        present,
                    )
                )
        for username, entry in wanted.items():
            if username not in present_anywhere:
                report.discrepancies.append(
                    Discrepancy(
                        report.target, username, Finding.MISSING, entry.user_id, "absent on every node", ()
                    )
                )
        report.rules_eligible = len(everywhere)
        return everywhere

    def _compare_rules(
        self,
        report: TargetReport,
        target: Target,
        wanted: Mapping[str, _Wanted],
        eligible: list[str],
        *,
        all_rules: bool,
        progress: Progress | None,
    ) -> None:
        """Read and compare the rules of the recently changed names and of a slice of the ring.

        The budget starts before the names are ordered: at 100,000 names ordering takes a few
        hundred milliseconds, over a second when a full garbage collection falls in it."""
        deadline = None if all_rules else self.timer() + self.settings.rules_budget_seconds
        order, recent, ring = self._reading_order(report.target, eligible, wanted, all_rules=all_rules)
        nodes = report.nodes
        interned: dict[NodeAcl, NodeAcl] = {}
        for username, per_node in self._read_rules(target, order, recent, deadline, progress, report.target):
            report.rules_read += 1
            entry = wanted[username]
            compiled = entry.compiled
            assert compiled.desired is not None
            if compiled.acl is None:
                acl = target.canonical(compiled.desired.setuser_rules())
                compiled.acl = interned.setdefault(acl, acl)
            step = plan_target(
                target=report.target,
                user_id=entry.user_id,
                user_version=0,
                nodes=nodes,
                desired=compiled.desired,
                desired_acl=compiled.acl,
                held=(),
                actual={username: per_node},
                stale_reason="",
            ).steps[0]
            if step.drift is None:
                continue
            present = tuple(node for node, acl in per_node.items() if acl is not None)
            if step.drift is Drift.NODE_DIVERGENT:  # a node lost the user since ACL USERS
                finding, detail = Finding.NODE_DIVERGENT, step.reason or "absent on a node"
            elif step.action is Action.DISABLE:
                finding, detail = Finding.STALE, "deactivated in the Directory but still on"
            elif step.drift is Drift.MISSING:
                finding, detail = Finding.MISSING, "deleted since ACL USERS"
            else:
                finding, detail = Finding.DRIFTED, _drift_detail(per_node, compiled.acl)
            report.discrepancies.append(
                Discrepancy(report.target, username, finding, entry.user_id, detail, present)
            )
        ring_read = report.rules_read - recent
        if 0 < ring_read < len(ring):
            self._ring_position[report.target] = ring[ring_read]

    def _reading_order(
        self, target_name: str, eligible: list[str], wanted: Mapping[str, _Wanted], *, all_rules: bool
    ) -> tuple[list[str], int, list[int]]:
        """Recently changed names first, then the ring from where the previous run stopped (or,
        after a cold start, from a position the clock turns once per cycle). Returns the order,
        how many recent names lead it, and the ring positions of the names after them."""
        recent = [name for name in eligible if wanted[name].recent]
        ring = sorted(
            (zlib.crc32(name.encode("utf-8", "surrogateescape")), name)
            for name in eligible
            if not wanted[name].recent
        )
        if not all_rules and ring:
            cycle = self.settings.rules_cycle_seconds
            position = self._ring_position.get(target_name)
            if position is None:
                position = int((self.clock().timestamp() % cycle) / cycle * RING)
            start = bisect_left(ring, (position, ""))
            ring = ring[start:] + ring[:start]
        return recent + [name for _, name in ring], len(recent), [position for position, _ in ring]

    def _read_rules(
        self,
        target: Target,
        order: list[str],
        required: int,
        deadline: float | None,
        progress: Progress | None,
        label: str,
    ) -> Iterator[tuple[str, dict[str, NodeAcl | None]]]:
        """Rules of `order`, in pipelines sized so that one holds a node about `max_round_trip_ms`:
        the first `required` names always, the rest while they fit before `deadline` (a `timer`
        reading). The first pipeline is small: its timing sizes the next ones. A name costs its
        read plus the caller's comparison, measured per pipeline; a pipeline is cut to the names
        that fit in the time left, so the last one does not overrun the budget."""
        chunk, done = 8, 0
        per_name = 0.0  # seconds, from the previous pipeline
        while done < len(order):
            if done >= required and deadline is not None:
                left = deadline - self.timer()
                fits = int(left / per_name) if per_name else chunk
                if left <= 0 or fits < 1:
                    return
                chunk = min(chunk, fits)
            names = order[done : done + chunk]
            started = self.timer()
            found = target.read_users(names)
            per_user_ms = max((self.timer() - started) * 1000 / len(names), 1e-3)
            chunk = max(1, min(self.settings.max_chunk, int(self.settings.max_round_trip_ms / per_user_ms)))
            done += len(names)
            if progress is not None:
                progress(done, len(order), f"{label}: rules")
            for name in names:
                yield name, found[name]
            per_name = (self.timer() - started) / len(names)

    # --- repair ------------------------------------------------------------------------------------

    def _repair(
        self, report: TargetReport, cause: Cause, progress: Progress | None, out_of_time: Callable[[], bool]
    ) -> None:
        target = self.engine.targets[report.target]
        by_user: dict[str, list[Discrepancy]] = {}
        ghosts: list[Discrepancy] = []
        for discrepancy in report.discrepancies:
            if discrepancy.finding is Finding.GHOST:
                ghosts.append(discrepancy)
            elif discrepancy.user_id is not None:
                by_user.setdefault(discrepancy.user_id, []).append(discrepancy)
        total, done = len(by_user) + len(ghosts), 0
        users = list(by_user.items())
        for start in range(0, len(users), REPAIR_BATCH):
            if out_of_time():
                self._defer(report, total - done)
                return
            chunk = users[start : start + REPAIR_BATCH]
            # Written ahead together: users with something to converge. A user with stale names only
            # may have nothing left to plan (orphans are removed directly), so it goes on its own.
            ahead = [uid for uid, found in chunk if any(d.finding is not Finding.STALE for d in found)]
            with self.engine.batch(ahead, targets=[report.target]):
                for user_id, found in chunk:
                    try:
                        report.repairs.extend(self._repair_user(report, target, user_id, found, cause))
                    except Exception as error:  # e.g. the Directory throttled: it waits for the next run
                        report.repairs.append(
                            Repair(report.target, found[0].username, "converge", False, _explain(error))
                        )
                    done += 1
                    if progress is not None:
                        progress(done, total, f"{report.target}: repair")
        action = self.policy.target(report.target).ghosts
        for ghost in ghosts:
            if out_of_time():
                self._defer(report, total - done)
                return
            report.repairs.append(self._handle_ghost(report, target, ghost, action, cause))
            done += 1
            if progress is not None:
                progress(done, total, f"{report.target}: repair")

    def _repair_user(
        self, report: TargetReport, target: Target, user_id: str, found: list[Discrepancy], cause: Cause
    ) -> list[Repair]:
        """Converge one user on one target through the engine; a name its (gone or released)
        owner no longer holds is removed here, audited under that owner."""
        state, held_everywhere = self.engine.current(user_id)
        held = held_everywhere.get(report.target, frozenset())
        repairs: list[Repair] = []
        orphans = [
            d for d in found if d.finding is Finding.STALE and (state is None or d.username not in held)
        ]
        for orphan in orphans:
            repairs.append(self._remove_orphan(report, target, orphan, state, cause))
        if state is None or len(orphans) == len(found):
            return repairs
        try:
            plan = self.engine.plan_user(state, report.target, held=held, claim=True)
            results = self.engine.apply_plan(plan, state, cause)
        except Exception as error:  # one user's failure never stops the run
            return [*repairs, Repair(report.target, found[0].username, "converge", False, _explain(error))]
        for result in results:
            ok = result.verified or result.outcome is Outcome.REJECTED
            repairs.append(
                Repair(report.target, result.step.username, str(result.step.action), ok, result.reason or "")
            )
            if ok and result.outcome is Outcome.APPLIED:
                self._count(MetricName.DRIFT_CORRECTED)
        return repairs

    def _remove_orphan(
        self, report: TargetReport, target: Target, orphan: Discrepancy, state: UserState | None, cause: Cause
    ) -> Repair:
        reason = f"stale: {orphan.detail}"
        before: Mapping[str, NodeAcl | None] = {}
        try:
            before = target.read_users([orphan.username])[orphan.username]
            target.delete_user(orphan.username)
            verified = target.verify_revoked(orphan.username, deleted=True)
        except Exception as error:
            self._audit(
                report,
                orphan,
                Action.DELETE,
                Outcome.FAILED,
                False,
                before,
                None,
                cause,
                _explain(error),
                state=state,
            )
            return Repair(report.target, orphan.username, str(Action.DELETE), False, _explain(error))
        self._audit(
            report, orphan, Action.DELETE, Outcome.APPLIED, verified, before, None, cause, reason, state=state
        )
        if orphan.user_id is not None and state is None:
            self.engine.ledger.release(report.target, orphan.username, orphan.user_id)
        if verified:
            self._count(MetricName.DRIFT_CORRECTED)
        return Repair(report.target, orphan.username, str(Action.DELETE), verified, reason)

    def _handle_ghost(
        self, report: TargetReport, target: Target, ghost: Discrepancy, action: str, cause: Cause
    ) -> Repair:
        self.logger.warning(
            "ghost user found",
            extra={
                "target": report.target,
                "redis_username": ghost.username,
                "ghosts": action,
                "nodes": list(ghost.present_on),
            },
        )
        if action == "report":
            return Repair(report.target, ghost.username, "report", True, "reported (ghosts: report)")
        deleting = action == "delete"
        audited = Action.DELETE if deleting else Action.DISABLE
        reason = f"ghost: {ghost.detail} (ghosts: {action})"
        before: Mapping[str, NodeAcl | None] = {}
        try:
            before = target.read_users([ghost.username])[ghost.username]
            present = [acl for acl in before.values() if acl is not None]
            if not present:
                return Repair(report.target, ghost.username, "none", True, "gone before it was handled")
            if (
                not deleting
                and all(not acl.enabled for acl in present)
                and target.verify_revoked(ghost.username, deleted=False)
            ):
                return Repair(report.target, ghost.username, "none", True, "already disabled")
            _act_on_ghost(target, ghost.username, present[0], deleting=deleting)
            verified = target.verify_revoked(ghost.username, deleted=deleting)
            after = None if deleting else describe_nodes(target.read_users([ghost.username])[ghost.username])
        except Exception as error:
            self._audit(report, ghost, audited, Outcome.FAILED, False, before, None, cause, _explain(error))
            return Repair(report.target, ghost.username, str(audited), False, _explain(error))
        self._audit(report, ghost, audited, Outcome.APPLIED, verified, before, after, cause, reason)
        return Repair(report.target, ghost.username, str(audited), verified, reason)

    def _audit(
        self,
        report: TargetReport,
        discrepancy: Discrepancy,
        action: Action,
        outcome: Outcome,
        verified: bool,
        before: Mapping[str, NodeAcl | None],
        after: str | None,
        cause: Cause,
        reason: str,
        *,
        state: UserState | None = None,
    ) -> None:
        user_id = discrepancy.user_id or f"{GHOST_USER_PREFIX}{report.target}:{discrepancy.username}"
        self.engine.audit.append(
            AuditEntry(
                user_id=user_id,
                user_name=state.record.user_name if state is not None else discrepancy.username,
                redis_username=discrepancy.username,
                target=report.target,
                node_count=len(report.nodes),
                action=action,
                outcome=outcome,
                verified=verified,
                cause=cause,
                acl_before=describe_nodes(before),
                acl_after=after,
                reason=reason,
                user_version=state.version if state is not None else None,
            )
        )

    def _redrive(
        self,
        report: ReconcileReport,
        cause: Cause,
        progress: Progress | None,
        out_of_time: Callable[[], bool],
    ) -> list[Repair]:
        """Converge, directly and on every target, each user whose pending marker is older than the
        grace period: its change message was lost, or its apply kept failing (e.g. in the DLQ)."""
        older_than = _iso(self.clock() - timedelta(seconds=self.settings.pending_grace_seconds))
        stale = list(self.engine.directory.pending_users(older_than=older_than))
        repairs: list[Repair] = []
        for index, pending in enumerate(stale, start=1):
            if out_of_time():
                report.redrives_deferred = len(stale) - index + 1
                self.logger.warning(
                    "reconcile run out of time: re-drives left for the next run",
                    extra={"deferred": report.redrives_deferred},
                )
                break
            try:
                result = self.engine.converge(pending.user_id, cause)
                detail = (
                    "converged; marker cleared" if result.cleared else "converged; a newer change is pending"
                )
                repairs.append(Repair(None, pending.user_id, "redrive", True, detail))
            except Exception as error:
                repairs.append(Repair(None, pending.user_id, "redrive", False, _explain(error)))
            if progress is not None:
                progress(index, len(stale), "pending re-drive")
        return repairs

    def _defer(self, report: TargetReport, left: int) -> None:
        report.deferred = left
        self.logger.warning(
            "reconcile run out of time: repairs left for the next run",
            extra={"target": report.target, "deferred": left},
        )

    def _persist(self, report: ReconcileReport) -> None:
        for target_report in report.targets:
            if target_report.unreachable is not None:
                continue
            try:
                self.engine.targets[target_report.target].persist()
            except Exception as error:
                target_report.repairs.append(
                    Repair(target_report.target, "(persist)", "persist", False, _explain(error))
                )

    # --- observability -----------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        if self.engine.metrics is not None:
            self.engine.metrics.add_metric(name=name, unit="Count", value=1)

    def _log(self, report: ReconcileReport) -> None:
        self.logger.info(
            "reconcile run",
            extra={
                "run_id": report.run_id,
                "applied": report.applied,
                "seconds": round(report.seconds, 3),
                "counts": report.counts(),
                "unreachable": {r.target: r.unreachable for r in report.unreachable},
                "failed_repairs": len(report.failed_repairs),
                "redriven": len(report.redriven),
                "deferred": report.deferred,
            },
        )


MetricSink = Callable[[str, float, str, Mapping[str, str]], None]  # (name, value, unit, dimensions)


def publish_metrics(report: ReconcileReport, put: MetricSink) -> None:
    """A run's metrics: drift found by class, ghosts per target (and in total, for the alarm),
    targets unreachable, repairs deferred to the next run, duration. Zeros are sent too, so alarms
    see data on a healthy run."""
    put(MetricName.RECONCILE_DURATION, report.seconds * 1000, "Milliseconds", {})
    put(MetricName.TARGETS_UNREACHABLE, len(report.unreachable), "Count", {})
    put(MetricName.REPAIRS_DEFERRED, report.deferred, "Count", {})
    for finding in Finding:
        if finding is not Finding.GHOST:
            count = sum(r.count(finding) for r in report.targets)
            put(MetricName.DRIFT_FOUND, count, "Count", {"class": str(finding)})
    reachable = [r for r in report.targets if r.unreachable is None]
    for target_report in reachable:
        put(
            MetricName.GHOSTS_FOUND,
            target_report.count(Finding.GHOST),
            "Count",
            {"target": target_report.target},
        )
    put(MetricName.GHOSTS_FOUND, sum(r.count(Finding.GHOST) for r in reachable), "Count", {})


def _act_on_ghost(target: Target, username: str, acl: NodeAcl, *, deleting: bool) -> None:
    """Delete a ghost, or disable it: `off` with its rules kept, so an operator who adopts the user
    can turn it back on, then its connections cut. Every Target backend, ElastiCache included,
    reaches an unmanaged user by its username through the port."""
    if deleting:
        target.delete_user(username)
    else:
        target.write_user(username, ghost_disabled_rules(acl))
        target.disconnect_user(username)


def ghost_disabled_rules(acl: NodeAcl) -> list[str]:
    """SETUSER rules that give `acl` back exactly, but `off`."""
    rules = ["off"]
    rules += ["nopass"] if acl.nopass else [f"#{hashed}" for hashed in sorted(acl.password_hashes)]
    rules += sorted(acl.flags)
    rules += acl.root.rules().split()
    rules += [f"({selector.rules()})" for selector in sorted(acl.selectors, key=lambda s: s.rules())]
    return rules


def _drift_detail(per_node: Mapping[str, NodeAcl | None], desired: NodeAcl) -> str:
    differing = [node for node, acl in per_node.items() if acl != desired]
    return f"rules differ on {', '.join(differing)}: {describe_nodes(per_node)}; desired {desired.describe()}"


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (reference counting still frees everything).

    Compiling 100,000 users allocates a few hundred thousand small acyclic objects, which sets off
    a full collection over everything the process holds (the Directory snapshot included): about
    half of a cold compile's time at that size. Any cycle made meanwhile is collected afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _explain(error: BaseException) -> str:
    detail = error.detail if isinstance(error, errors.RedisScimError) else str(error)
    return f"{type(error).__name__}: {detail}"
