"""The Directory port: where the IdP's users, groups and memberships live, and the change feed.

The SCIM handler and the applier depend only on `Directory` below. Implementations:
`directory.memory.MemoryDirectory` (tests, benchmarks) and `directory.dynamodb.DynamoDirectory`
(the single DynamoDB table of DESIGN.md §5). Both pass
`tests/integration/directory/test_directory_contract.py`.

Rules every implementation follows:
- Records returned are copies; mutating them changes nothing stored.
- `resource` dicts hold the SCIM attributes as the client set them, *without* `id`, `meta`,
  `schemas`, `password`, `groups` (users) or `members` (groups): those are owned by the store.
- `userName` is unique case-insensitively (NFC + casefold) among users; `externalId` is unique per
  resource type; group `displayName` is unique case-insensitively (the policy maps groups by
  name, so two groups of one name would be ambiguous). A taken value raises `errors.Uniqueness`.
- Unknown or deleted ids raise `errors.NotFound`.
- Every write bumps the resource's `version` by one (a group change that changes nothing bumps
  nothing; one applied in several transactions, see `directory.dynamodb`, bumps once per
  transaction). A write given `expected_version` that no longer matches raises
  `errors.VersionConflict` and changes nothing.
- Every write that can change a user's Redis rights (user create/replace/delete, membership
  add/remove, group rename, group delete) bumps *that user's* version too, sets the user's pending-sync marker
  in the same atomic write, and after commit publishes one `UserChange` per affected user to the
  `ChangeFeed`. A failed publish is logged and never raised: the marker stays and the reconciler
  re-drives it.
- Member ids must name existing users; an unknown id raises `errors.InvalidValue` naming it and
  changes nothing. Adding an existing member or removing a non-member is a no-op.
- Membership changes cost O(k) store operations for k members changed, never a read of the
  whole group (only `replace_members` and group delete must touch every member).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Actor:
    """Who caused a change: carried from the SCIM request through SQS into the audit trail."""

    token_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "source_ip": self.source_ip, "user_agent": self.user_agent}


@dataclass(frozen=True)
class Cause:
    """Why a change happened: the SCIM request (or reconciler run) that caused it."""

    request_id: str
    operation: str  # e.g. "POST /Users", "PATCH /Groups/{id}", "reconciler"
    actor: Actor = field(default_factory=Actor)

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "operation": self.operation, "actor": self.actor.to_json()}


@dataclass(frozen=True)
class UserChange:
    """One change-feed message: "user X changed; converge every target to its current state".

    Sent to SQS FIFO as JSON `{"user_id", "version", "cause"}` with MessageGroupId = user_id and
    MessageDeduplicationId = f"{user_id}:{version}".
    """

    user_id: str
    version: int
    cause: Cause

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "version": self.version, "cause": self.cause.to_json()}

    @property
    def deduplication_id(self) -> str:
        return f"{self.user_id}:{self.version}"


@dataclass
class UserRecord:
    id: str
    version: int
    created: str  # ISO 8601 UTC
    last_modified: str
    resource: dict[str, Any]
    password_sha256: str | None = None  # never returned over SCIM; the ACL `#<hash>` credential

    @property
    def user_name(self) -> str:
        return str(self.resource["userName"])

    @property
    def active(self) -> bool:
        return self.resource.get("active", True) is not False


@dataclass(frozen=True)
class Member:
    value: str  # the user id
    display: str | None = None


@dataclass
class GroupRecord:
    id: str
    version: int
    created: str
    last_modified: str
    resource: dict[str, Any]

    @property
    def display_name(self) -> str:
        return str(self.resource["displayName"])


@dataclass(frozen=True)
class GroupRef:
    """A group a user belongs to, as the inverted membership index gives it."""

    id: str
    display_name: str


@dataclass
class Page:
    """One page of a search: `total` counts every match, `records` holds the requested slice."""

    total: int
    records: list[Any]


# A lookup on an indexed attribute: ("userName" | "externalId" | "id" | "displayName", value).
Lookup = tuple[str, str]
Predicate = Callable[[Any], bool]


@dataclass
class GroupChange:
    """A change to one group. `None` fields are left as they are.

    `add_members`/`remove_members` are deltas (O(k)); `replace_members` replaces the whole member
    set (PUT, PATCH replace of `members`, remove of all members) and is exclusive with the deltas.
    An id both added and removed ends up a member.
    """

    resource: dict[str, Any] | None = None
    add_members: Sequence[Member] = ()
    remove_members: Sequence[str] = ()
    replace_members: Sequence[Member] | None = None


@dataclass
class UserState:
    """What the applier converges a user to: the latest record and groups, or a tombstone.

    A deleted user keeps a tombstone (its last record, `deleted=True`, no groups) until
    `clear_pending` acknowledges its deprovisioning, so the applier knows which ACL user to remove.
    """

    user_id: str
    version: int
    deleted: bool
    record: UserRecord
    groups: list[GroupRef]
    pending: bool


@dataclass(frozen=True)
class PendingUser:
    user_id: str
    version: int
    pending_at: str


class ChangeFeed(Protocol):
    def publish(self, changes: Sequence[UserChange]) -> None:
        """Send the changes; raise on failure (the Directory catches, logs and counts it)."""


class Directory(Protocol):
    # --- users ---
    def create_user(
        self, resource: dict[str, Any], *, password_sha256: str | None, cause: Cause
    ) -> UserRecord: ...

    def get_user(self, user_id: str) -> UserRecord: ...

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
        """Replace the user's attributes. The password hash is kept when `keep_password`,
        otherwise set to `password_sha256` (which may be None to clear it).

        `current` is the user as the caller last read it (at `expected_version`, when that is
        given). A store that reads the user before writing starts from it instead; the write still
        lands only if the user has not changed since, and otherwise the store reads it again."""
        ...

    def delete_user(self, user_id: str, *, expected_version: int | None, cause: Cause) -> None:
        """Delete the user and every membership of it. The user's id stays in the change feed as a
        tombstone (version bumped, pending marker set) so the applier can deprovision it."""
        ...

    def search_users(
        self, *, lookup: Lookup | None, predicate: Predicate | None, start_index: int, count: int
    ) -> Page:
        """Users in a stable order (creation time, then id). `lookup` narrows by an indexed
        attribute; `predicate` is evaluated on each `UserRecord`. `start_index` is 1-based;
        `count` 0 returns only the total."""
        ...

    def user_groups(self, user_id: str) -> list[GroupRef]: ...

    # --- groups ---
    def create_group(
        self, resource: dict[str, Any], *, members: Sequence[Member], cause: Cause
    ) -> GroupRecord: ...

    def get_group(self, group_id: str) -> GroupRecord: ...

    def group_members(self, group_id: str) -> list[Member]: ...

    def change_group(
        self, group_id: str, change: GroupChange, *, expected_version: int | None, cause: Cause
    ) -> GroupRecord: ...

    def delete_group(self, group_id: str, *, expected_version: int | None, cause: Cause) -> None: ...

    def search_groups(
        self, *, lookup: Lookup | None, predicate: Predicate | None, start_index: int, count: int
    ) -> Page: ...

    # --- convergence (applier, reconciler) ---
    def pending_users(self, *, older_than: str | None = None) -> Iterable[PendingUser]:
        """Users whose pending-sync marker is set (and was set before `older_than`, ISO time)."""
        ...

    def user_state(self, user_id: str) -> UserState | None:
        """The user's current desired state (record + groups via the inverted index), or its
        tombstone; None when the id was never known or its tombstone was already cleared."""
        ...

    def clear_pending(self, user_id: str, *, version: int) -> bool:
        """Clear the marker if `version` is still the user's latest; True when cleared. For a
        tombstone, clearing removes the tombstone itself."""
        ...
