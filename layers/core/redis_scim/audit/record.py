"""The audit record and its per-user hash chain: what one change on one target looks like, and how
a history is checked for tampering. Pure code: no AWS, no Redis.

Each user's records form a chain: record n carries the hash of record n-1 (`prev_hash`) and its own
`hash`, the SHA-256 of the canonical JSON of every other field. Changing any field, removing a record
or reordering records breaks the chain. Old records expire by TTL; the first surviving record says
when its predecessor expired (`prev_expires_at`), so retention is told apart from a removed head.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from redis_scim.directory import Actor, Cause
from redis_scim.errors import SecretInAuditRecord

GENESIS_HASH = "0" * 64
DEFAULT_RETENTION_DAYS = 400


class Action(StrEnum):
    """What the change meant for the user's ACL on the target."""

    CREATE = "create"
    UPDATE = "update"
    DISABLE = "disable"
    DELETE = "delete"
    NONE = "none"  # desired and actual already matched
    SKIPPED = "skipped"  # not applied on purpose (e.g. a name collision, an allow-listed user)


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    FAILED = "failed"  # the target refused or was unreachable; `reason` says why
    REJECTED = "rejected"  # we refused to apply (e.g. an unsafe username); `reason` says why


# A Redis password hash (`#<sha256>`, or `!<sha256>` to remove one) anywhere in a string, and a
# clear-text password rule (`>secret`, `<secret`) as an ACL token, also opening a selector or a quote.
_PASSWORD_HASH = re.compile(r"[#!][0-9a-fA-F]{64}")
_PASSWORD_RULE = re.compile(r"""(?:^|[\s('"])[<>]\S""")


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """What the caller knows about one change of one user on one target.

    `acl_before`/`acl_after` are rule descriptions as the targets' `describe()` gives them (redacted:
    no passwords, no password hashes); None means "no ACL user on the target".
    """

    user_id: str  # SCIM id
    user_name: str  # SCIM userName at the time of the change
    redis_username: str | None
    target: str
    node_count: int
    action: Action
    outcome: Outcome
    verified: bool  # True only when the read-back succeeded on every node
    cause: Cause
    acl_before: str | None = None
    acl_after: str | None = None
    reason: str | None = None
    user_version: int | None = None  # the Directory version that was applied

    def __post_init__(self) -> None:
        if not self.user_id:
            raise ValueError("an audit record needs the SCIM user id")
        if self.node_count < 0:
            raise ValueError("node_count cannot be negative")
        if self.outcome in (Outcome.FAILED, Outcome.REJECTED) and not self.reason:
            raise ValueError(f"a {self.outcome} audit record needs a reason")


@dataclass(frozen=True, kw_only=True)
class AuditRecord(AuditEntry):
    """An entry sealed into its user's chain: `seq` counts from 1 per user."""

    seq: int
    at: str  # ISO 8601 UTC, microseconds: "2026-11-01T09:30:00.000000Z"
    expires_at: int  # epoch seconds: the table's TTL
    prev_expires_at: int | None  # when record seq-1 expires (None for the first record)
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        """A stored record is judged by its hash (`verify_chain`), not re-validated on read."""

    @property
    def day(self) -> str:
        return self.at[:10]

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON values; the form that is stored, logged and hashed."""
        data = asdict(self)
        data["action"], data["outcome"] = str(self.action), str(self.outcome)
        data["cause"] = self.cause.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        cause = data["cause"]
        values["cause"] = Cause(
            request_id=cause["request_id"],
            operation=cause["operation"],
            actor=Actor(**{k: cause["actor"].get(k) for k in ("token_id", "source_ip", "user_agent")}),
        )
        values["action"], values["outcome"] = Action(data["action"]), Outcome(data["outcome"])
        return cls(**values)


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8 (RFC 8785 style for our types)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode()


def record_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 over every field of a record except `hash` itself (`prev_hash` included)."""
    return hashlib.sha256(canonical_json({k: v for k, v in data.items() if k != "hash"})).hexdigest()


