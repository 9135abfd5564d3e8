"""Bearer-token authentication: the token list format, constant-time verification, rotation,
expiry, and reading the list from Secrets Manager (moto) with its short cache."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from redis_scim import errors
from redis_scim.auth import (
    AuthenticationFailed,
    BearerAuthenticator,
    RejectionReason,
    SecretsManagerTokens,
    TokenEntry,
    generate_token,
    hash_token,
    parse_token_list,
)
from redis_scim.auth import tokens as tokens_module

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
OLD_TOKEN, NEW_TOKEN, RETIRED_TOKEN = "old-token-value", "new-token-value", "retired-token-value"


class StaticTokens:
    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        self._entries = list(entries)

    def entries(self) -> Sequence[TokenEntry]:
        return self._entries


def entry(token: str, token_id: str, *, expires: datetime | None = None) -> TokenEntry:
    return TokenEntry.for_token(token, token_id=token_id, created=NOW - timedelta(days=30), expires=expires)


@pytest.fixture
def authenticator() -> BearerAuthenticator:
    # Rotation in progress: two live tokens, plus one that expired yesterday.
    entries = [
        entry(OLD_TOKEN, "tok-old", expires=NOW + timedelta(days=7)),
        entry(NEW_TOKEN, "tok-new"),
        entry(RETIRED_TOKEN, "tok-retired", expires=NOW - timedelta(days=1)),
    ]
    return BearerAuthenticator(StaticTokens(entries), clock=lambda: NOW)


def rejection(authenticator: BearerAuthenticator, header: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        authenticator.authenticate(header)
    assert caught.value.status == 401
    return caught.value


def test_hash_is_lower_case_hex_sha256() -> None:
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_generated_tokens_are_random_and_valid_bearer_tokens(authenticator: BearerAuthenticator) -> None:
    first, second = generate_token(), generate_token()
    assert first != second and len(first) >= 43
    accepting = BearerAuthenticator(StaticTokens([entry(first, "generated")]), clock=lambda: NOW)
    assert accepting.authenticate(f"Bearer {first}") == "generated"


def test_both_live_tokens_are_accepted_during_rotation(authenticator: BearerAuthenticator) -> None:
    assert authenticator.authenticate(f"Bearer {OLD_TOKEN}") == "tok-old"
    assert authenticator.authenticate(f"Bearer {NEW_TOKEN}") == "tok-new"


def test_scheme_is_case_insensitive_and_surrounding_space_ignored(authenticator: BearerAuthenticator) -> None:
    assert authenticator.authenticate(f"  bearer   {NEW_TOKEN} ") == "tok-new"
    assert authenticator.authenticate(f"BEARER {NEW_TOKEN}") == "tok-new"


def test_expired_token_is_rejected_and_names_its_entry(authenticator: BearerAuthenticator) -> None:
    failure = rejection(authenticator, f"Bearer {RETIRED_TOKEN}")
    assert failure.reason is RejectionReason.EXPIRED
    assert failure.token_id == "tok-retired"
    assert failure.challenge == 'Bearer realm="redis-scim", error="invalid_token"'


def test_token_expires_at_its_expiry_instant() -> None:
    expiry = NOW + timedelta(seconds=1)
    tokens = StaticTokens([entry(OLD_TOKEN, "tok-old", expires=expiry)])
    just_before = BearerAuthenticator(tokens, clock=lambda: expiry - timedelta(microseconds=1))
    assert just_before.authenticate(f"Bearer {OLD_TOKEN}") == "tok-old"
    at_expiry = BearerAuthenticator(tokens, clock=lambda: expiry)
    assert rejection(at_expiry, f"Bearer {OLD_TOKEN}").reason is RejectionReason.EXPIRED


def test_unknown_token_is_rejected(authenticator: BearerAuthenticator) -> None:
    failure = rejection(authenticator, "Bearer not-a-token-we-issued")
    assert failure.reason is RejectionReason.UNKNOWN
    assert failure.token_id is None


def test_unknown_and_expired_look_the_same_to_the_client(authenticator: BearerAuthenticator) -> None:
    unknown = rejection(authenticator, "Bearer guess")
    expired = rejection(authenticator, f"Bearer {RETIRED_TOKEN}")
    assert (unknown.detail, unknown.challenge) == (expired.detail, expired.challenge)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_credentials(authenticator: BearerAuthenticator, header: str | None) -> None:
    failure = rejection(authenticator, header)
    assert failure.reason is RejectionReason.MISSING
    # RFC 6750 §3.1: no error code when the request carried no credentials at all.
    assert failure.challenge == 'Bearer realm="redis-scim"'


@pytest.mark.parametrize(
    "header",
    [
        f"Basic {NEW_TOKEN}",
        "Bearer",
        "Bearer ",
        f"Token {NEW_TOKEN}",
        f"Bearer {NEW_TOKEN} extra",
        "Bearer tok\u00e9n",
        "Bearer a=b",
        NEW_TOKEN,
    ],
)
def test_malformed_headers(authenticator: BearerAuthenticator, header: str) -> None:
    assert rejection(authenticator, header).reason is RejectionReason.MALFORMED


def test_every_entry_is_compared_with_compare_digest_even_after_a_match(
    authenticator: BearerAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def recording_compare_digest(a: str, b: str) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", recording_compare_digest)
    # The first entry matches: the other two are still compared, so timing says nothing of which matched.
    assert authenticator.authenticate(f"Bearer {OLD_TOKEN}") == "tok-old"
    assert [b for _, b in compared] == [hash_token(t) for t in (OLD_TOKEN, NEW_TOKEN, RETIRED_TOKEN)]
    # What is compared is the presented token's digest, never the token itself.
    assert {a for a, _ in compared} == {hash_token(OLD_TOKEN)}
    compared.clear()
    rejection(authenticator, "Bearer unknown")
    assert len(compared) == 3


def test_an_empty_token_list_accepts_nothing() -> None:
    authenticator = BearerAuthenticator(StaticTokens([]), clock=lambda: NOW)
    assert rejection(authenticator, f"Bearer {NEW_TOKEN}").reason is RejectionReason.UNKNOWN


# --- the stored list -----------------------------------------------------------------------------


def test_token_list_round_trip() -> None:
    stored = [entry(OLD_TOKEN, "a", expires=NOW), entry(NEW_TOKEN, "b")]
    assert parse_token_list(json.loads(json.dumps([e.to_json() for e in stored]))) == stored


def test_token_list_accepts_z_times_and_naive_times_as_utc() -> None:
    item = {
        "id": "x",
        "sha256": hash_token("t"),
        "created": "2026-01-01T00:00:00Z",
        "expires": "2027-01-01T00:00:00",
    }
    (parsed,) = parse_token_list([item])
    assert parsed.created == datetime(2026, 1, 1, tzinfo=UTC)
    assert parsed.expires == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"id": "x"}, "JSON array"),
        (["not an object"], "object"),
        ([{"sha256": hash_token("t"), "created": "2026-01-01T00:00:00Z"}], "'id'"),
        ([{"id": "x", "sha256": hash_token("t").upper(), "created": "2026-01-01T00:00:00Z"}], "sha256"),
        ([{"id": "x", "sha256": "abc", "created": "2026-01-01T00:00:00Z"}], "sha256"),
        ([{"id": "x", "sha256": hash_token("t"), "created": "yesterday"}], "created"),
        ([{"id": "x", "sha256": hash_token("t"), "created": "2026-01-01", "expires": "soon"}], "expires"),
    ],
)
def test_malformed_token_lists_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_token_list(value)


# --- Secrets Manager -----------------------------------------------------------------------------

SECRET_NAME = "redis-scim/scim-tokens"


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def store(client: Any, entries: Sequence[TokenEntry] | str) -> None:
    value = entries if isinstance(entries, str) else json.dumps([e.to_json() for e in entries])
    try:
        client.put_secret_value(SecretId=SECRET_NAME, SecretString=value)
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name=SECRET_NAME, SecretString=value)


def test_secret_is_read_and_cached_for_max_age(secretsmanager: Any) -> None:
    store(secretsmanager, [entry(OLD_TOKEN, "tok-old")])
    cached = SecretsManagerTokens(SECRET_NAME, secretsmanager, max_age=60)
    assert [e.id for e in cached.entries()] == ["tok-old"]
    store(secretsmanager, [entry(NEW_TOKEN, "tok-new")])  # the old token is revoked
    assert [e.id for e in cached.entries()] == ["tok-old"]  # still within the cache's max age
    uncached = SecretsManagerTokens(SECRET_NAME, secretsmanager, max_age=0)
    assert [e.id for e in uncached.entries()] == ["tok-new"]


def test_revoked_token_stops_working_once_the_cache_expires(secretsmanager: Any) -> None:
    store(secretsmanager, [entry(OLD_TOKEN, "tok-old"), entry(NEW_TOKEN, "tok-new")])
    authenticator = BearerAuthenticator(SecretsManagerTokens(SECRET_NAME, secretsmanager, max_age=0))
    assert authenticator.authenticate(f"Bearer {OLD_TOKEN}") == "tok-old"
    store(secretsmanager, [entry(NEW_TOKEN, "tok-new")])
    assert rejection(authenticator, f"Bearer {OLD_TOKEN}").reason is RejectionReason.UNKNOWN
    assert authenticator.authenticate(f"Bearer {NEW_TOKEN}") == "tok-new"


@pytest.mark.parametrize(
    "stored", [None, "not json", '{"id": "x"}', '[{"id": "x", "sha256": "short", "created": "2026-01-01"}]']
)
def test_unreadable_secret_is_service_unavailable(
    secretsmanager: Any, stored: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    if stored is not None:
        store(secretsmanager, stored)
    tokens = SecretsManagerTokens(SECRET_NAME, secretsmanager, max_age=0)
    with pytest.raises(errors.ServiceUnavailable) as caught:
        BearerAuthenticator(tokens).authenticate(f"Bearer {NEW_TOKEN}")
    assert caught.value.status == 503
    assert "token store" in caught.value.detail and SECRET_NAME not in caught.value.detail
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == "cannot read the SCIM token list"
    assert NEW_TOKEN not in caplog.text


def test_malformed_header_does_not_read_the_secret(secretsmanager: Any) -> None:
    # No secret exists: a request without a usable credential is still a 401, not a 503.
    authenticator = BearerAuthenticator(SecretsManagerTokens(SECRET_NAME, secretsmanager, max_age=0))
    assert rejection(authenticator, None).reason is RejectionReason.MISSING
    assert rejection(authenticator, "Basic abc").reason is RejectionReason.MALFORMED
