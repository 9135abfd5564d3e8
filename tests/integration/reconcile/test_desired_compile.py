"""The reconciler compiles every user of a target in one pass through the policy's caches: the
desired ACLs it gets must be exactly those of a policy compiled from scratch, user by user."""

from __future__ import annotations

import gc
import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from redis_scim.directory import UserRecord
from redis_scim.errors import InvalidUsername
from redis_scim.policy import DesiredAcl, Policy, compile_user, load_policy_text
from redis_scim.sync.reconcile import Reconciler, _cyclic_gc_paused, _DirectorySnapshot

POLICY = """\
version: 1
roles:
  reader: "+@read +@connection ~cache:*"
  writer: "+@read +@write -flushall -flushdb +@connection ~sessions:* &events"
  admin: "+@all ~*"
groups:
  "Readers": [reader]
  "Writers": [writer]
  "Both": [writer, reader]
  "Admins": [admin]
targets:
  plain:
    kind: redis
    url: redis://127.0.0.1:1
    allow: [default, breakglass]
  prefixed:
    kind: redis
    url: redis://127.0.0.1:1
    username: "sso.{userNameLocalPart}"
    credentials: external
    groups:
      "Admins": []
      "Writers": [reader]
"""
# The same role names with other rules: a cache keyed by role name alone would leak between them.
OTHER_RULES = POLICY.replace('reader: "+@read +@connection ~cache:*"', 'reader: "+@read ~other:*"')
GROUP_SETS: list[tuple[str, ...]] = [
    ("Readers",),
    ("Writers",),
    ("Readers", "Writers"),
    ("Both",),
    ("Admins", "Readers"),
    ("Admins",),
    ("readers",),  # matched case-insensitively
    ("Unmapped",),
]


def population() -> list[tuple[UserRecord, tuple[str, ...]]]:
    """Users over every group set, active or not, with or without a password, and a few whose
    username cannot be made (a space) or is protected on one target."""
    users = []
    for i in range(160):
        resource: dict[str, Any] = {"userName": f"user-{i}@example.com", "active": i % 3 != 0}
        if i % 50 == 7:
            resource["userName"] = f"bad name {i}"
        if i == 11:
            resource["userName"] = "breakglass"
        digest = hashlib.sha256(f"secret-{i}".encode()).hexdigest().upper() if i % 4 else None
        record = UserRecord(
            id=f"id-{i}",
            version=1,
            created="2026-01-01T00:00:00.000Z",
            last_modified="2026-01-01T00:00:00.000Z",
            resource=resource,
            password_sha256=digest,
        )
        users.append((record, GROUP_SETS[i % len(GROUP_SETS)]))
    return users


def from_scratch(
    policy_text: str, target: str, record: UserRecord, groups: tuple[str, ...]
) -> DesiredAcl | None:
    """A freshly loaded policy per user, so no per-policy cache is warm."""
    try:
        return compile_user(load_policy_text(policy_text, env={}), target, record, list(groups))
    except InvalidUsername:
        return None


def reconciler_desired(
    policy: Policy, target: str, users: list[tuple[UserRecord, tuple[str, ...]]]
) -> dict[str, Any]:
    reconciler = Reconciler(SimpleNamespace(policy=policy))  # type: ignore[arg-type]
    wanted = reconciler._wanted(target, None, _DirectorySnapshot(users, set()), {})  # type: ignore[arg-type]
    return {entry.user_id: entry.compiled.desired for entry in wanted.values()}


def test_the_reconciler_wants_exactly_what_a_cold_compile_gives_on_a_mixed_population() -> None:
    users = population()
    for policy_text in (POLICY, OTHER_RULES):  # one after the other: module caches are warm for the second
        policy = load_policy_text(policy_text, env={})
        for target in ("plain", "prefixed"):
            expected = {
                record.id: desired
                for record, groups in users
                if (desired := from_scratch(policy_text, target, record, groups)) is not None
            }
            assert reconciler_desired(policy, target, users) == expected
            assert len(expected) > 80  # most users are wanted; the rest are unmapped or unnamable


def test_the_cached_compile_keeps_each_policy_and_target_apart() -> None:
    record = UserRecord(
        id="id-1",
        version=1,
        created="2026-01-01T00:00:00.000Z",
        last_modified="2026-01-01T00:00:00.000Z",
        resource={"userName": "bjensen@example.com"},
        password_sha256="AB" * 32,
    )
    first = load_policy_text(POLICY, env={})
    other = load_policy_text(OTHER_RULES, env={})

    plain = compile_user(first, "plain", record, ["Writers", "Readers"])
    prefixed = compile_user(first, "prefixed", record, ["Writers", "Readers", "Admins"])
    elsewhere = compile_user(other, "plain", record, ["Readers"])

    assert plain is not None and prefixed is not None and elsewhere is not None
    assert plain.setuser_rules() == [
        "reset",
        "on",
        "#" + "ab" * 32,
        "(resetchannels +@read +@connection ~cache:*)",
        "(resetchannels +@read +@write -flushall -flushdb +@connection ~sessions:* &events)",
    ]
    assert (prefixed.username, prefixed.roles, prefixed.password_sha256) == ("sso.bjensen", ("reader",), None)
    assert prefixed.setuser_rules() == ["reset", "on", "(resetchannels +@read +@connection ~cache:*)"]
    assert elsewhere.selectors == ("(resetchannels +@read ~other:*)",)


def test_the_garbage_collector_is_back_as_it_was_after_compiling_even_on_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(InvalidUsername), _cyclic_gc_paused():
        assert not gc.isenabled()
        raise InvalidUsername("bad")
    assert gc.isenabled()
    gc.disable()
    try:
        with _cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