def user_name_key(user_name: str) -> str:
    """The case-insensitive form of a userName (NFC + casefold), as the Directory compares them."""
    return unicodedata.normalize("NFC", user_name).casefold()


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_secrets(entry: AuditEntry) -> list[str]:
    """Names of the entry's ACL fields that look like they carry a password or a password hash.

    Only the fields built from ACL rules and server replies are checked. Identifiers (userName,
    Redis username, target, request id, user agent) are recorded as the client sent them: they
    never come from a credential, and refusing an odd-looking identifier would make that user's
    changes unauditable and retry them until the dead-letter queue.
    """
    texts: dict[str, str | None] = {
        "acl_before": entry.acl_before,
        "acl_after": entry.acl_after,
        "reason": entry.reason,
    }
    return [
        name
        for name, text in texts.items()
        if text and (_PASSWORD_HASH.search(text) or _PASSWORD_RULE.search(text))
    ]


def seal(
    entry: AuditEntry, *, previous: AuditRecord | None, at: datetime, retention_days: int
) -> AuditRecord:
    """Chain `entry` after `previous` (None: the user's first record). Refuses secrets.

    Raises `SecretInAuditRecord` when a field looks like a password or password hash.
    """
    leaks = find_secrets(entry)
    if leaks:
        raise SecretInAuditRecord(
            f"audit record for user {entry.user_id} refused: "
            f"{', '.join(leaks)} look like a password or its hash"
        )
    if previous is not None and previous.user_id != entry.user_id:
        raise ValueError("a chain belongs to one user")
    values = {f.name: getattr(entry, f.name) for f in fields(AuditEntry)}
    unsigned = AuditRecord(
        **values,
        seq=1 if previous is None else previous.seq + 1,
        at=format_time(at),
        expires_at=int((at + timedelta(days=retention_days)).timestamp()),
        prev_expires_at=None if previous is None else previous.expires_at,
        prev_hash=GENESIS_HASH if previous is None else previous.hash,
        hash="",
    )
    return AuditRecord.from_json({**unsigned.to_json(), "hash": record_hash(unsigned.to_json())})


@dataclass(frozen=True)
class ChainCheck:
    """The result of verifying one user's history. `broken_at` is the 1-based position in it."""

    ok: bool
    count: int
    broken_at: int | None = None
    reason: str | None = None
    expired_before: int = 0  # records older than the first one, already removed by retention


def verify_chain(records: Sequence[AuditRecord], *, now: datetime | None = None) -> ChainCheck:
    """Check a user's history (in `seq` order, as stored) is complete and untampered.

    An empty history does not verify: there is nothing to vouch for.
    """
    now_epoch = (now or datetime.now(UTC)).timestamp()
    if not records:
        return ChainCheck(ok=False, count=0, reason="no records")

    def broken(position: int, reason: str) -> ChainCheck:
        return ChainCheck(ok=False, count=len(records), broken_at=position, reason=reason)

    first = records[0]
    if first.seq != 1:
        # Legitimate only when the predecessor's TTL has passed (DynamoDB removed it, or will).
        if first.seq < 1 or first.prev_expires_at is None or first.prev_expires_at > now_epoch:
            return broken(1, f"history starts at seq {first.seq}: earlier records removed before expiry")
    elif first.prev_hash != GENESIS_HASH or first.prev_expires_at is not None:
        return broken(1, "first record does not start a chain")
    for position, record in enumerate(records, start=1):
        if record.user_id != first.user_id:
            return broken(position, f"record belongs to user {record.user_id}, not {first.user_id}")
        if record.hash != record_hash(record.to_json()):
            return broken(position, f"seq {record.seq}: content does not match its hash")
        if position > 1:
            previous = records[position - 2]
            if record.seq != previous.seq + 1:
                return broken(position, f"seq {record.seq} follows seq {previous.seq}")
            if record.prev_hash != previous.hash:
                return broken(position, f"seq {record.seq}: previous hash differs from seq {previous.seq}")
            if record.prev_expires_at != previous.expires_at:
                return broken(position, f"seq {record.seq}: previous expiry differs from seq {previous.seq}")
    return ChainCheck(ok=True, count=len(records), expired_before=first.seq - 1)
