"""Administration of the token list in Secrets Manager, behind `redis-scim token create|list|revoke`.

A new token is returned once and never stored: the secret only gains its SHA-256 with an id and
times. A revoked entry stays in the list (with its `revoked` time) so `token list` still shows what
was withdrawn and when; the API rejects it like an expired one.

Secrets Manager has no conditional write: two administrators changing the list at the same
instant could lose one change. `token list` afterwards shows what is in effect.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from redis_scim.auth.tokens import TokenEntry, generate_token, parse_token_list

_DURATION = re.compile(r"(\d+)([hdw])")
_DURATION_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_TOKEN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TokenAdminError(ValueError):
    """A token command that cannot be carried out as asked (unknown id, taken id, bad duration)."""


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h` or `2w` as a timedelta; anything else (zero included) raises TokenAdminError."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise TokenAdminError(f"{text!r} is not a duration such as 90d, 12h or 2w")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def token_state(entry: TokenEntry, now: datetime) -> str:
    """`live`, `expired` or `revoked`, as `token list` shows it."""
    if entry.revoked is not None:
        return "revoked"
    return "live" if entry.is_live(now) else "expired"


@dataclass(frozen=True)
class CreatedToken:
    token: str  # shown to the operator once, stored nowhere
    entry: TokenEntry


class TokenList:
    """The token list kept in one Secrets Manager secret, read and written without a cache."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def entries(self) -> list[TokenEntry]:
        value = self._client.get_secret_value(SecretId=self._secret_id)["SecretString"]
        try:
            return parse_token_list(json.loads(value or "[]"))
        except ValueError as exc:
            raise TokenAdminError(f"the token list in {self._secret_id} is malformed: {exc}") from None

    def create(self, *, expires_in: timedelta, now: datetime, token_id: str | None = None) -> CreatedToken:
        entries = self.entries()
        token_id = token_id or f"tok-{now:%Y%m%d}-{secrets.token_hex(3)}"
        if not _TOKEN_ID.fullmatch(token_id):
            raise TokenAdminError(
                f"{token_id!r} is not a token id (letters, digits, '.', '_', '-'; at most 64 characters)"
            )
        if any(entry.id == token_id for entry in entries):
            raise TokenAdminError(f"a token with id {token_id!r} already exists")
        token = generate_token()
        entry = TokenEntry.for_token(token, token_id=token_id, created=now, expires=now + expires_in)
        self._write([*entries, entry])
        return CreatedToken(token, entry)

    def revoke(self, token_id: str, *, now: datetime) -> TokenEntry:
        """Revoke the entry `token_id` (revoking twice keeps the first time); the revoked entry."""
        entries = self.entries()
        position = next((i for i, entry in enumerate(entries) if entry.id == token_id), None)
        if position is None:
            raise TokenAdminError(f"no token with id {token_id!r}")
        if entries[position].revoked is None:
            entries[position] = replace(entries[position], revoked=now)
            self._write(entries)
        return entries[position]

    def _write(self, entries: list[TokenEntry]) -> None:
        value = json.dumps([entry.to_json() for entry in entries], separators=(",", ":"))
        self._client.put_secret_value(SecretId=self._secret_id, SecretString=value)
