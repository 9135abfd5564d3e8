"""Value rules both Directory implementations share, so they cannot disagree.

Uniqueness keys (NFC + casefold where the attribute is case-insensitive), timestamps that sort
as strings, the store-owned attributes stripped from resources, lookups and paging.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from redis_scim import errors
from redis_scim.directory import ChangeFeed, Member, UserChange

Kind = Literal["User", "Group"]

# Attributes the store owns: a client value for them is never kept in `resource`.
STORE_OWNED: dict[Kind, frozenset[str]] = {
    "User": frozenset({"id", "meta", "schemas", "password", "groups"}),
    "Group": frozenset({"id", "meta", "schemas", "members"}),
}

# Unique attributes per kind, and whether they compare case-insensitively. `externalId` is caseExact
# (RFC 7643 §3.1); userName is not (RFC 7643 §4.1.1); group displayName is unique because the
# policy maps groups by name.
UNIQUE_ATTRIBUTES: dict[Kind, dict[str, bool]] = {
    "User": {"userName": True, "externalId": False},
    "Group": {"displayName": True, "externalId": False},
}

# The attributes `search_*` accepts as a `lookup`: `id` plus the unique ones.
LOOKUP_ATTRIBUTES: dict[Kind, frozenset[str]] = {
    kind: frozenset({"id", *attributes}) for kind, attributes in UNIQUE_ATTRIBUTES.items()
}

PUBLISH_FAILURE_METRIC = "ChangeFeedPublishFailures"


class MetricsSink(Protocol):
    """The part of powertools `Metrics` the Directory uses."""

    def add_metric(self, name: str, unit: Any, value: float) -> None: ...


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds; fixed width, so string order is time order."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def normalise(value: str, *, case_insensitive: bool) -> str:
    text = unicodedata.normalize("NFC", value)
    return text.casefold() if case_insensitive else text


def unique_values(kind: Kind, resource: dict[str, Any]) -> dict[str, str]:
    """attribute -> normalised value, for each unique attribute the resource sets."""
    values: dict[str, str] = {}
    for attribute, case_insensitive in UNIQUE_ATTRIBUTES[kind].items():
        value = resource.get(attribute)
        if isinstance(value, str) and value != "":
            values[attribute] = normalise(value, case_insensitive=case_insensitive)
    return values


def clean_resource(kind: Kind, resource: dict[str, Any]) -> dict[str, Any]:
    """A copy of `resource` without the store-owned attributes; the required name must be set."""
    required = "userName" if kind == "User" else "displayName"
    value = resource.get(required)
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidValue(f"{required} is required")
    return {key: value for key, value in resource.items() if key not in STORE_OWNED[kind]}


def check_lookup(kind: Kind, attribute: str) -> None:
    if attribute not in LOOKUP_ATTRIBUTES[kind]:
        raise ValueError(f"{kind} lookups support {sorted(LOOKUP_ATTRIBUTES[kind])}, not {attribute!r}")


def distinct_members(members: Sequence[Member]) -> dict[str, Member]:
    """user id -> member, first occurrence wins (IdPs repeat ids in one request)."""
    distinct: dict[str, Member] = {}
    for member in members:
        distinct.setdefault(member.value, member)
    return distinct


def page_bounds(start_index: int, count: int) -> tuple[int, int]:
    """0-based [start, stop) of the requested slice; startIndex below 1 means 1 (RFC 7644 §3.4.2.4)."""
    start = max(start_index, 1) - 1
    return start, start + max(count, 0)


def unknown_member(user_id: str) -> errors.InvalidValue:
    return errors.InvalidValue(f"members: no user with id {user_id!r}")


def version_conflict(
    kind: Kind, resource_id: str, expected: int, actual: int | None
) -> errors.VersionConflict:
    return errors.VersionConflict(f"{kind} {resource_id} is at version {actual}, not {expected}")


def taken(kind: Kind, attribute: str) -> errors.Uniqueness:
    return errors.Uniqueness(f"{kind} {attribute} is already taken")


def publish_changes(
    feed: ChangeFeed | None,
    changes: Sequence[UserChange],
    *,
    logger: logging.Logger,
    metrics: MetricsSink | None,
) -> None:
    """Publish after commit. A failure is logged and counted, never raised: the pending markers are
    already committed and the reconciler re-drives them."""
    if feed is None or not changes:
        return
    try:
        feed.publish(changes)
    except Exception as error:
        logger.warning(
            "change feed publish failed; pending markers stay for the reconciler",
            extra={
                "users": [change.user_id for change in changes][:50],
                "count": len(changes),
                "error": type(error).__name__,
            },
        )
        if metrics is not None:
            metrics.add_metric(name=PUBLISH_FAILURE_METRIC, unit="Count", value=len(changes))
