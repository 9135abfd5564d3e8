"""The Directory on one DynamoDB table (DESIGN.md §5): users, groups, memberships, uniqueness guards.

Item layout (`pk`, `sk`):

- User `USER#<id>`, `#USER`: `resource` (the SCIM attributes as JSON), `version`, `created`,
  `last_modified`, `password_sha256` (optional; the only secret-derived value we keep),
  `group_ids` (string set: the user → groups index, see below), `kind`=`User` and
  `kind_sort`=`<created>#<id>` (ByKind index: stable listing order), and while a change awaits the
  applier `pending`=`PENDING#<shard>` + `pending_at` (sparse PendingSync index).
  A deleted user becomes a tombstone: `deleted`=true, no `kind` (it drops out of listings), the
  marker set, until `clear_pending` acknowledges its deprovisioning and removes the item.
- Group `GROUP#<id>`, `#GROUP`: `resource`, `display_name`, `version`, `created`,
  `last_modified`, `kind`=`Group`, `kind_sort`.
- Membership `GROUP#<gid>`, `MEMBER#<uid>`: `display`. Members are items, so a group of 50,000
  works and a member PATCH touches only the k members it names.
- Uniqueness guard `UNIQUE#<kind>#<attribute>#<sha256 of the normalised value>`, `#UNIQUE`:
  `owner`. Written in the same transaction as the resource with `attribute_not_exists(pk)`; the
  value is hashed so any length or character fits the key limits.

Decisions:

- The user → groups direction lives on the user item (`group_ids`), changed in the same
  transaction that bumps the user's version. The applier reads a user right after its change
  message arrives; a GSI (eventually consistent) could still show the old groups and the applier
  would converge to them and clear the marker. Strongly consistent reads of the user item cannot.
  Group names are read on demand (BatchGetItem), so a rename never rewrites membership items.
- A rename changes which policy rules match the group's members (the policy maps by
  displayName), so it bumps every member's version and publishes one message per member (O(n),
  on rename only).
- Every change to a user's rights bumps that user's version with a condition on the version
  read just before (`version = :read`), sets its marker and publishes `<id>:<version>` after
  commit. A condition failure re-reads that chunk and retries.
- A transaction holds at most 100 items: membership changes run in chunks of `CHUNK_USERS`
  users (user item + membership item each, plus the group item). Each chunk is atomic and
  idempotent; a change spanning several chunks is applied chunk by chunk and bumps the group's
  version once per chunk, so every visible member set has its own version. Unknown member ids are
  rejected before the first chunk is written.
- Member deltas bump the group's version without a version condition (unless `expected_version`
  is given), so concurrent PATCHes of different members of one group both land.
- The pending marker's partition key is spread over `PENDING_SHARDS` values: a 50,000-member
  group change would otherwise write every marker to one GSI partition.
- Throttling and exhausted transaction conflicts become `errors.ServiceUnavailable` (503). The
  client should use botocore's standard retry mode; this module retries what botocore cannot see
  (cancelled transactions).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import random
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from redis_scim import errors
from redis_scim.directory import (
    Cause,
    ChangeFeed,
    GroupChange,
    GroupRecord,
    GroupRef,
    Lookup,
    Member,
    Page,
    PendingUser,
    Predicate,
    UserChange,
    UserRecord,
    UserState,
)
from redis_scim.directory.rules import (
    UNIQUE_ATTRIBUTES,
    Kind,
    MetricsSink,
    check_lookup,
    clean_resource,
    distinct_members,
    new_id,
    normalise,
    page_bounds,
    publish_changes,
    taken,
    unique_values,
    unknown_member,
    utc_now,
    version_conflict,
)

USER_SK, GROUP_SK, UNIQUE_SK, MEMBER_PREFIX = "#USER", "#GROUP", "#UNIQUE", "MEMBER#"
BY_KIND_INDEX, PENDING_INDEX = "ByKind", "PendingSync"
PENDING_SHARDS = 8
# 100 items per transaction: 2 per user (user + membership) + the group item + up to 4 guard moves.
CHUNK_USERS = 45
BATCH_GET_KEYS = 100
MAX_ATTEMPTS = 8

_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
}
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}

# Attribute names used in expressions go through placeholders: several are reserved words.
_NAMES = {
    "#version": "version",
    "#resource": "resource",
    "#last_modified": "last_modified",
    "#pending": "pending",
    "#pending_at": "pending_at",
    "#group_ids": "group_ids",
    "#deleted": "deleted",
    "#kind": "kind",
    "#kind_sort": "kind_sort",
    "#owner": "owner",
    "#password": "password_sha256",
    "#display_name": "display_name",
}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _names(expression: str) -> dict[str, str]:
    return {placeholder: name for placeholder, name in _NAMES.items() if placeholder in expression}


def _user_key(user_id: str) -> dict[str, Any]:
    return {"pk": _s(f"USER#{user_id}"), "sk": _s(USER_SK)}


def _group_key(group_id: str) -> dict[str, Any]:
    return {"pk": _s(f"GROUP#{group_id}"), "sk": _s(GROUP_SK)}


def _member_key(group_id: str, user_id: str) -> dict[str, Any]:
    return {"pk": _s(f"GROUP#{group_id}"), "sk": _s(f"{MEMBER_PREFIX}{user_id}")}


def _guard_key(kind: Kind, attribute: str, normalised: str) -> dict[str, Any]:
    digest = hashlib.sha256(normalised.encode()).hexdigest()
    return {"pk": _s(f"UNIQUE#{kind}#{attribute}#{digest}"), "sk": _s(UNIQUE_SK)}


def _pending_shard(user_id: str) -> str:
    return f"PENDING#{zlib.crc32(user_id.encode()) % PENDING_SHARDS}"


def _id_of(item: dict[str, Any]) -> str:
    return str(item["pk"]["S"].split("#", 1)[1])


def _user_record(item: dict[str, Any]) -> UserRecord:
    password = item.get("password_sha256")
    return UserRecord(
        id=_id_of(item),
        version=int(item["version"]["N"]),
        created=item["created"]["S"],
        last_modified=item["last_modified"]["S"],
        resource=json.loads(item["resource"]["S"]),
        password_sha256=password["S"] if password else None,
    )


def _group_record(item: dict[str, Any]) -> GroupRecord:
    return GroupRecord(
        id=_id_of(item),
        version=int(item["version"]["N"]),
        created=item["created"]["S"],
        last_modified=item["last_modified"]["S"],
        resource=json.loads(item["resource"]["S"]),
    )


class _Cancelled(Exception):
    """A conditional write or transaction was refused; one reason code per item written."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(", ".join(reasons))
        self.reasons = reasons

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"

    @property
    def retryable(self) -> bool:
        return any(reason in _RETRYABLE_REASONS for reason in self.reasons)


