"""The audit record and hash chain: canonical hashing, tamper detection, retention, secret refusal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_scim.audit.record import (
    GENESIS_HASH,
    Action,
    AuditEntry,
    AuditRecord,
    Outcome,
    canonical_json,
    find_secrets,
    record_hash,
    seal,
    user_name_key,
    verify_chain,
)
from redis_scim.directory import Actor, Cause
from redis_scim.errors import SecretInAuditRecord

T0 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
CANONICAL = (
    b'{"acl_after":"on resetpass (+@read ~cache:*) (+@write ~sessions:*)","acl_before":"on reset'
    b'pass (+@read ~cache:*)","action":"update","at":"2026-11-01T09:30:00.000000Z","cause":{"act'
    b'or":{"source_ip":"203.0.113.7","token_id":"tok-1","user_agent":"Okta SCIM Client 1.0"},"op'
    b'eration":"PATCH /Users/2819c223","request_id":"req-1"},"expires_at":1828085400,"node_count'
    b'":3,"outcome":"applied","prev_expires_at":null,"prev_hash":"000000000000000000000000000000'
    b'0000000000000000000000000000000000","reason":null,"redis_username":"bjensen","seq":1,"targ'
    b'et":"prod-cache","user_id":"2819c223-7f76-453a-919d-413861904646","user_name":"bjensen@exa'
    b'mple.com","user_version":4,"verified":true}'
)
PASSWORD_HASH = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"  # sha256("password")


def entry(**overrides: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "user_id": "2819c223-7f76-453a-919d-413861904646",
        "user_name": "bjensen@example.com",
        "redis_username": "bjensen",
        "target": "prod-cache",
        "node_count": 3,
        "action": Action.UPDATE,
        "outcome": Outcome.APPLIED,
        "verified": True,
        "cause": Cause(
            "req-1", "PATCH /Users/2819c223", Actor("tok-1", "203.0.113.7", "Okta SCIM Client 1.0")
        ),
        "acl_before": "on resetpass (+@read ~cache:*)",
        "acl_after": "on resetpass (+@read ~cache:*) (+@write ~sessions:*)",
        "user_version": 4,
    }
    return AuditEntry(**{**values, **overrides})


def chain(length: int, *, retention_days: int = 400) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for n in range(length):
        previous = records[-1] if records else None
        records.append(
            seal(
                entry(cause=Cause(f"req-{n}", "PATCH /Users/x")),
                previous=previous,
                at=T0 + timedelta(minutes=n),
                retention_days=retention_days,
            )
        )
    return records


# --- canonical hashing -------------------------------------------------------------------------


def test_canonical_json_is_independent_of_key_order_and_compact() -> None:
    assert canonical_json({"b": 1, "a": {"y": None, "x": "é"}}) == canonical_json(
        {"a": {"x": "é", "y": None}, "b": 1}
    )
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_hash_is_sha256_of_the_canonical_json_of_every_other_field() -> None:
    record = seal(entry(), previous=None, at=T0, retention_days=400)
    fields = {k: v for k, v in record.to_json().items() if k != "hash"}
    expected = hashlib.sha256(
        json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert record.hash == expected == record_hash(record.to_json())
    assert "prev_hash" in fields and "cause" in fields and "acl_after" in fields


def test_hash_is_stable_across_runs_and_versions() -> None:
    # Pinned: a change to the canonical form would silently invalidate every stored chain.
    # The expected hash was computed outside Python (`printf %s "$CANONICAL" | sha256sum`).
    record = seal(entry(), previous=None, at=T0, retention_days=400)
    assert canonical_json({k: v for k, v in record.to_json().items() if k != "hash"}) == CANONICAL
    assert record.hash == "ed046c9b45dd9f3d694e9853e6ef2b40ec7c519e580668bff9f0573ac78abf16"


def test_seal_links_records_and_sets_retention() -> None:
    first, second = chain(2, retention_days=30)
    assert (first.seq, first.prev_hash, first.prev_expires_at) == (1, GENESIS_HASH, None)
    assert (second.seq, second.prev_hash, second.prev_expires_at) == (2, first.hash, first.expires_at)
    assert first.at == "2026-11-01T09:30:00.000000Z" and first.day == "2026-11-01"
    assert first.expires_at == int((T0 + timedelta(days=30)).timestamp())


def test_seal_refuses_to_chain_another_users_record() -> None:
    with pytest.raises(ValueError, match="one user"):
        seal(entry(user_id="someone-else"), previous=chain(1)[0], at=T0, retention_days=400)


@given(
    user_name=st.text(min_size=1, max_size=40),
    # `<`, `>`, `#` and `!` can make a text look like a password rule: covered by the secret tests
    reason=st.none() | st.text(st.characters(exclude_characters="<>#!"), max_size=40),
    node_count=st.integers(min_value=0, max_value=1000),
    verified=st.booleans(),
)
def test_json_round_trip_keeps_the_hash_valid(
    user_name: str, reason: str | None, node_count: int, verified: bool
) -> None:
    record = seal(
        entry(user_name=user_name, reason=reason, node_count=node_count, verified=verified, acl_before=None),
        previous=None,
        at=T0,
        retention_days=400,
    )
    restored = AuditRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert restored == record
    assert verify_chain([restored], now=T0).ok


# --- verification ----------------------------------------------------------------------------------


def test_an_untouched_chain_verifies() -> None:
    assert verify_chain(chain(5), now=T0) == verify_chain(chain(5), now=T0)
    check = verify_chain(chain(5), now=T0)
    assert (check.ok, check.count, check.broken_at, check.expired_before) == (True, 5, None, 0)


def test_an_empty_history_does_not_verify() -> None:
    check = verify_chain([], now=T0)
    assert (check.ok, check.count, check.reason) == (False, 0, "no records")


_CHANGES: dict[str, Any] = {
    "user_id": "another-user",
    "user_name": "mallory@example.com",
    "redis_username": "mallory",
    "target": "dev-cache",
    "node_count": 1,
    "action": Action.NONE,
    "outcome": Outcome.UNCHANGED,
    "verified": False,
    "cause": Cause("req-forged", "reconciler"),
    "acl_before": None,
    "acl_after": "on resetpass (+@all ~*)",
    "reason": "forged",
    "user_version": 99,
    "seq": 7,
    "at": "2026-11-02T00:00:00.000000Z",
    "expires_at": 1,
    "prev_expires_at": 2,
    "prev_hash": "f" * 64,
    "hash": "e" * 64,
}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(AuditRecord)])
def test_changing_any_field_breaks_the_chain(field: str) -> None:
    records = chain(4)
    records[2] = dataclasses.replace(records[2], **{field: _CHANGES[field]})
    check = verify_chain(records, now=T0)
    assert not check.ok and check.broken_at == 3


def test_every_field_is_covered_by_the_tamper_test() -> None:
    assert set(_CHANGES) == {f.name for f in dataclasses.fields(AuditRecord)}


def test_a_changed_record_with_a_recomputed_hash_breaks_the_next_link() -> None:
    records = chain(4)
    forged = dataclasses.replace(records[1], acl_after="on nopass (+@all ~*)")
    records[1] = dataclasses.replace(forged, hash=record_hash(forged.to_json()))
    check = verify_chain(records, now=T0)
    assert (check.ok, check.broken_at) == (False, 3)
    assert "previous hash" in (check.reason or "")


def test_a_record_removed_from_the_middle_breaks_the_chain() -> None:
    records = chain(5)
    del records[2]
    check = verify_chain(records, now=T0)
    assert (check.ok, check.broken_at) == (False, 3)


def test_reordered_records_break_the_chain() -> None:
    records = chain(5)
    records[1], records[3] = records[3], records[1]
    assert verify_chain(records, now=T0).broken_at == 2


def test_a_duplicated_record_breaks_the_chain() -> None:
    records = chain(3)
    assert verify_chain([*records, records[-1]], now=T0).broken_at == 4


def test_a_record_of_another_user_spliced_in_breaks_the_chain() -> None:
    records = chain(3)
    other = seal(entry(user_id="other"), previous=None, at=T0, retention_days=400)
    assert verify_chain([*records, other], now=T0).broken_at == 4


def test_a_removed_head_that_has_not_expired_breaks_the_chain() -> None:
    records = chain(4, retention_days=30)
    check = verify_chain(records[2:], now=T0 + timedelta(days=29))
    assert (check.ok, check.broken_at) == (False, 1)
    assert "removed before expiry" in (check.reason or "")


def test_a_head_removed_by_retention_verifies_and_says_so() -> None:
    records = chain(4, retention_days=30)
    check = verify_chain(records[2:], now=T0 + timedelta(days=31))
    assert (check.ok, check.count, check.expired_before) == (True, 2, 2)


def test_a_forged_first_record_must_start_from_genesis() -> None:
    first = dataclasses.replace(chain(1)[0], prev_hash="a" * 64)
    first = dataclasses.replace(first, hash=record_hash(first.to_json()))
    check = verify_chain([first], now=T0)
    assert (check.ok, check.reason) == (False, "first record does not start a chain")


# --- secrets never enter the trail --------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"acl_after": f"on #{PASSWORD_HASH} (+@read ~cache:*)"},
        {"acl_before": f"on #{PASSWORD_HASH.upper()} ~*"},
        {"acl_after": f"on !{PASSWORD_HASH} ~*"},
        {"acl_after": "on >hunter2 +@all ~*"},
        {"acl_after": "on <hunter2 ~*"},
        {"acl_after": "on resetpass (>hunter2 +@read ~cache:*)"},
        {"acl_after": ">hunter2"},
        {"reason": "ERR Error in ACL SETUSER modifier '>hunter2'"},
        {"outcome": Outcome.FAILED, "reason": f"could not set #{PASSWORD_HASH}"},
    ],
)
def test_a_password_or_password_hash_is_refused(overrides: dict[str, Any]) -> None:
    leaking = entry(**overrides)
    assert find_secrets(leaking)
    with pytest.raises(SecretInAuditRecord) as raised:
        seal(leaking, previous=None, at=T0, retention_days=400)
    assert "hunter2" not in str(raised.value) and PASSWORD_HASH not in str(raised.value).lower()


@pytest.mark.parametrize(
    "overrides",
    [
        {"cause": Cause("req-1", "POST /Users", Actor("tok", "10.0.0.1", f"agent #{PASSWORD_HASH}"))},
        {"user_name": f"#{PASSWORD_HASH}"},
        {"redis_username": ">not-a-password"},
    ],
)
def test_identifiers_are_recorded_as_sent_even_when_shaped_like_a_secret(overrides: dict[str, Any]) -> None:
    # An IdP may name a user anything; refusing the record would leave that user's changes unaudited.
    unusual = entry(**overrides)
    assert find_secrets(unusual) == []
    assert seal(unusual, previous=None, at=T0, retention_days=400).hash


@pytest.mark.parametrize(
    "acl",
    [
        "on resetpass (+@read +@connection ~cache:* &cache-events)",
        "off nopass -@all",
        "on resetpass (%R~cache:* %W~sessions:>x* +get|>x) (-@all +ping)",
        "on resetpass ~a>b ~c<d",
        None,
    ],
)
def test_ordinary_acl_descriptions_pass(acl: str | None) -> None:
    assert find_secrets(entry(acl_before=acl, acl_after=acl)) == []


@given(prefix=st.text(max_size=20), digest=st.binary(min_size=32, max_size=32), marker=st.sampled_from("#!"))
def test_any_password_hash_in_an_acl_is_refused(prefix: str, digest: bytes, marker: str) -> None:
    assert "acl_after" in find_secrets(entry(acl_after=f"{prefix}{marker}{digest.hex()}"))


# --- entry validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.REJECTED])
def test_failed_and_rejected_need_a_reason(outcome: Outcome) -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        entry(outcome=outcome, reason=None)
    assert entry(outcome=outcome, reason="target unreachable").reason == "target unreachable"


def test_node_count_cannot_be_negative_and_user_id_is_required() -> None:
    with pytest.raises(ValueError):
        entry(node_count=-1)
    with pytest.raises(ValueError):
        entry(user_id="")


def test_user_name_key_is_case_insensitive_and_normalized() -> None:
    assert user_name_key("BJensen@Example.com") == user_name_key("bjensen@example.com")
    assert user_name_key("Jose\u0301") == user_name_key("jos\u00e9")
    assert user_name_key("STRASSE") == user_name_key("straße")
