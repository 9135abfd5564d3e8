"""The ownership ledger contract, on the in-memory ledger and on DynamoDB (moto, table from template.yaml)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from redis_scim.directory.ledger import DynamoLedger, Ledger, MemoryLedger
from redis_scim.local.resources import create_resources


@pytest.fixture(params=["memory", "dynamodb"])
def ledger(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    # moto checks a transaction's conditions and then writes without a lock; DynamoDB's
    # transactions are atomic. Serialise them so the concurrency test exercises our retry, not moto.
    lock = threading.Lock()
    original = DynamoDBBackend.transact_write_items

    @functools.wraps(original)
    def transact_write_items(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        resources = create_resources(session)
        yield DynamoLedger(resources.tables["DirectoryTable"], session.client("dynamodb"))


def test_a_free_name_is_claimed_and_held(ledger: Ledger) -> None:
    entry = ledger.claim("t", "alice", "u1")
    assert (entry.user_id, entry.released) == ("u1", False)
    assert ledger.held("u1") == {"t": frozenset({"alice"})}
    assert ledger.owner("t", "alice") == entry


def test_claiming_again_is_idempotent(ledger: Ledger) -> None:
    first = ledger.claim("t", "alice", "u1")
    assert ledger.claim("t", "alice", "u1") == first


def test_a_live_claim_of_another_user_is_returned_and_nothing_changes(ledger: Ledger) -> None:
    ledger.claim("t", "alice", "u1")
    entry = ledger.claim("t", "alice", "u2")
    assert entry.user_id == "u1" and not entry.released
    assert ledger.held("u2") == {}
    assert ledger.held("u1") == {"t": frozenset({"alice"})}


def test_the_same_name_on_another_target_is_independent(ledger: Ledger) -> None:
    ledger.claim("t1", "alice", "u1")
    assert ledger.claim("t2", "alice", "u2").user_id == "u2"
    assert ledger.held("u1") == {"t1": frozenset({"alice"})}
    assert ledger.held("u2") == {"t2": frozenset({"alice"})}


def test_release_keeps_the_entry_with_its_last_owner(ledger: Ledger) -> None:
    ledger.claim("t", "alice", "u1")
    assert ledger.release("t", "alice", "u1") is True
    entry = ledger.owner("t", "alice")
    assert entry is not None and entry.user_id == "u1" and entry.released and entry.released_at
    assert ledger.held("u1") == {}
    assert ledger.release("t", "alice", "u1") is False


def test_only_the_owner_can_release(ledger: Ledger) -> None:
    ledger.claim("t", "alice", "u1")
    assert ledger.release("t", "alice", "u2") is False
    entry = ledger.owner("t", "alice")
    assert entry is not None and not entry.released


def test_a_released_name_can_be_claimed_by_another_user(ledger: Ledger) -> None:
    ledger.claim("t", "alice", "u1")
    ledger.release("t", "alice", "u1")
    entry = ledger.claim("t", "alice", "u2")
    assert (entry.user_id, entry.released) == ("u2", False)
    assert ledger.held("u2") == {"t": frozenset({"alice"})}
    assert ledger.held("u1") == {}


def test_replacing_takes_over_a_claim_of_a_vanished_owner(ledger: Ledger) -> None:
    ledger.claim("t", "alice", "gone")
    assert ledger.claim("t", "alice", "u2", replacing="someone-else").user_id == "gone"
    assert ledger.claim("t", "alice", "u2", replacing="gone").user_id == "u2"
    assert ledger.held("gone") == {}
    assert ledger.held("u2") == {"t": frozenset({"alice"})}


def test_a_user_holds_old_and_new_names_until_the_old_one_is_released(ledger: Ledger) -> None:
    ledger.claim("t", "alice", "u1")
    ledger.claim("t", "alice.smith", "u1")
    assert ledger.held("u1") == {"t": frozenset({"alice", "alice.smith"})}
    ledger.release("t", "alice", "u1")
    assert ledger.held("u1") == {"t": frozenset({"alice.smith"})}


def test_entries_list_live_and_released_names_of_one_target(ledger: Ledger) -> None:
    ledger.claim("t", "bob", "u2")
    ledger.claim("t", "alice", "u1")
    ledger.release("t", "alice", "u1")
    ledger.claim("other", "carol", "u3")
    entries = list(ledger.entries("t"))
    assert [(e.username, e.user_id, e.released) for e in entries] == [
        ("alice", "u1", True),
        ("bob", "u2", False),
    ]


def test_concurrent_claims_of_one_name_have_one_winner(ledger: Ledger) -> None:
    results: dict[str, str] = {}
    start = threading.Barrier(8)

    def claim(user_id: str) -> None:
        start.wait()
        results[user_id] = ledger.claim("t", "contended", user_id).user_id

    threads = [threading.Thread(target=claim, args=(f"u{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = set(results.values())
    assert len(winners) == 1
    winner = winners.pop()
    assert sum(ledger.held(f"u{i}") != {} for i in range(8)) == 1
    assert ledger.held(winner) == {"t": frozenset({"contended"})}
