"""The ownership ledger: which SCIM user owns which Redis username on which target, kept for good.

The applier claims a username before it provisions it and releases it after the ACL user is gone;
a released entry stays (with its last owner), so the reconciler can tell a formerly managed user
(stale: remove it) from a ghost (nobody ever owned it). Two SCIM users can never share an ACL user:
the claim is a conditional write.

Rules every implementation follows:
- `claim` succeeds when the name is free, released, already the caller's, or held by `replacing`
  (an owner the caller proved gone); otherwise it changes nothing and returns the live owner.
- `held(user_id)` is strongly consistent with the user's own claims and releases: the applier
  reads it to find the names it must remove after a rename or a deprovisioning.
- `release` only releases the caller's own live claim; releasing twice is a no-op.

DynamoDB layout (in the Directory table, beside the Directory's own items, no index needed):
- name item   pk `LEDGER#<target>`, sk `NAME#<username>`: `owner`, `released`, `claimed_at`, `released_at`;
  one partition per target, so the reconciler lists a target's names with one paged Query.
- holder item pk `OWNER#<user id>`, sk `TARGET#<target>`: `usernames` (string set of live claims);
  a consistent Query gives a user's names on every target. Both items change in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from botocore.exceptions import ClientError

from redis_scim import errors
from redis_scim.directory.rules import utc_now

_LEDGER_PREFIX = "LEDGER#"
_NAME_PREFIX = "NAME#"
_OWNER_PREFIX = "OWNER#"
_TARGET_PREFIX = "TARGET#"
# Contended claims re-read and retry; more losses in a row than this mean a hot loop, better left to SQS.
_MAX_CLAIM_ATTEMPTS = 5
_THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
    }
)


@dataclass(frozen=True)
class Ownership:
    """One ledger entry: `user_id` owns (or, when `released`, last owned) `username` on `target`."""

    target: str
    username: str
    user_id: str
    released: bool
    claimed_at: str
    released_at: str | None = None


class Ledger(Protocol):
    def claim(self, target: str, username: str, user_id: str, *, replacing: str | None = None) -> Ownership:
        """Make `user_id` the owner of `username` on `target`.

        Returns the entry as it now stands: owned by `user_id` on success, otherwise the other
        user's live ownership (nothing changed; the caller decides between collision and waiting).
        `replacing` names a live owner the caller knows no longer exists; its claim is taken over.
        """
        ...

    def release(self, target: str, username: str, user_id: str) -> bool:
        """Mark the caller's live claim released (the entry stays). True when it was live."""
        ...

    def held(self, user_id: str) -> dict[str, frozenset[str]]:
        """target -> the usernames `user_id` holds there (live claims only); targets with none omitted."""
        ...

    def owner(self, target: str, username: str) -> Ownership | None:
        """The entry of `username` on `target` (live or released), or None when never claimed."""
        ...

    def entries(self, target: str) -> Iterator[Ownership]:
        """Every entry of `target`, live and released, in username order."""
        ...


