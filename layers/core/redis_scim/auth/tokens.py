"""Bearer tokens of the SCIM API: hashing, the stored token list, and constant-time verification.

Only SHA-256 hashes of tokens are stored (in a Secrets Manager secret): a JSON list of
`{"id", "sha256", "created", "expires"}`, plus `"revoked"` once `redis-scim token revoke` has
withdrawn an entry. Two entries may be live at once, so a token can be rotated without downtime:
add the new one, reconfigure the IdP, then revoke the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from redis_scim import errors

REALM = "redis-scim"
# RFC 6750 §2.1: the b64token syntax of a bearer credential.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class RejectionReason(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


class AuthenticationFailed(errors.Unauthorized):
    """A request without a valid bearer token. `reason` is for logs and metrics only: the client
    gets the same answer for an unknown and an expired token."""

    def __init__(self, reason: RejectionReason, *, token_id: str | None = None) -> None:
        detail = (
            "Authentication required: send 'Authorization: Bearer <token>'."
            if reason is RejectionReason.MISSING
            else "The bearer token is invalid, expired or revoked."
        )
        super().__init__(detail)
        self.reason = reason
        self.token_id = token_id  # the id of the matching (expired or revoked) entry, never the token

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` value (RFC 6750 §3: no error code when no credential was sent)."""
        if self.reason is RejectionReason.MISSING:
            return f'Bearer realm="{REALM}"'
        return f'Bearer realm="{REALM}", error="invalid_token"'


def hash_token(token: str) -> str:
    """The lower-case hex SHA-256 of a token, as stored in the token list."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    """A new random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    id: str
    sha256: str
    created: datetime
    expires: datetime | None = None
    revoked: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    @classmethod
    def for_token(
        cls, token: str, *, token_id: str, created: datetime | None = None, expires: datetime | None = None
    ) -> TokenEntry:
        created = created or datetime.now(UTC)
        return cls(id=token_id, sha256=hash_token(token), created=created, expires=expires)

    @classmethod
    def from_json(cls, item: Any) -> TokenEntry:
        if not isinstance(item, dict):
            raise ValueError("each token entry must be an object")
        token_id, digest = item.get("id"), item.get("sha256")
        if not isinstance(token_id, str) or not token_id:
            raise ValueError("a token entry has no 'id'")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ValueError(f"token entry {token_id!r}: 'sha256' must be 64 lower-case hex digits")
        expires, revoked = item.get("expires"), item.get("revoked")
        return cls(
            id=token_id,
            sha256=digest,
            created=_timestamp(item.get("created"), token_id, "created"),
            expires=None if expires is None else _timestamp(expires, token_id, "expires"),
            revoked=None if revoked is None else _timestamp(revoked, token_id, "revoked"),
        )

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "sha256": self.sha256,
            "created": self.created.isoformat(),
            "expires": None if self.expires is None else self.expires.isoformat(),
        }
        if self.revoked is not None:
            item["revoked"] = self.revoked.isoformat()
        return item


def _timestamp(value: Any, token_id: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"token entry {token_id!r}: {name!r} is not an ISO 8601 time") from None
    # A time without an offset is taken as UTC rather than the machine's zone.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_token_list(value: Any) -> list[TokenEntry]:
    """The entries of a token list (the secret's JSON, already decoded). Raises ValueError."""
    if not isinstance(value, list):
        raise ValueError("the token list must be a JSON array")
    return [TokenEntry.from_json(item) for item in value]


class TokenSource(Protocol):
    def entries(self) -> Sequence[TokenEntry]:
        """The current token list; raises `errors.ServiceUnavailable` when it cannot be read."""
        ...


class TokenUse(Protocol):
    def record(self, entry: TokenEntry, now: datetime) -> None:
        """Note a successful authentication with `entry` (last-used time, age metrics). Must not
        raise: a failure to record is logged, never a reason to refuse the request."""
        ...


class BearerAuthenticator:
    """Checks `Authorization: Bearer <token>` headers against a `TokenSource`.

    The presented token is hashed and its digest compared with `hmac.compare_digest` against
    every entry, matched or not, so neither timing nor the number of comparisons tells an
    attacker how close a guess was or which entry it hit. Each success is passed to `usage`.
    """

    def __init__(
        self,
        tokens: TokenSource,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        usage: TokenUse | None = None,
    ):
        self._tokens = tokens
        self._clock = clock
        self._usage = usage

    def authenticate(self, authorization: str | None) -> str:
        """The id of the live token entry the header carries; raises `AuthenticationFailed`."""
        if authorization is None or not authorization.strip():
            raise AuthenticationFailed(RejectionReason.MISSING)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        # The auth scheme is case-insensitive (RFC 7235 §2.1).
        if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
            raise AuthenticationFailed(RejectionReason.MALFORMED)
        entries = self._tokens.entries()
        digest = hash_token(token)
        matches = [entry for entry in entries if hmac.compare_digest(digest, entry.sha256)]
        now = self._clock()
        live = [entry for entry in matches if entry.is_live(now)]
        if live:
            if self._usage is not None:
                self._usage.record(live[0], now)
            return live[0].id
        if matches:
            reason = RejectionReason.REVOKED if matches[0].revoked is not None else RejectionReason.EXPIRED
            raise AuthenticationFailed(reason, token_id=matches[0].id)
        raise AuthenticationFailed(RejectionReason.UNKNOWN)
