"""ElastiCache user ids for Redis usernames: a valid, stable, collision-checked id per username.

ElastiCache user ids match `[a-zA-Z][a-zA-Z0-9-]*` and are stored lowercase, and IAM authentication
needs the user *name* to equal the id, so the backend names every user it manages by its id. A
username that already is a safe lowercase id is used as it is (`svc-payments`); any other gets a
readable slug plus a hash of the exact username (`bjensen@example.com` → `bjensen-example-com-67e804615c`).
Ids used as they are never end in `-<10 hex digits>`, so the two forms cannot meet; the registry
records which username owns which id (in the Directory table) and refuses a second owner.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from typing import Any, Protocol

from botocore.exceptions import ClientError

from redis_scim import errors

MAX_USER_ID_LENGTH = 40
_HASH_DIGITS = 10
_SAFE_ID = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_HASHED_SHAPE = re.compile(rf".*-[0-9a-f]{{{_HASH_DIGITS}}}")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

_REGISTRY_PREFIX = "ECUSERID#"
_ID_PREFIX = "ID#"


def derive_user_id(username: str) -> str:
    """The ElastiCache user id (and user name) of `username`. Pure and stable across releases.

    Raises `errors.InvalidUsername` for an empty username; every other string maps.
    """
    if not username:
        raise errors.InvalidUsername("an empty username has no ElastiCache user id")
    if _is_safe_as_is(username):
        return username
    folded = unicodedata.normalize("NFKD", username).encode("ascii", "ignore").decode("ascii").lower()
    slug = _NOT_ALNUM.sub("-", folded).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"u-{slug}".rstrip("-")
    slug = slug[: MAX_USER_ID_LENGTH - _HASH_DIGITS - 1].rstrip("-")
    digest = hashlib.sha256(username.encode("utf-8")).hexdigest()[:_HASH_DIGITS]
    return f"{slug}-{digest}"


def _is_safe_as_is(username: str) -> bool:
    return (
        len(username) <= MAX_USER_ID_LENGTH
        and _SAFE_ID.fullmatch(username) is not None
        and _HASHED_SHAPE.fullmatch(username) is None
    )


class UserIdRegistry(Protocol):
    """Which username owns which ElastiCache user id, per target. Entries are kept for good.

    Rules every implementation follows:
    - `claim` records `username` as the owner of `user_id` when the id is free or already its own,
      and returns the owner as it now stands; a different owner means a collision (nothing changed).
    - `username_of` gives the owner of an id, or None when the id was never claimed (a user the
      system did not create: allow-listed, or a ghost).
    """

    def claim(self, target: str, user_id: str, username: str) -> str: ...

    def username_of(self, target: str, user_id: str) -> str | None: ...


def claim_user_id(registry: UserIdRegistry, target: str, username: str) -> str:
    """The id of `username` on `target`, claimed in the registry. InvalidUsername on a collision."""
    user_id = derive_user_id(username)
    owner = registry.claim(target, user_id, username)
    if owner != username:
        raise errors.InvalidUsername(
            f"ElastiCache user id {user_id!r} of username {username!r} already belongs to {owner!r}"
        )
    return user_id


class MemoryUserIdRegistry:
    """The registry in memory (tests, the local stack)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[tuple[str, str], str] = {}

    def claim(self, target: str, user_id: str, username: str) -> str:
        with self._lock:
            return self._owners.setdefault((target, user_id), username)

    def username_of(self, target: str, user_id: str) -> str | None:
        with self._lock:
            return self._owners.get((target, user_id))


class DynamoUserIdRegistry:
    """The registry in the Directory table: pk `ECUSERID#<target>`, sk `ID#<user id>`, `username`.

    One partition per target beside the ownership ledger's items; a claim is one conditional put.
    `client` is a boto3 DynamoDB client.
    """

    def __init__(self, table_name: str, client: Any) -> None:
        self.table_name = table_name
        self.client = client

    def claim(self, target: str, user_id: str, username: str) -> str:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={**self._key(target, user_id), "username": {"S": username}},
                ConditionExpression="attribute_not_exists(pk) OR username = :username",
                ExpressionAttributeValues={":username": {"S": username}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise errors.ServiceUnavailable(
                    f"ElastiCache user id registry unavailable: {error.response['Error']['Code']}"
                ) from error
            owner = self.username_of(target, user_id)
            if owner is None:  # entries are never deleted, so a failed condition means an owner
                raise errors.ServiceUnavailable(f"claim of ElastiCache user id {user_id!r} raced") from error
            return owner
        return username

    def username_of(self, target: str, user_id: str) -> str | None:
        try:
            item = self.client.get_item(
                TableName=self.table_name, Key=self._key(target, user_id), ConsistentRead=True
            ).get("Item")
        except ClientError as error:
            raise errors.ServiceUnavailable(
                f"ElastiCache user id registry unavailable: {error.response['Error']['Code']}"
            ) from error
        return item["username"]["S"] if item else None

    @staticmethod
    def _key(target: str, user_id: str) -> dict[str, Any]:
        return {"pk": {"S": _REGISTRY_PREFIX + target}, "sk": {"S": _ID_PREFIX + user_id}}