class MemoryLedger:
    """The ledger in memory (tests, benchmarks, the reference behaviour)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[tuple[str, str], Ownership] = {}
        self._held: dict[str, set[tuple[str, str]]] = {}  # user id -> its unreleased (target, username)

    def claim(self, target: str, username: str, user_id: str, *, replacing: str | None = None) -> Ownership:
        with self._lock:
            current = self._names.get((target, username))
            if current is not None and current.user_id == user_id and not current.released:
                return current
            if current is None or current.released or current.user_id in (user_id, replacing):
                claimed = Ownership(target, username, user_id, released=False, claimed_at=utc_now())
                if current is not None:
                    self._held.get(current.user_id, set()).discard((target, username))
                self._names[(target, username)] = claimed
                self._held.setdefault(user_id, set()).add((target, username))
                return claimed
            return current

    def release(self, target: str, username: str, user_id: str) -> bool:
        with self._lock:
            current = self._names.get((target, username))
            if current is None or current.user_id != user_id or current.released:
                return False
            self._names[(target, username)] = replace(current, released=True, released_at=utc_now())
            self._held.get(user_id, set()).discard((target, username))
            return True

    def held(self, user_id: str) -> dict[str, frozenset[str]]:
        with self._lock:
            names: dict[str, set[str]] = {}
            for target, username in self._held.get(user_id, ()):
                names.setdefault(target, set()).add(username)
        return {target: frozenset(usernames) for target, usernames in names.items()}

    def owner(self, target: str, username: str) -> Ownership | None:
        with self._lock:
            return self._names.get((target, username))

    def entries(self, target: str) -> Iterator[Ownership]:
        with self._lock:
            found = sorted((e for (t, _), e in self._names.items() if t == target), key=lambda e: e.username)
        yield from found


class DynamoLedger:
    """The ledger in the Directory table. `client` is a boto3 DynamoDB client."""

    def __init__(self, table_name: str, client: Any) -> None:
        self.table_name = table_name
        self.client = client

    def claim(self, target: str, username: str, user_id: str, *, replacing: str | None = None) -> Ownership:
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            current = self.owner(target, username)
            if current is not None and current.user_id == user_id and not current.released:
                return current  # the common case: every message re-confirms the user's own name
            if current is not None and not current.released and current.user_id != replacing:
                return current
            claimed = Ownership(target, username, user_id, released=False, claimed_at=utc_now())
            items = [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": _name_item(claimed),
                        # Exactly the state read above, so a concurrent claim makes this one re-read.
                        **_unchanged_since(current),
                    }
                },
                self._holder_update(user_id, target, username, add=True),
            ]
            if current is not None and not current.released:
                items.append(self._holder_update(current.user_id, target, username, add=False))
            try:
                self._transact(items)
            except _ConditionFailed:
                continue
            return claimed
        raise errors.ServiceUnavailable(
            f"username {username!r} on target {target!r} is contended; retry later"
        )

    def release(self, target: str, username: str, user_id: str) -> bool:
        release_name = {
            "Update": {
                "TableName": self.table_name,
                "Key": _name_key(target, username),
                "UpdateExpression": "SET released = :true, released_at = :now",
                "ConditionExpression": "#owner = :me AND released = :false",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {
                    ":true": {"BOOL": True},
                    ":false": {"BOOL": False},
                    ":me": {"S": user_id},
                    ":now": {"S": utc_now()},
                },
            }
        }
        try:
            self._transact([release_name, self._holder_update(user_id, target, username, add=False)])
        except _ConditionFailed:
            # Not (or no longer) the caller's: still make sure its holder set forgets the name.
            self._call("update_item", **self._holder_update(user_id, target, username, add=False)["Update"])
            return False
        return True

    def held(self, user_id: str) -> dict[str, frozenset[str]]:
        held: dict[str, frozenset[str]] = {}
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _OWNER_PREFIX + user_id}},
            ConsistentRead=True,
        ):
            usernames = frozenset(item.get("usernames", {}).get("SS", ()))
            if usernames:
                held[item["sk"]["S"].removeprefix(_TARGET_PREFIX)] = usernames
        return held

    def owner(self, target: str, username: str) -> Ownership | None:
        response = self._call(
            "get_item", TableName=self.table_name, Key=_name_key(target, username), ConsistentRead=True
        )
        item = response.get("Item")
        return _ownership(item) if item else None

    def entries(self, target: str) -> Iterator[Ownership]:
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _LEDGER_PREFIX + target}},
        ):
            yield _ownership(item)

    # --- internals -------------------------------------------------------------------------------

    def _holder_update(self, user_id: str, target: str, username: str, *, add: bool) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {"pk": {"S": _OWNER_PREFIX + user_id}, "sk": {"S": _TARGET_PREFIX + target}},
                "UpdateExpression": ("ADD" if add else "DELETE") + " usernames :names",
                "ExpressionAttributeValues": {":names": {"SS": [username]}},
            }
        }

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            if code == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
                raise _ConditionFailed from error
            raise _unavailable(error) from error

    def _call(self, operation: str, **parameters: Any) -> Any:
        try:
            return getattr(self.client, operation)(**parameters)
        except ClientError as error:
            raise _unavailable(error) from error

    def _query(self, **parameters: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("query")
        try:
            for page in paginator.paginate(TableName=self.table_name, **parameters):
                yield from page.get("Items", [])
        except ClientError as error:
            raise _unavailable(error) from error


class _ConditionFailed(Exception):
    """A ledger write lost a race or found the entry taken."""


def _unavailable(error: ClientError) -> Exception:
    code = error.response["Error"]["Code"]
    if code in _THROTTLING or code == "TransactionCanceledException":
        return errors.ServiceUnavailable(f"ownership ledger unavailable: {code}")
    return error


def _name_key(target: str, username: str) -> dict[str, Any]:
    return {"pk": {"S": _LEDGER_PREFIX + target}, "sk": {"S": _NAME_PREFIX + username}}


def _name_item(entry: Ownership) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_name_key(entry.target, entry.username),
        "owner": {"S": entry.user_id},
        "released": {"BOOL": entry.released},
        "claimed_at": {"S": entry.claimed_at},
    }
    if entry.released_at is not None:
        item["released_at"] = {"S": entry.released_at}
    return item


def _unchanged_since(read: Ownership | None) -> dict[str, Any]:
    """The condition that the name item is exactly as `read` saw it (absent, or same owner and state)."""
    if read is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {
        "ConditionExpression": "#owner = :owner AND released = :released AND claimed_at = :claimed_at",
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": {
            ":owner": {"S": read.user_id},
            ":released": {"BOOL": read.released},
            ":claimed_at": {"S": read.claimed_at},
        },
    }


def _ownership(item: dict[str, Any]) -> Ownership:
    return Ownership(
        target=item["pk"]["S"].removeprefix(_LEDGER_PREFIX),
        username=item["sk"]["S"].removeprefix(_NAME_PREFIX),
        user_id=item["owner"]["S"],
        released=item["released"]["BOOL"],
        claimed_at=item["claimed_at"]["S"],
        released_at=item.get("released_at", {}).get("S"),
    )