@dataclass(frozen=True)
class _Step:
    """What one group change does to one user."""

    user_id: str
    action: Literal["join", "leave", "touch"]
    display: str | None = None


@dataclass
class _Head:
    """The items the first chunk of a group change writes besides the users, and how a failed
    condition among them is explained (None: a concurrent writer, retry)."""

    items: list[dict[str, Any]]
    explain: Callable[[int], errors.RedisScimError | None]


@dataclass
class _Snapshot:
    """Users' versions (None: missing or deleted) and which of them are members, as read."""

    versions: dict[str, int | None] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)


class DynamoDirectory:
    """The Directory port on the single DynamoDB table `table_name`; `client` is a boto3 DynamoDB client."""

    def __init__(
        self,
        table_name: str,
        client: Any,
        feed: ChangeFeed | None,
        *,
        metrics: MetricsSink | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._table = table_name
        self._client = client
        self._feed = feed
        self._metrics = metrics
        self._logger = logger or logging.getLogger(__name__)

    # --- users -----------------------------------------------------------------------------------

    def create_user(
        self, resource: dict[str, Any], *, password_sha256: str | None, cause: Cause
    ) -> UserRecord:
        resource = clean_resource("User", resource)
        user_id, now = new_id(), utc_now()
        claims = unique_values("User", resource)
        items = self._new_user_items(user_id, resource, password_sha256, now)
        self._write_retrying(items, explain=lambda i: taken("User", list(claims)[i - 1]) if i else None)
        self._publish([UserChange(user_id, 1, cause)])
        return UserRecord(user_id, 1, now, now, resource, password_sha256)

    def get_user(self, user_id: str) -> UserRecord:
        item = self._get(_user_key(user_id))
        if item is None or "deleted" in item:
            raise errors.NotFound(f"User {user_id} not found")
        return _user_record(item)

    def replace_user(
        self,
        user_id: str,
        resource: dict[str, Any],
        *,
        expected_version: int | None,
        password_sha256: str | None,
        keep_password: bool,
        cause: Cause,
        current: UserRecord | None = None,
    ) -> UserRecord:
        resource = clean_resource("User", resource)
        for _ in range(MAX_ATTEMPTS):
            if current is None:
                current = self.get_user(user_id)
            if expected_version is not None and expected_version != current.version:
                raise version_conflict("User", user_id, expected_version, current.version)
            now, version = utc_now(), current.version + 1
            password = current.password_sha256 if keep_password else password_sha256
            expression = (
                "SET #resource = :resource, #version = :next, #last_modified = :now,"
                " #pending = :pending, #pending_at = :now"
            )
            values = {
                ":resource": _s(json.dumps(resource)),
                ":next": _n(version),
                ":read": _n(current.version),
                ":now": _s(now),
                ":pending": _s(_pending_shard(user_id)),
            }
            if password is None:
                expression += " REMOVE #password"
            else:
                expression += ", #password = :password"
                values[":password"] = _s(password)
            update = self._update(
                _user_key(user_id), expression, "#version = :read AND attribute_not_exists(#deleted)", values
            )
            moves, new_claims = self._guard_moves(
                "User", user_id, unique_values("User", current.resource), unique_values("User", resource)
            )
            try:
                self._write([update, *moves])
            except _Cancelled as cancelled:
                if not cancelled.failed(0):  # the record was current, so a refused claim is taken
                    self._raise_for_claims(
                        "User", cancelled, new_claims, offset=1 + len(moves) - len(new_claims)
                    )
                self._pause()  # a concurrent writer: read again (VersionConflict if one was expected)
                current = None
                continue
            self._publish([UserChange(user_id, version, cause)])
            return UserRecord(user_id, version, current.created, now, resource, password)
        raise errors.ServiceUnavailable(f"User {user_id} is changing too often; retry later")

    def delete_user(self, user_id: str, *, expected_version: int | None, cause: Cause) -> None:
        refused = 0
        while refused < MAX_ATTEMPTS:
            item = self._get(_user_key(user_id))
            if item is None or "deleted" in item:
                raise errors.NotFound(f"User {user_id} not found")
            current = _user_record(item)
            if expected_version is not None and expected_version != current.version:
                raise version_conflict("User", user_id, expected_version, current.version)
            group_ids = sorted(item.get("group_ids", {}).get("SS", []))
            if refused:
                # A refused write may name a group deleted meanwhile: keep only groups that exist.
                group_ids = sorted(
                    _id_of(g) for g in self._batch_get([_group_key(g) for g in group_ids], "pk")
                )
            try:
                if len(group_ids) > CHUNK_USERS:
                    # Too many groups for one transaction: leave some, then read the user again.
                    self._leave_groups(current, group_ids[:CHUNK_USERS])
                    expected_version = None  # verified by the version condition of that write
                    continue
                self._write(self._tombstone_items(current, group_ids))
            except _Cancelled:
                refused += 1
                self._pause()
                continue
            self._publish([UserChange(user_id, current.version + 1, cause)])
            return
        raise errors.ServiceUnavailable(f"User {user_id} is changing too often; retry later")

    def search_users(
        self, *, lookup: Lookup | None, predicate: Predicate | None, start_index: int, count: int
    ) -> Page:
        if lookup is not None:
            check_lookup("User", lookup[0])
            found = self._lookup("User", lookup)
            try:
                records = [self.get_user(found)] if found else []
            except errors.NotFound:
                records = []
            return _narrow(records, predicate, start_index, count)
        return self._list("User", _user_record, predicate, start_index, count)

    def user_groups(self, user_id: str) -> list[GroupRef]:
        item = self._get(_user_key(user_id), projection="pk, #group_ids, #deleted")
        if item is None or "deleted" in item:
            raise errors.NotFound(f"User {user_id} not found")
        return self._group_refs(item)

    # --- groups ----------------------------------------------------------------------------------

    def create_group(
        self, resource: dict[str, Any], *, members: Sequence[Member], cause: Cause
    ) -> GroupRecord:
        resource = clean_resource("Group", resource)
        wanted = distinct_members(members)
        group_id, now = new_id(), utc_now()
        snapshot = self._snapshot(group_id, list(wanted), with_memberships=False)  # a new group has none
        for user_id in wanted:
            if snapshot.versions.get(user_id) is None:
                raise unknown_member(user_id)
        item = {
            **_group_key(group_id),
            "resource": _s(json.dumps(resource)),
            "display_name": _s(resource["displayName"]),
            "version": _n(1),
            "created": _s(now),
            "last_modified": _s(now),
            "kind": _s("Group"),
            "kind_sort": _s(f"{now}#{group_id}"),
        }
        claims = unique_values("Group", resource)
        head = _Head(
            [self._put(item, "attribute_not_exists(pk)"), *self._guard_puts("Group", group_id, claims)],
            explain=lambda i: taken("Group", list(claims)[i - 1]) if i else None,
        )
        steps = [_Step(uid, "join", member.display) for uid, member in wanted.items()]
        self._run_steps(group_id, steps, head, snapshot, cause, now)
        return self.get_group(group_id)

    def get_group(self, group_id: str) -> GroupRecord:
        item = self._get(_group_key(group_id))
        if item is None:
            raise errors.NotFound(f"Group {group_id} not found")
        return _group_record(item)

    def group_members(self, group_id: str) -> list[Member]:
        self.get_group(group_id)
        return list(self._members(group_id))

    def change_group(
        self, group_id: str, change: GroupChange, *, expected_version: int | None, cause: Cause
    ) -> GroupRecord:
        resource = clean_resource("Group", change.resource) if change.resource is not None else None
        for _ in range(MAX_ATTEMPTS):
            try:
                return self._change_group(group_id, change, resource, expected_version, cause)
            except _Retry:
                self._pause()
        raise errors.ServiceUnavailable(f"Group {group_id} is changing too often; retry later")

    def delete_group(self, group_id: str, *, expected_version: int | None, cause: Cause) -> None:
        for _ in range(MAX_ATTEMPTS):
            current = self.get_group(group_id)
            if expected_version is not None and expected_version != current.version:
                raise version_conflict("Group", group_id, expected_version, current.version)
            members = [member.value for member in self._members(group_id)]
            if members:
                # Members leave first and the group item goes last, on a version condition: a member
                # who joined meanwhile fails it and is removed on the next round, and an interrupted
                # delete leaves a smaller group that a repeated DELETE finishes.
                head = _Head([self._group_bump(group_id, expected_version)], self._group_explainer(group_id))
                steps = [_Step(uid, "leave") for uid in members]
                self._run_steps(group_id, steps, head, _Snapshot(members=set(members)), cause, utc_now())
                expected_version = None
                continue
            condition, values = "#version = :read", {":read": _n(current.version)}
            delete = {
                "Delete": {
                    "TableName": self._table,
                    "Key": _group_key(group_id),
                    "ConditionExpression": condition,
                    **self._expression_parts(condition, values),
                }
            }
            # The guards released are those of the group as read now (a rename moves them).
            releases = [
                self._guard_delete(key, group_id) for key in self._guard_keys("Group", current.resource)
            ]
            try:
                self._write([delete, *releases])
                return
            except _Cancelled:
                self._pause()
        raise errors.ServiceUnavailable(f"Group {group_id} is changing too often; retry later")

    def search_groups(
        self, *, lookup: Lookup | None, predicate: Predicate | None, start_index: int, count: int
    ) -> Page:
        if lookup is not None:
            check_lookup("Group", lookup[0])
            found = self._lookup("Group", lookup)
            try:
                records = [self.get_group(found)] if found else []
            except errors.NotFound:
                records = []
            return _narrow(records, predicate, start_index, count)
        return self._list("Group", _group_record, predicate, start_index, count)

    # --- convergence -----------------------------------------------------------------------------

    def pending_users(self, *, older_than: str | None = None) -> Iterable[PendingUser]:
        shards = [self._pending_shard_users(f"PENDING#{n}", older_than) for n in range(PENDING_SHARDS)]
        return heapq.merge(*shards, key=lambda pending: (pending.pending_at, pending.user_id))

    def user_state(self, user_id: str) -> UserState | None:
        item = self._get(_user_key(user_id))
        if item is None:
            return None
        deleted = "deleted" in item
        record = _user_record(item)
        return UserState(
            user_id=user_id,
            version=record.version,
            deleted=deleted,
            record=record,
            groups=[] if deleted else self._group_refs(item),
            pending="pending" in item,
        )

    def clear_pending(self, user_id: str, *, version: int) -> bool:
        values = {":version": _n(version)}
        live = self._update(
            _user_key(user_id),
            "REMOVE #pending, #pending_at",
            "#version = :version AND attribute_exists(#pending) AND attribute_not_exists(#deleted)",
            values,
        )
        condition = "#version = :version AND attribute_exists(#deleted)"
        tombstone = {
            "Delete": {
                "TableName": self._table,
                "Key": _user_key(user_id),
                "ConditionExpression": condition,
                **self._expression_parts(condition, values),
            }
        }
        for write in (live, tombstone):
            try:
                self._write([write])
                return True
            except _Cancelled as cancelled:
                if cancelled.retryable:
                    raise errors.ServiceUnavailable("Directory table is busy; retry later") from cancelled
        return False

    # --- group change internals ------------------------------------------------------------------

    def _change_group(
        self,
        group_id: str,
        change: GroupChange,
        resource: dict[str, Any] | None,
        expected_version: int | None,
        cause: Cause,
    ) -> GroupRecord:
        current = (
            self.get_group(group_id) if resource is not None or change.replace_members is not None else None
        )
        if current is not None and expected_version is not None and expected_version != current.version:
            raise version_conflict("Group", group_id, expected_version, current.version)
        renamed = (
            current is not None and resource is not None and resource["displayName"] != current.display_name
        )
        members_now: set[str] | None = None
        if change.replace_members is not None or renamed:
            members_now = {member.value for member in self._members(group_id)}

        if change.replace_members is not None:
            assert members_now is not None
            wanted = distinct_members(change.replace_members)
            snapshot = self._snapshot(
                group_id, [uid for uid in wanted if uid not in members_now], with_memberships=False
            )
            snapshot.members = set(members_now)
            joining = {uid: m for uid, m in wanted.items() if uid not in members_now}
            leaving = [uid for uid in sorted(members_now) if uid not in wanted]
        else:
            additions = distinct_members(change.add_members)
            removals = [uid for uid in dict.fromkeys(change.remove_members) if uid not in additions]
            snapshot = self._snapshot(group_id, [*additions, *removals], with_memberships=True)
            joining = {uid: m for uid, m in additions.items() if uid not in snapshot.members}
            leaving = [uid for uid in removals if uid in snapshot.members]
        for user_id in joining:
            if snapshot.versions.get(user_id) is None:
                raise unknown_member(user_id)

        steps = [_Step(uid, "join", m.display) for uid, m in joining.items()]
        steps += [_Step(uid, "leave") for uid in leaving]
        if renamed:
            # The policy maps groups by displayName: a rename can change every member's rights.
            assert members_now is not None
            moving = set(joining) | set(leaving)
            steps += [_Step(uid, "touch") for uid in sorted(members_now) if uid not in moving]
        if resource is None and not steps:
            unchanged = self.get_group(group_id)
            if expected_version is not None and expected_version != unchanged.version:
                raise version_conflict("Group", group_id, expected_version, unchanged.version)
            return unchanged

        now = utc_now()
        if resource is not None:
            assert current is not None
            head = self._group_replace_head(current, resource, now, expected_version)
        else:
            head = _Head([self._group_bump(group_id, expected_version, now)], self._group_explainer(group_id))
        self._run_steps(group_id, steps, head, snapshot, cause, now)
        return self.get_group(group_id)

    def _group_replace_head(
        self, current: GroupRecord, resource: dict[str, Any], now: str, expected_version: int | None
    ) -> _Head:
        expression = (
            "SET #resource = :resource, #display_name = :name, #version = :next, #last_modified = :now"
        )
        values = {
            ":resource": _s(json.dumps(resource)),
            ":name": _s(resource["displayName"]),
            ":next": _n(current.version + 1),
            ":read": _n(current.version),
            ":now": _s(now),
        }
        update = self._update(_group_key(current.id), expression, "#version = :read", values)
        moves, new_claims = self._guard_moves(
            "Group", current.id, unique_values("Group", current.resource), unique_values("Group", resource)
        )
        first_put = 1 + len(moves) - len(new_claims)

        def explain(index: int) -> errors.RedisScimError | None:
            if index >= first_put:
                return taken("Group", list(new_claims)[index - first_put])
            if index == 0 and expected_version is not None:
                return version_conflict("Group", current.id, expected_version, None)
            raise _Retry  # changed since read, and the caller expected no version: start again

        return _Head([update, *moves], explain)

    def _group_bump(
        self, group_id: str, expected_version: int | None, now: str | None = None
    ) -> dict[str, Any]:
        condition = "attribute_exists(pk)"
        values = {":one": _n(1), ":now": _s(now or utc_now())}
        if expected_version is not None:
            condition += " AND #version = :expected"
            values[":expected"] = _n(expected_version)
        return self._update(
            _group_key(group_id), "SET #last_modified = :now ADD #version :one", condition, values
        )

    def _group_explainer(self, group_id: str) -> Callable[[int], errors.RedisScimError | None]:
        def explain(index: int) -> errors.RedisScimError | None:
            if index != 0:
                return None
            current = self._get(_group_key(group_id), projection="pk, #version")
            if current is None:
                return errors.NotFound(f"Group {group_id} not found")
            return errors.VersionConflict(f"Group {group_id} is at version {current['version']['N']}")

        return explain

    def _run_steps(
        self,
        group_id: str,
        steps: list[_Step],
        head: _Head,
        snapshot: _Snapshot,
        cause: Cause,
        now: str,
    ) -> None:
        """Apply `steps` chunk by chunk; the first chunk also writes `head`. The changes committed
        are published, even when a later chunk fails."""
        changes: list[UserChange] = []
        chunks = [steps[i : i + CHUNK_USERS] for i in range(0, len(steps), CHUNK_USERS)] or [[]]
        try:
            for index, chunk in enumerate(chunks):
                extra = (
                    head
                    if index == 0
                    else _Head([self._group_bump(group_id, None, now)], self._group_explainer(group_id))
                )
                changes += self._run_chunk(
                    group_id, chunk, extra, snapshot, cause, now, head_required=index == 0
                )
        finally:
            self._publish(changes)

    def _run_chunk(
        self,
        group_id: str,
        chunk: list[_Step],
        head: _Head,
        snapshot: _Snapshot,
        cause: Cause,
        now: str,
        *,
        head_required: bool,
    ) -> list[UserChange]:
        known = snapshot
        for _ in range(MAX_ATTEMPTS):
            unread = [step.user_id for step in chunk if step.user_id not in known.versions]
            if unread:
                read = self._snapshot(group_id, unread, with_memberships=False)
                known.versions.update(read.versions)
            items = list(head.items)
            changes: list[UserChange] = []
            for step in chunk:
                version = known.versions.get(step.user_id)
                is_member = step.user_id in known.members
                if (step.action == "join" and is_member) or (step.action == "leave" and not is_member):
                    continue  # already done (a repeated or concurrent request)
                if version is None:
                    # The user is gone. Its delete removed its memberships; drop any left behind.
                    if step.action == "leave":
                        items.append(self._membership_delete(group_id, step.user_id))
                    continue
                items += self._step_items(group_id, step, version, now)
                changes.append(UserChange(step.user_id, version + 1, cause))
            if len(items) == len(head.items) and not head_required:
                return []
            try:
                self._write(items)
            except _Cancelled as cancelled:
                for index in range(len(head.items)):
                    if cancelled.failed(index):
                        error = head.explain(index)
                        if error is not None:
                            raise error from cancelled
                known = self._snapshot(group_id, [step.user_id for step in chunk], with_memberships=True)
                self._pause()
                continue
            return changes
        raise errors.ServiceUnavailable(f"Group {group_id} is changing too often; retry later")

    def _step_items(self, group_id: str, step: _Step, version: int, now: str) -> list[dict[str, Any]]:
        expression = "SET #version = :next, #last_modified = :now, #pending = :pending, #pending_at = :now"
        values: dict[str, Any] = {
            ":next": _n(version + 1),
            ":read": _n(version),
            ":now": _s(now),
            ":pending": _s(_pending_shard(step.user_id)),
        }
        if step.action != "touch":
            expression += " ADD #group_ids :group" if step.action == "join" else " DELETE #group_ids :group"
            values[":group"] = {"SS": [group_id]}
        items = [
            self._update(
                _user_key(step.user_id),
                expression,
                "#version = :read AND attribute_not_exists(#deleted)",
                values,
            )
        ]
        if step.action == "join":
            member = {**_member_key(group_id, step.user_id)}
            if step.display is not None:
                member["display"] = _s(step.display)
            items.append(self._put(member, "attribute_not_exists(pk)"))
        elif step.action == "leave":
            items.append(self._membership_delete(group_id, step.user_id))
        return items

    def _membership_delete(self, group_id: str, user_id: str) -> dict[str, Any]:
        return {
            "Delete": {
                "TableName": self._table,
                "Key": _member_key(group_id, user_id),
                "ConditionExpression": "attribute_exists(pk)",
            }
        }

    def _snapshot(self, group_id: str, user_ids: list[str], *, with_memberships: bool) -> _Snapshot:
        keys = [_user_key(uid) for uid in user_ids]
        if with_memberships:
            keys += [_member_key(group_id, uid) for uid in user_ids]
        snapshot = _Snapshot(versions=dict.fromkeys(user_ids))
        for item in self._batch_get(keys, "pk, sk, #version, #deleted"):
            if item["sk"]["S"] == USER_SK:
                if "deleted" not in item:
                    snapshot.versions[_id_of(item)] = int(item["version"]["N"])
            else:
                snapshot.members.add(item["sk"]["S"][len(MEMBER_PREFIX) :])
        return snapshot

    # --- user internals --------------------------------------------------------------------------

    def _tombstone_items(self, current: UserRecord, group_ids: list[str]) -> list[dict[str, Any]]:
        now = utc_now()
        expression = (
            "SET #version = :next, #last_modified = :now, #pending = :pending, #pending_at = :now,"
            " #deleted = :true REMOVE #kind, #kind_sort, #group_ids, #password"
        )
        values = {
            ":next": _n(current.version + 1),
            ":read": _n(current.version),
            ":now": _s(now),
            ":pending": _s(_pending_shard(current.id)),
            ":true": {"BOOL": True},
        }
        items = [
            self._update(
                _user_key(current.id),
                expression,
                "#version = :read AND attribute_not_exists(#deleted)",
                values,
            )
        ]
        items += [self._guard_delete(key, current.id) for key in self._guard_keys("User", current.resource)]
        items += self._leave_items(current.id, group_ids, now)
        return items

    def _leave_groups(self, current: UserRecord, group_ids: list[str]) -> None:
        now = utc_now()
        values = {
            ":next": _n(current.version + 1),
            ":read": _n(current.version),
            ":now": _s(now),
            ":groups": {"SS": group_ids},
        }
        expression = "SET #version = :next, #last_modified = :now DELETE #group_ids :groups"
        user = self._update(_user_key(current.id), expression, "#version = :read", values)
        self._write([user, *self._leave_items(current.id, group_ids, now)])

    def _leave_items(self, user_id: str, group_ids: list[str], now: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for group_id in group_ids:
            items.append({"Delete": {"TableName": self._table, "Key": _member_key(group_id, user_id)}})
            # The group's version changes because its member list did; it may be gone meanwhile
            # (a group delete removes the membership first), so the bump must not recreate it.
            items.append(
                self._update(
                    _group_key(group_id),
                    "SET #last_modified = :now ADD #version :one",
                    "attribute_exists(pk)",
                    {":one": _n(1), ":now": _s(now)},
                )
            )
        return items

    # --- reads -----------------------------------------------------------------------------------

    def _lookup(self, kind: Kind, lookup: Lookup) -> str | None:
        attribute, value = lookup
        if attribute == "id":
            return value
        normalised = normalise(value, case_insensitive=UNIQUE_ATTRIBUTES[kind][attribute])
        guard = self._get(_guard_key(kind, attribute, normalised), projection="#owner")
        return guard["owner"]["S"] if guard else None

    def _list(
        self,
        kind: Kind,
        decode: Callable[[dict[str, Any]], Any],
        predicate: Predicate | None,
        start_index: int,
        count: int,
    ) -> Page:
        keys = [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._query(
                IndexName=BY_KIND_INDEX,
                KeyConditionExpression="#kind = :kind",
                ExpressionAttributeNames={"#kind": "kind"},
                ExpressionAttributeValues={":kind": _s(kind)},
            )
        ]
        start, stop = page_bounds(start_index, count)
        if predicate is None:
            wanted = keys[start:stop]
            return Page(total=len(keys), records=[decode(item) for item in self._ordered_get(wanted)])
        total, records = 0, []
        for offset in range(0, len(keys), BATCH_GET_KEYS):
            for item in self._ordered_get(keys[offset : offset + BATCH_GET_KEYS]):
                record = decode(item)
                if predicate(record):
                    if start <= total < stop:
                        records.append(record)
                    total += 1
        return Page(total=total, records=records)

    def _ordered_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items for `keys` in the keys' order; items gone since the (eventually consistent) index
        listed them are skipped."""
        found = {(item["pk"]["S"], item["sk"]["S"]): item for item in self._batch_get(keys)}
        ordered = [found.get((key["pk"]["S"], key["sk"]["S"])) for key in keys]
        return [item for item in ordered if item is not None and "deleted" not in item]

    def _members(self, group_id: str) -> Iterator[Member]:
        for item in self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :member)",
            ExpressionAttributeValues={":pk": _s(f"GROUP#{group_id}"), ":member": _s(MEMBER_PREFIX)},
            ProjectionExpression="sk, display",
            ConsistentRead=True,
        ):
            display = item.get("display")
            yield Member(item["sk"]["S"][len(MEMBER_PREFIX) :], display["S"] if display else None)

    def _group_refs(self, user_item: dict[str, Any]) -> list[GroupRef]:
        group_ids = sorted(user_item.get("group_ids", {}).get("SS", []))
        found = self._batch_get([_group_key(gid) for gid in group_ids], "pk, #display_name")
        refs = [GroupRef(_id_of(item), item["display_name"]["S"]) for item in found]
        return sorted(refs, key=lambda ref: ref.id)

    def _pending_shard_users(self, shard: str, older_than: str | None) -> Iterator[PendingUser]:
        condition = "#pending = :shard"
        values = {":shard": _s(shard)}
        if older_than is not None:
            condition += " AND #pending_at < :older_than"
            values[":older_than"] = _s(older_than)
        for item in self._query(
            IndexName=PENDING_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=_names(condition),
            ExpressionAttributeValues=values,
        ):
            yield PendingUser(_id_of(item), int(item["version"]["N"]), item["pending_at"]["S"])

    # --- DynamoDB calls --------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> Any:
        try:
            return getattr(self._client, operation)(**params)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _THROTTLED:
                raise errors.ServiceUnavailable("Directory table is throttling; retry later") from error
            if code == "ValidationException" and "size" in str(error).lower():
                # DynamoDB items hold 400 KB; a SCIM body under the API's 1 MB limit can exceed it.
                raise errors.PayloadTooLarge("the resource is too large to store") from error
            raise
        except BotoCoreError as error:
            raise errors.ServiceUnavailable("Directory table is unreachable; retry later") from error

    def _get(self, key: dict[str, Any], *, projection: str | None = None) -> dict[str, Any] | None:
        params: dict[str, Any] = {"TableName": self._table, "Key": key, "ConsistentRead": True}
        if projection:
            params["ProjectionExpression"] = projection
            if _names(projection):
                params["ExpressionAttributeNames"] = _names(projection)
        item: dict[str, Any] | None = self._call("get_item", **params).get("Item")
        return item

    def _batch_get(self, keys: list[dict[str, Any]], projection: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        unique = list({(key["pk"]["S"], key["sk"]["S"]): key for key in keys}.values())
        for offset in range(0, len(unique), BATCH_GET_KEYS):
            request: dict[str, Any] = {
                "Keys": unique[offset : offset + BATCH_GET_KEYS],
                "ConsistentRead": True,
            }
            if projection:
                request["ProjectionExpression"] = projection
                if _names(projection):
                    request["ExpressionAttributeNames"] = _names(projection)
            pending = {self._table: request}
            for _ in range(MAX_ATTEMPTS):
                response = self._call("batch_get_item", RequestItems=pending)
                items += response.get("Responses", {}).get(self._table, [])
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                self._pause()
            else:
                raise errors.ServiceUnavailable("Directory table is throttling reads; retry later")
        return items

    def _query(self, **params: Any) -> Iterator[dict[str, Any]]:
        params["TableName"] = self._table
        while True:
            response = self._call("query", **params)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _write(self, items: list[dict[str, Any]]) -> None:
        """Write `items` atomically; a refused condition raises `_Cancelled`."""
        if len(items) == 1 and "ConditionCheck" not in items[0]:
            # One item needs no transaction (which costs twice the write capacity).
            ((kind, params),) = items[0].items()
            operation = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}[kind]
            try:
                self._call(operation, **params)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    raise _Cancelled(["ConditionalCheckFailed"]) from error
                raise
            return
        try:
            # The token makes botocore's own retries of an ambiguous failure idempotent.
            self._call("transact_write_items", TransactItems=items, ClientRequestToken=str(uuid.uuid4()))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = [reason.get("Code", "None") for reason in error.response.get("CancellationReasons", [])]
            raise _Cancelled(reasons) from error

    def _write_retrying(
        self, items: list[dict[str, Any]], *, explain: Callable[[int], errors.RedisScimError | None]
    ) -> None:
        """`_write`, retrying refusals that `explain` does not turn into an error."""
        for _ in range(MAX_ATTEMPTS):
            try:
                self._write(items)
                return
            except _Cancelled as cancelled:
                for index in range(len(items)):
                    if cancelled.failed(index):
                        error = explain(index)
                        if error is not None:
                            raise error from cancelled
                self._pause()
        raise errors.ServiceUnavailable("Directory table is busy; retry later")

    @staticmethod
    def _pause() -> None:
        time.sleep(random.uniform(0.005, 0.05))  # jitter, not security

    # --- item builders ---------------------------------------------------------------------------

    def _expression_parts(self, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        if _names(condition):
            parts["ExpressionAttributeNames"] = _names(condition)
        if values:
            parts["ExpressionAttributeValues"] = values
        return parts

    def _put(self, item: dict[str, Any], condition: str) -> dict[str, Any]:
        return {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": condition}}

    def _update(
        self, key: dict[str, Any], expression: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": key,
                "UpdateExpression": expression,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": _names(expression + " " + condition),
                "ExpressionAttributeValues": values,
            }
        }

    def _new_user_items(
        self, user_id: str, resource: dict[str, Any], password_sha256: str | None, now: str
    ) -> list[dict[str, Any]]:
        """The conditional puts that create a user: its item, then its uniqueness guards."""
        item = {
            **_user_key(user_id),
            "resource": _s(json.dumps(resource)),
            "version": _n(1),
            "created": _s(now),
            "last_modified": _s(now),
            "kind": _s("User"),
            "kind_sort": _s(f"{now}#{user_id}"),
            "pending": _s(_pending_shard(user_id)),
            "pending_at": _s(now),
        }
        if password_sha256 is not None:
            item["password_sha256"] = _s(password_sha256)
        claims = unique_values("User", resource)
        return [self._put(item, "attribute_not_exists(pk)"), *self._guard_puts("User", user_id, claims)]

    def _guard_keys(self, kind: Kind, resource: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            _guard_key(kind, attribute, value) for attribute, value in unique_values(kind, resource).items()
        ]

    def _guard_puts(self, kind: Kind, owner: str, claims: dict[str, str]) -> list[dict[str, Any]]:
        return [
            self._put({**_guard_key(kind, attribute, value), "owner": _s(owner)}, "attribute_not_exists(pk)")
            for attribute, value in claims.items()
        ]

    def _guard_delete(self, key: dict[str, Any], owner: str) -> dict[str, Any]:
        condition = "#owner = :owner"
        return {
            "Delete": {
                "TableName": self._table,
                "Key": key,
                "ConditionExpression": condition,
                **self._expression_parts(condition, {":owner": _s(owner)}),
            }
        }

    def _guard_moves(
        self, kind: Kind, owner: str, old: dict[str, str], new: dict[str, str]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Guard deletes for values given up, then puts for values newly claimed (last, in the
        order of the returned claims, so a refused put names its attribute)."""
        released = [attr for attr, value in old.items() if new.get(attr) != value]
        claimed = {attr: value for attr, value in new.items() if old.get(attr) != value}
        deletes = [self._guard_delete(_guard_key(kind, attr, old[attr]), owner) for attr in released]
        return deletes + self._guard_puts(kind, owner, claimed), claimed

    def _raise_for_claims(
        self, kind: Kind, cancelled: _Cancelled, claims: dict[str, str], *, offset: int
    ) -> None:
        for position, attribute in enumerate(claims):
            if cancelled.failed(offset + position):
                raise taken(kind, attribute) from cancelled

    def _publish(self, changes: list[UserChange]) -> None:
        publish_changes(self._feed, changes, logger=self._logger, metrics=self._metrics)


class _Retry(Exception):
    """The group changed between read and write; start the change again from a fresh read."""


def _narrow(records: list[Any], predicate: Predicate | None, start_index: int, count: int) -> Page:
    matches = [record for record in records if predicate is None or predicate(record)]
    start, stop = page_bounds(start_index, count)
    return Page(total=len(matches), records=matches[start:stop])
