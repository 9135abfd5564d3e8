"""The sync engine: converge one user to its current desired state on every target, verify, audit.

Level-triggered: `converge(user_id, cause)` reads the user's *current* state from the Directory
(never the message), so duplicate, replayed or re-ordered messages are harmless. Per target it
plans (`plan_user`: desired ACL, ownership ledger, what every node has) and applies
(`apply_plan`: write on every node, cut sessions, read back, audit). The pending-sync marker is
cleared only when every target converged and only if the applied version is still the latest.

Many users (`batch(user_ids)`: an SQS batch, the reconciler's repairs, a bulk apply) are read,
planned, written and read back together, a few round trips per target for the whole batch; each
user's `converge` then takes its part and verifies, audits and clears its marker on its own. The
state a batch read is the user's current state for that batch; a change made meanwhile has its own
message (and keeps the marker).

Audit policy: one record per username changed per target (create, update, disable, delete), one
per rejection (invalid or colliding username), one per failed write; a target that already matched
gets no record (a level-triggered system re-checks constantly; "nothing to do" is not a change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from redis_scim import errors
from redis_scim.audit import Action, AuditEntry, AuditRecord, Outcome
from redis_scim.directory import Cause, Directory, UserState
from redis_scim.directory.ledger import Ledger, Ownership
from redis_scim.directory.rules import MetricsSink
from redis_scim.observability import MetricName
from redis_scim.policy import DesiredAcl, Policy, compile_user
from redis_scim.sync.plan import Rejection, Step, TargetPlan, describe_nodes, plan_target
from redis_scim.targets import NodeAcl, Target

USERNAME_COLLISIONS = "UsernameCollisions"
REJECTED_USERNAMES = "UsernamesRejected"


class AuditSink(Protocol):
    """Where audit entries go (`audit.AuditTrail`)."""

    def append(self, entry: AuditEntry) -> AuditRecord: ...


@dataclass(frozen=True)
class StepResult:
    """What applying one step did. `verified`: read back on every node and found as intended."""

    step: Step
    outcome: Outcome
    verified: bool
    reason: str | None = None


@dataclass
class Convergence:
    """The result of converging one user: what was done per target, and whether the marker cleared."""

    user_id: str
    version: int | None  # None: the user is unknown (never existed, or its tombstone is gone)
    plans: list[TargetPlan] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # target -> why it did not converge
    cleared: bool = False


class Collision(Exception):
    """The desired username belongs to another live user who still wants it."""

    def __init__(self, username: str, owner_id: str) -> None:
        super().__init__(f"username {username!r} belongs to another user ({owner_id})")
        self.username = username
        self.owner_id = owner_id


class SyncEngine:
    """Plans and applies users' desired ACLs on the policy's targets."""

    def __init__(
        self,
        *,
        directory: Directory,
        ledger: Ledger,
        policy: Policy,
        targets: Mapping[str, Target],
        audit: AuditSink,
        metrics: MetricsSink | None = None,
        logger: logging.Logger | Any | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        missing = set(policy.targets) - set(targets)
        if missing:
            raise ValueError(f"no target backend for {sorted(missing)}")
        self.directory = directory
        self.ledger = ledger
        self.policy = policy
        self.targets = targets
        self.audit = audit
        self.metrics = metrics
        self.logger = logger or logging.getLogger(__name__)
        self.clock = clock
        self._deferred_persistence: set[str] | None = None
        # What `batch` read, planned, applied and read back ahead: user id -> its state and held
        # usernames, (user id, target) -> plan, (target, username) -> its ACL on every node after
        # the batch's write. `current`, `plan_user` and `apply_plan` take each part once.
        self._states_ahead: dict[str, tuple[UserState | None, dict[str, frozenset[str]]]] = {}
        self._applied_ahead: dict[tuple[str, str], TargetPlan] = {}
        self._read_back_ahead: dict[tuple[str, str], dict[str, NodeAcl | None]] = {}
        self._changed_ahead: set[str] = set()

    @contextmanager
    def batch(self, user_ids: Sequence[str] = (), *, targets: Sequence[str] | None = None) -> Iterator[None]:
        """Converge many users for the price of a few round trips: `user_ids` (the users the block
        will converge) are planned and applied ahead on `targets` (default: every target of the
        policy), and every target touched inside the block is persisted once, at the end of the
        outermost batch, instead of after every user.

        `ACL SAVE` and `CONFIG REWRITE` rewrite the node's whole user list (and fsync), so per-user
        persistence costs O(users on the node) per change. The ACL changes themselves are live
        immediately; only durability across a restart waits for the end of the batch. A failed
        persist raises after every touched target was tried, so the batch is retried.

        Batches nest (the reconciler repairs in chunks inside its run's batch); what an inner batch
        applied ahead is its own, and what it leaves unused is dropped when it ends.
        """
        outermost = self._deferred_persistence is None
        if outermost:
            self._deferred_persistence = set()
        try:
            self._apply_ahead(user_ids, self.policy.targets if targets is None else targets)
            yield
        finally:
            self._states_ahead, self._applied_ahead, self._read_back_ahead = {}, {}, {}
            self._changed_ahead = set()
            if outermost:
                touched, self._deferred_persistence = self._deferred_persistence or set(), None
                self._persist_touched(touched)

    def _persist_touched(self, touched: set[str]) -> None:
        failures: list[BaseException] = []
        for name in sorted(touched):
            try:
                self._persist(self.targets[name])
            except Exception as error:
                failures.append(error)
        if failures:
            raise failures[0]

    def _apply_ahead(self, user_ids: Sequence[str], target_names: Sequence[str]) -> None:
        """Plan these users on these targets with one read per target, apply all their changes with
        one `apply_batch` per target, and read the written users back with one more read.

        `converge` (or the reconciler's `plan_user` + `apply_plan`) then carries out each plan as
        usual, from these results: a step whose read-back already shows the desired ACL on every
        node needs no round trip of its own; any other step (a disabled user's sessions to cut, a
        deletion to verify, a write that did not land) is done and checked one user at a time. The
        audit record, the metrics and the pending marker stay per user. Nothing here raises: a user
        that cannot be planned, or a batch call that fails, is left to the per-user path, which
        then fails (and audits, and retries) for exactly the users it concerns.
        """
        if not user_ids:
            return
        for user_id in dict.fromkeys(user_ids):
            try:
                state = self.directory.user_state(user_id)
                self._states_ahead[user_id] = (state, self.ledger.held(user_id) if state else {})
            except Exception as error:
                self.logger.debug("not planned ahead", extra={"user_id": user_id, "error": _explain(error)})
        known = [(state, held) for state, held in self._states_ahead.values() if state is not None]
        for name in target_names:
            plans = self._plan_ahead(name, known)
            self._applied_ahead.update(((plan.user_id, name), plan) for plan in plans)
            changes: dict[str, Sequence[str] | None] = {
                step.username: step.desired.setuser_rules() if step.desired else None
                for plan in plans
                for step in plan.changes
            }
            if not changes:
                continue
            # Even a failed batch call may have applied part of the batch.
            self._changed_ahead.update(plan.user_id for plan in plans if plan.changes)
            target = self.targets[name]
            try:
                target.apply_batch(changes)
                written = [username for username, rules in changes.items() if rules is not None]
                read_back = target.read_users(written) if written else {}
            except Exception as error:
                self.logger.warning(
                    "batched apply failed; each user's change is applied on its own",
                    extra={"target": name, "users": len(changes), "error": _explain(error)},
                )
                continue
            self._read_back_ahead.update(((name, username), acls) for username, acls in read_back.items())
            if self._deferred_persistence is not None:
                self._deferred_persistence.add(name)

    def _plan_ahead(
        self, target_name: str, users: Iterable[tuple[UserState, dict[str, frozenset[str]]]]
    ) -> list[TargetPlan]:
        """The plans of the users that could be planned on this target (`converge` plans the
        others again and reports why they failed)."""
        wants: list[_Want] = []
        for state, held in users:
            try:
                wants.append(self._want(state, target_name, held.get(target_name, frozenset()), claim=True))
            except Exception as error:
                self.logger.debug(
                    "not planned ahead",
                    extra={"user_id": state.user_id, "target": target_name, "error": _explain(error)},
                )
        try:
            return self._plans(target_name, wants)
        except Exception as error:
            self.logger.debug("not planned ahead", extra={"target": target_name, "error": _explain(error)})
            return []

    def changed_ahead(self, user_id: str) -> bool:
        """Whether this batch may already have changed a target for the user: its `converge` must
        still run (it reads back and audits what was done), however little time is left."""
        return user_id in self._changed_ahead

    # --- the applier's entry point -----------------------------------------------------------------

    def converge(self, user_id: str, cause: Cause) -> Convergence:
        """Make every target match the user's current desired state; raise if any target did not.

        Every target is attempted even when one fails; then `errors.SyncIncomplete` is raised (so
        the message is retried) and the pending marker stays. A rejected username is final: it is
        audited, counted, and the marker is cleared (retrying cannot help).
        """
        state, held = self.current(user_id)
        result = Convergence(user_id, state.version if state else None)
        if state is None:
            return result
        for target_name in self.policy.targets:
            # One target's failure never stops the others. A failed write was already counted
            # (and audited) by the step that attempted it; a failed read or claim is counted here.
            try:
                plan = self.plan_user(state, target_name, held=held.get(target_name, frozenset()), claim=True)
            except Exception as error:
                self._count(MetricName.APPLY_FAILURES)
                self._target_failed(result, target_name, error)
                continue
            result.plans.append(plan)
            try:
                results = self.apply_plan(plan, state, cause)
            except Exception as error:
                self._target_failed(result, target_name, error)
                continue
            result.results.extend(results)
            unverified = [r for r in results if r.outcome is not Outcome.REJECTED and not r.verified]
            if unverified:
                result.failures[target_name] = "; ".join(
                    f"{r.step.username}: {r.reason or 'read-back did not match'}" for r in unverified
                )
        if result.failures:
            raise errors.SyncIncomplete(user_id, result.failures)
        result.cleared = self.directory.clear_pending(user_id, version=state.version)
        return result

    def current(self, user_id: str) -> tuple[UserState | None, dict[str, frozenset[str]]]:
        """The user's state and the usernames it holds per target: as the batch read them (once),
        else from the Directory and the ledger now."""
        ahead = self._states_ahead.pop(user_id, None)
        if ahead is not None:
            return ahead
        state = self.directory.user_state(user_id)
        return state, self.ledger.held(user_id) if state is not None else {}

    def _target_failed(self, result: Convergence, target_name: str, error: Exception) -> None:
        result.failures[target_name] = _explain(error)
        self.logger.warning(
            "target did not converge",
            extra={"user_id": result.user_id, "target": target_name, "error": _explain(error)},
        )

    # --- plan --------------------------------------------------------------------------------------

    def plan_user(
        self, state: UserState, target_name: str, *, held: frozenset[str] | None = None, claim: bool = False
    ) -> TargetPlan:
        """What must change for this user on this target. Reads the target; writes nothing to it.

        `claim=True` (the applier) claims the desired username in the ledger; `claim=False` (plan,
        dry runs) only reads the ledger. Raises `errors.UsernameHeld` when the name still belongs
        to a user being deprovisioned or renamed (retry later), and whatever the target raises
        when a node cannot be read.
        """
        if claim:
            ahead = self._applied_ahead.pop((state.user_id, target_name), None)
            if ahead is not None and ahead.user_version == state.version:
                return ahead  # planned (and claimed) by the batch
        if held is None:
            held = self.ledger.held(state.user_id).get(target_name, frozenset())
        return self._plans(target_name, [self._want(state, target_name, held, claim=claim)])[0]

    def _want(self, state: UserState, target_name: str, held: frozenset[str], *, claim: bool) -> _Want:
        """What the user wants on the target and which usernames there it holds (before reading it)."""
        desired, rejection = self._desired(state, target_name, claim=claim)
        protected = self.policy.target(target_name).protected_usernames
        kept = frozenset(name for name in held if name not in protected)
        if kept != held:
            self.logger.warning(
                "allow-listed usernames held by a SCIM user are left untouched",
                extra={"user_id": state.user_id, "target": target_name, "usernames": sorted(held - kept)},
            )
        return _Want(state, desired, rejection, kept)

    def _plans(self, target_name: str, wants: Sequence[_Want]) -> list[TargetPlan]:
        """The users' plans on the target, from one read of every username they concern."""
        target = self.targets[target_name]
        names = sorted({name for want in wants for name in want.usernames})
        # Nothing wanted and nothing held here: the target is not even contacted (it may be down).
        nodes = tuple(target.nodes()) if names else ()
        actual = target.read_users(names) if names else {}
        return [
            plan_target(
                target=target_name,
                user_id=want.state.user_id,
                user_version=want.state.version,
                nodes=nodes,
                desired=want.desired,
                desired_acl=target.canonical(want.desired.setuser_rules()) if want.desired else None,
                held=want.held,
                actual=actual,
                stale_reason=self._stale_reason(want.state, want.desired, want.rejection),
                rejection=want.rejection,
            )
            for want in wants
        ]

    def _desired(
        self, state: UserState, target_name: str, *, claim: bool
    ) -> tuple[DesiredAcl | None, Rejection | None]:
        if state.deleted:
            return None, None
        try:
            desired = compile_user(
                self.policy, target_name, state.record, [g.display_name for g in state.groups]
            )
        except errors.InvalidUsername as error:
            return None, Rejection(None, error.detail)
        if desired is None:
            return None, None
        try:
            self._own(state.user_id, target_name, desired.username, claim=claim)
        except Collision as collision:
            return None, Rejection(desired.username, str(collision), collision=True)
        return desired, None

    def _own(self, user_id: str, target_name: str, username: str, *, claim: bool) -> None:
        """Make sure `user_id` may use `username` on the target (claiming it when `claim`)."""
        replacing: str | None = None
        entry: Ownership | None
        for _ in range(2):
            if claim:
                entry = self.ledger.claim(target_name, username, user_id, replacing=replacing)
            else:
                entry = self.ledger.owner(target_name, username)
            if entry is None or entry.released or entry.user_id == user_id:
                return
            owner = self.directory.user_state(entry.user_id)
            if owner is None:
                if not claim:
                    return  # the owner is gone for good; the applier will take the name over
                replacing = entry.user_id
                continue
            if owner.deleted:
                raise errors.UsernameHeld(
                    f"username {username!r} on {target_name!r} still belongs to deleted user "
                    f"{entry.user_id} until it is deprovisioned"
                )
            if self._still_wants(owner, target_name, username):
                raise Collision(username, entry.user_id)
            raise errors.UsernameHeld(
                f"username {username!r} on {target_name!r} is still held by user {entry.user_id}, "
                "which no longer uses it; waiting for its change to be applied"
            )
        raise errors.UsernameHeld(f"username {username!r} on {target_name!r} changed owner while claiming")

    def _still_wants(self, owner: UserState, target_name: str, username: str) -> bool:
        try:
            wanted = compile_user(
                self.policy, target_name, owner.record, [g.display_name for g in owner.groups]
            )
        except errors.InvalidUsername:
            return False
        return wanted is not None and wanted.username == username

    @staticmethod
    def _stale_reason(state: UserState, desired: DesiredAcl | None, rejection: Rejection | None) -> str:
        if state.deleted:
            return "user deleted"
        if rejection is not None:
            return f"desired username rejected: {rejection.reason}"
        if desired is not None:
            return f"renamed to {desired.username!r}"
        return "no group of the user maps to a role on this target"

    # --- apply -------------------------------------------------------------------------------------

    def apply_plan(self, plan: TargetPlan, state: UserState, cause: Cause) -> list[StepResult]:
        """Carry out a plan: write on every node, cut sessions, read back, release, audit, persist.

        A failing write is audited as `failed` and re-raised after the audit (later steps of this
        target are not attempted). Returns one result per step that changed or rejected something.
        """
        target = self.targets[plan.target]
        results: list[StepResult] = []
        if plan.rejection is not None:
            results.append(self._reject(plan, state, cause))
        wrote = False
        try:
            for step in plan.steps:
                if step.changes_target:
                    wrote = True
                    results.append(self._apply_step(target, plan, step, state, cause))
                elif step.desired is None:
                    # Held but already absent everywhere (e.g. a node set restarted empty): just let go.
                    self.ledger.release(plan.target, step.username, state.user_id)
                elif not step.desired.enabled:
                    revoked = self._ensure_revoked(target, plan, step, state, cause)
                    wrote = wrote or revoked is not None
                    results.extend([revoked] if revoked else [])
        finally:
            if wrote and self._deferred_persistence is not None:
                self._deferred_persistence.add(plan.target)
            elif wrote:
                self._persist(target)
        return results

    def _persist(self, target: Target) -> None:
        try:
            target.persist()
        except Exception:
            self._count(MetricName.APPLY_FAILURES)
            raise

    def _apply_step(
        self, target: Target, plan: TargetPlan, step: Step, state: UserState, cause: Cause
    ) -> StepResult:
        started = time.monotonic()
        try:
            if step.desired is None:
                target.delete_user(step.username)
                verified = target.verify_revoked(step.username, deleted=True)
                after = None
            else:
                expected = step.desired_acl or target.canonical(step.desired.setuser_rules())
                read_back = self._read_back_ahead.pop((plan.target, step.username), {})
                verified = _matches(read_back, expected, plan.nodes)
                if not (verified and step.desired.enabled):
                    target.write_user(step.username, step.desired.setuser_rules())
                    if not step.desired.enabled:
                        target.disconnect_user(step.username)
                    read_back = target.read_users([step.username]).get(step.username, {})
                    verified = _matches(read_back, expected, plan.nodes)
                if not step.desired.enabled:
                    verified = verified and target.verify_revoked(step.username, deleted=False)
                after = describe_nodes(read_back) or step.desired.describe()
        except Exception as error:
            self._count(MetricName.APPLY_FAILURES)
            self._record(plan, step, state, cause, Outcome.FAILED, verified=False, reason=_explain(error))
            raise
        reason = step.reason if verified else _join(step.reason, "read-back did not confirm the change")
        self._record(plan, step, state, cause, Outcome.APPLIED, verified=verified, reason=reason, after=after)
        if not verified:
            self._count(MetricName.APPLY_FAILURES)
            return StepResult(step, Outcome.APPLIED, verified=False, reason=reason)
        if step.desired is None:
            self.ledger.release(plan.target, step.username, state.user_id)
        self._count_success(step, state, started)
        return StepResult(step, Outcome.APPLIED, verified=True, reason=step.reason)

    def _ensure_revoked(
        self, target: Target, plan: TargetPlan, step: Step, state: UserState, cause: Cause
    ) -> StepResult | None:
        """A disabled user already `off` everywhere must also have no connection left: an earlier
        attempt may have written `off` and failed before CLIENT KILL."""
        if target.verify_revoked(step.username, deleted=False):
            return None
        disable = replace(step, action=Action.DISABLE, reason="connections of a disabled user remained")
        return self._apply_step(target, plan, disable, state, cause)

    def _reject(self, plan: TargetPlan, state: UserState, cause: Cause) -> StepResult:
        assert plan.rejection is not None
        rejection = plan.rejection
        self._count(USERNAME_COLLISIONS if rejection.collision else REJECTED_USERNAMES)
        self.logger.warning(
            "username rejected",
            extra={"user_id": state.user_id, "target": plan.target, "reason": rejection.reason},
        )
        step = Step(plan.target, rejection.username or "", Action.SKIPPED, None, None, {})
        self._record(plan, step, state, cause, Outcome.REJECTED, verified=False, reason=rejection.reason)
        return StepResult(step, Outcome.REJECTED, verified=False, reason=rejection.reason)

    # --- audit and metrics -------------------------------------------------------------------------

    def _record(
        self,
        plan: TargetPlan,
        step: Step,
        state: UserState,
        cause: Cause,
        outcome: Outcome,
        *,
        verified: bool,
        reason: str | None,
        after: str | None = None,
    ) -> None:
        entry = AuditEntry(
            user_id=state.user_id,
            user_name=state.record.user_name,
            redis_username=step.username or None,
            target=plan.target,
            node_count=len(plan.nodes),
            action=step.action,
            outcome=outcome,
            verified=verified,
            cause=cause,
            acl_before=describe_nodes(step.before) if step.before else None,
            acl_after=after,
            reason=reason,
            user_version=state.version,
        )
        try:
            self.audit.append(entry)
        except Exception:
            # The structured log is the trail's second copy: never lose what happened to the target.
            self.logger.error(
                "audit append failed",
                extra={
                    "user_id": entry.user_id,
                    "target": entry.target,
                    "redis_username": entry.redis_username,
                    "action": str(entry.action),
                    "outcome": str(entry.outcome),
                    "verified": entry.verified,
                    "request_id": cause.request_id,
                },
            )
            raise

    def _count_success(self, step: Step, state: UserState, started: float) -> None:
        if step.action is Action.CREATE and step.desired is not None and step.desired.enabled:
            self._count(MetricName.PROVISIONED)
        elif step.action in (Action.DELETE, Action.DISABLE):
            self._count(MetricName.DEPROVISIONED)
            changed_at = _parse_time(state.record.last_modified)
            if self.metrics is not None and changed_at is not None:
                latency = (self.clock() - changed_at).total_seconds() * 1000
                self.metrics.add_metric(
                    name=MetricName.DEPROVISION_LATENCY, unit="Milliseconds", value=latency
                )
        self.logger.info(
            "applied",
            extra={
                "target": step.target,
                "redis_username": step.username,
                "action": str(step.action),
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.add_metric(name=name, unit="Count", value=1)


@dataclass(frozen=True)
class _Want:
    """One user's wish on one target before the target is read: the desired ACL (or why it is
    rejected) and the usernames the ledger says it holds there."""

    state: UserState
    desired: DesiredAcl | None
    rejection: Rejection | None
    held: frozenset[str]

    @property
    def usernames(self) -> frozenset[str]:
        return self.held | ({self.desired.username} if self.desired else frozenset())


def _matches(read_back: Mapping[str, NodeAcl | None], expected: NodeAcl, nodes: Sequence[str]) -> bool:
    """Every node of the plan reports exactly the expected ACL."""
    return len(read_back) == len(nodes) and all(acl == expected for acl in read_back.values())


def _explain(error: BaseException) -> str:
    detail = error.detail if isinstance(error, errors.RedisScimError) else str(error)
    return f"{type(error).__name__}: {detail}"


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
