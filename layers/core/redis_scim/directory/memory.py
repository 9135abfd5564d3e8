"""An in-process Directory: the reference implementation of the port's rules, for tests and benchmarks.

Every operation holds one lock, so each is atomic exactly as one DynamoDB transaction is; it keeps
the same observable behaviour as `DynamoDirectory` (ordering, versions, tombstones, change feed).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


class ListFeed:
    """A change feed that keeps what it is given, in order (tests, the local stack's inspection)."""

    def __init__(self) -> None:
        self.changes: list[UserChange] = []

    def publish(self, changes: Sequence[UserChange]) -> None:
        self.changes.extend(changes)


@dataclass
class _User:
    record: UserRecord
    deleted: bool = False
    pending_at: str | None = None
    group_ids: set[str] = field(default_factory=set)


@dataclass
class _Group:
    record: GroupRecord
    members: dict[str, Member] = field(default_factory=dict)


class MemoryDirectory:
    """The Directory port in memory. `feed` receives the change messages (None: nobody listens)."""

    def __init__(
        self,
        feed: ChangeFeed | None = None,
        *,
        metrics: MetricsSink | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._feed = feed
        self._metrics = metrics
        self._logger = logger or logging.getLogger(__name__)
        self._lock = threading.RLock()
        self._users: dict[str, _User] = {}
        self._groups: dict[str, _Group] = {}
        # (kind, attribute, normalised value) -> owner id
        self._unique: dict[tuple[Kind, str, str], str] = {}

    # --- users -----------------------------------------------------------------------------------

    def create_user(
        self, resource: dict[str, Any], *, password_sha256: str | None, cause: Cause
    ) -> UserRecord:
        resource = clean_resource("User", resource)
        with self._lock:
            user_id, now = new_id(), utc_now()
            self._claim("User", user_id, {}, unique_values("User", resource))
            record = UserRecord(user_id, 1, now, now, copy.deepcopy(resource), password_sha256)
            self._users[user_id] = _User(record, pending_at=now)
            changes = [UserChange(user_id, 1, cause)]
            result = copy.deepcopy(record)
        self._publish(changes)
        return result

    def get_user(self, user_id: str) -> UserRecord:
        with self._lock:
            return copy.deepcopy(self._live_user(user_id).record)

    def replace_user(
        self,
        user_id: str,
        resource: dict[str, Any],
        *,
        expected_version: int | None,
        password_sha256: str | None,
        keep_password: bool,
        cause: Cause,
        current: UserRecord | None = None,  # not needed: the stored record costs nothing to read
    ) -> UserRecord:
        resource = clean_resource("User", resource)
        with self._lock:
            user = self._live_user(user_id)
            self._check_version("User", user_id, user.record.version, expected_version)
            self._claim(
                "User", user_id, unique_values("User", user.record.resource), unique_values("User", resource)
            )
            now = utc_now()
            record = user.record
            record.resource = copy.deepcopy(resource)
            record.version += 1
            record.last_modified = now
            if not keep_password:
                record.password_sha256 = password_sha256
            user.pending_at = now
            changes = [UserChange(user_id, record.version, cause)]
            result = copy.deepcopy(record)
        self._publish(changes)
        return result

    def delete_user(self, user_id: str, *, expected_version: int | None, cause: Cause) -> None:
        with self._lock:
            user = self._live_user(user_id)
            self._check_version("User", user_id, user.record.version, expected_version)
            now = utc_now()
            for group_id in user.group_ids:
                group = self._groups[group_id]
                del group.members[user_id]
                group.record.version += 1
                group.record.last_modified = now
            user.group_ids.clear()
            self._release("User", user_id, unique_values("User", user.record.resource))
            user.deleted = True
            user.record.password_sha256 = None  # the tombstone only names the ACL user to remove
            user.record.version += 1
            user.record.last_modified = now
            user.pending_at = now
            changes = [UserChange(user_id, user.record.version, cause)]
        self._publish(changes)

    def search_users(
        self, *, lookup: Lookup | None, predicate: Predicate | None, start_index: int, count: int
    ) -> Page:
        with self._lock:
            if lookup is not None:
                check_lookup("User", lookup[0])
                found = self._lookup("User", lookup)
                candidates = (
                    [self._users[found].record]
                    if found in self._users and not self._users[found].deleted
                    else []
                )
            else:
                candidates = sorted(
                    (u.record for u in self._users.values() if not u.deleted), key=lambda r: (r.created, r.id)
                )
            return _page(candidates, predicate, start_index, count)

    def user_groups(self, user_id: str) -> list[GroupRef]:
        with self._lock:
            return self._group_refs(self._live_user(user_id))

    # --- groups ----------------------------------------------------------------------------------

    def create_group(
        self, resource: dict[str, Any], *, members: Sequence[Member], cause: Cause
    ) -> GroupRecord:
        resource = clean_resource("Group", resource)
        wanted = distinct_members(members)
        with self._lock:
            self._check_members(wanted)
            group_id, now = new_id(), utc_now()
            self._claim("Group", group_id, {}, unique_values("Group", resource))
            group = _Group(GroupRecord(group_id, 1, now, now, copy.deepcopy(resource)))
            self._groups[group_id] = group
            changes = [self._join(group, member, cause, now) for member in wanted.values()]
            result = copy.deepcopy(group.record)
        self._publish(changes)
        return result

    def get_group(self, group_id: str) -> GroupRecord:
        with self._lock:
            return copy.deepcopy(self._group(group_id).record)

    def group_members(self, group_id: str) -> list[Member]:
        with self._lock:
            group = self._group(group_id)
            return [group.members[user_id] for user_id in sorted(group.members)]

    def change_group(
        self, group_id: str, change: GroupChange, *, expected_version: int | None, cause: Cause
    ) -> GroupRecord:
        resource = clean_resource("Group", change.resource) if change.resource is not None else None
        with self._lock:
            group = self._group(group_id)
            self._check_version("Group", group_id, group.record.version, expected_version)
            if change.replace_members is not None:
                wanted = distinct_members(change.replace_members)
                self._check_members(wanted)
                joining = [m for uid, m in wanted.items() if uid not in group.members]
                leaving = [uid for uid in group.members if uid not in wanted]
            else:
                additions = distinct_members(change.add_members)
                self._check_members(additions)
                joining = [m for uid, m in additions.items() if uid not in group.members]
                # An id both added and removed ends up a member (removals apply first).
                leaving = [
                    uid
                    for uid in dict.fromkeys(change.remove_members)
                    if uid in group.members and uid not in additions
                ]
            renamed = resource is not None and resource["displayName"] != group.record.display_name
            if resource is None and not joining and not leaving:
                return copy.deepcopy(group.record)
            now = utc_now()
            if resource is not None:
                self._claim(
                    "Group",
                    group_id,
                    unique_values("Group", group.record.resource),
                    unique_values("Group", resource),
                )
                group.record.resource = copy.deepcopy(resource)
            changes = [self._join(group, member, cause, now) for member in joining]
            changes += [self._leave(group, user_id, cause, now) for user_id in leaving]
            if renamed:
                # The policy maps groups by displayName: a rename can change every member's rights.
                touched = {c.user_id for c in changes}
                changes += [
                    self._touch(uid, cause, now) for uid in sorted(group.members) if uid not in touched
                ]
            group.record.version += 1
            group.record.last_modified = now
            result = copy.deepcopy(group.record)
        self._publish(changes)
        return result

    def delete_group(self, group_id: str, *, expected_version: int | None, cause: Cause) -> None:
        with self._lock:
            group = self._group(group_id)
            self._check_version("Group", group_id, group.record.version, expected_version)
            now = utc_now()
            changes = [self._leave(group, user_id, cause, now) for user_id in sorted(group.members)]
            self._release("Group", group_id, unique_values("Group", group.record.resource))
            del self._groups[group_id]
        self._publish(changes)

    def search_groups(
        self, *, lookup: Lookup | None, predicate: Predicate | None, start_index: int, count: int
    ) -> Page:
        with self._lock:
            if lookup is not None:
                check_lookup("Group", lookup[0])
                found = self._lookup("Group", lookup)
                candidates = [self._groups[found].record] if found in self._groups else []
            else:
                candidates = sorted(
                    (g.record for g in self._groups.values()), key=lambda r: (r.created, r.id)
                )
            return _page(candidates, predicate, start_index, count)

    # --- convergence -----------------------------------------------------------------------------

    def pending_users(self, *, older_than: str | None = None) -> Iterable[PendingUser]:
        with self._lock:
            pending = [
                PendingUser(user_id, user.record.version, user.pending_at)
                for user_id, user in self._users.items()
                if user.pending_at is not None and (older_than is None or user.pending_at < older_than)
            ]
        return sorted(pending, key=lambda p: (p.pending_at, p.user_id))

    def user_state(self, user_id: str) -> UserState | None:
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                return None
            return UserState(
                user_id=user_id,
                version=user.record.version,
                deleted=user.deleted,
                record=copy.deepcopy(user.record),
                groups=self._group_refs(user),
                pending=user.pending_at is not None,
            )

    def clear_pending(self, user_id: str, *, version: int) -> bool:
        with self._lock:
            user = self._users.get(user_id)
            if user is None or user.pending_at is None or user.record.version != version:
                return False
            if user.deleted:
                del self._users[user_id]
            else:
                user.pending_at = None
            return True

    # --- internals (call with the lock held) -----------------------------------------------------

    def _live_user(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is None or user.deleted:
            raise errors.NotFound(f"User {user_id} not found")
        return user

    def _group(self, group_id: str) -> _Group:
        group = self._groups.get(group_id)
        if group is None:
            raise errors.NotFound(f"Group {group_id} not found")
        return group

    def _group_refs(self, user: _User) -> list[GroupRef]:
        refs = [GroupRef(gid, self._groups[gid].record.display_name) for gid in user.group_ids]
        return sorted(refs, key=lambda ref: ref.id)

    def _check_members(self, members: dict[str, Member]) -> None:
        for user_id in members:
            user = self._users.get(user_id)
            if user is None or user.deleted:
                raise unknown_member(user_id)

    @staticmethod
    def _check_version(kind: Kind, resource_id: str, actual: int, expected: int | None) -> None:
        if expected is not None and expected != actual:
            raise version_conflict(kind, resource_id, expected, actual)

    def _lookup(self, kind: Kind, lookup: Lookup) -> str | None:
        attribute, value = lookup
        if attribute == "id":
            return value
        normalised = normalise(value, case_insensitive=attribute != "externalId")
        return self._unique.get((kind, attribute, normalised))

    def _claim(self, kind: Kind, owner: str, old: dict[str, str], new: dict[str, str]) -> None:
        """Move the owner's uniqueness claims from `old` to `new` values, or raise and change nothing."""
        for attribute, value in new.items():
            holder = self._unique.get((kind, attribute, value))
            if holder is not None and holder != owner:
                raise taken(kind, attribute)
        self._release(kind, owner, old)
        for attribute, value in new.items():
            self._unique[(kind, attribute, value)] = owner

    def _release(self, kind: Kind, owner: str, values: dict[str, str]) -> None:
        for attribute, value in values.items():
            if self._unique.get((kind, attribute, value)) == owner:
                del self._unique[(kind, attribute, value)]

    def _touch(self, user_id: str, cause: Cause, now: str) -> UserChange:
        user = self._users[user_id]
        user.record.version += 1
        user.record.last_modified = now  # its `groups` attribute changed
        user.pending_at = now
        return UserChange(user_id, user.record.version, cause)

    def _join(self, group: _Group, member: Member, cause: Cause, now: str) -> UserChange:
        group.members[member.value] = member
        self._users[member.value].group_ids.add(group.record.id)
        return self._touch(member.value, cause, now)

    def _leave(self, group: _Group, user_id: str, cause: Cause, now: str) -> UserChange:
        del group.members[user_id]
        self._users[user_id].group_ids.discard(group.record.id)
        return self._touch(user_id, cause, now)

    def _publish(self, changes: list[UserChange]) -> None:
        publish_changes(self._feed, changes, logger=self._logger, metrics=self._metrics)


def _page(candidates: Sequence[Any], predicate: Predicate | None, start_index: int, count: int) -> Page:
    matches = [record for record in candidates if predicate is None or predicate(record)]
    start, stop = page_bounds(start_index, count)
    return Page(total=len(matches), records=[copy.deepcopy(record) for record in matches[start:stop]])
