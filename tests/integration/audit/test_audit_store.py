"""The DynamoDB audit trail on moto: chains, concurrency, lookups by name and day, TTL, tampering."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from audit_entries import make_entry
from aws_lambda_powertools import Logger

from redis_scim.audit import Action, AuditRecord, AuditTrail, Outcome, UnreadableAuditRecord, verify_chain
from redis_scim.audit.store import to_item
from redis_scim.directory import Cause
from redis_scim.errors import SecretInAuditRecord, ServiceUnavailable
from redis_scim.local.resources import LocalResources

PASSWORD_HASH = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"


class Clock:
    """A settable clock: records land on the days the test chooses."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def client(aws: boto3.Session) -> Any:
    return aws.client("dynamodb")


@pytest.fixture
def table(resources: LocalResources) -> str:
    return resources.tables["AuditTable"]


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def trail(table: str, client: Any, log: io.StringIO) -> AuditTrail:
    # A service name of its own: powertools shares one handler (and stream) per service name.
    return AuditTrail(table, client, logger=Logger(service=f"audit-test-{uuid.uuid4().hex}", stream=log))


def test_append_and_history_form_a_verified_chain(trail: AuditTrail) -> None:
    written = [
        trail.append(make_entry(action=Action.CREATE)),
        trail.append(make_entry(action=Action.UPDATE, acl_before="on resetpass (+@read ~cache:*)",
                                acl_after="on resetpass (+@read ~cache:*) (+@write ~sessions:*)")),
        trail.append(make_entry(action=Action.DISABLE, outcome=Outcome.APPLIED, verified=True)),
    ]
    history = trail.history("user-1")
    assert history == written
    assert [r.seq for r in history] == [1, 2, 3]
    assert verify_chain(history).ok
    assert trail.last("user-1") == written[-1]
    assert trail.history("nobody") == [] and trail.last("nobody") is None


def test_each_user_has_its_own_chain(trail: AuditTrail) -> None:
    trail.append(make_entry("user-1"))
    trail.append(make_entry("user-2"))
    trail.append(make_entry("user-1"))
    assert [r.seq for r in trail.history("user-1")] == [1, 2]
    assert [r.seq for r in trail.history("user-2")] == [1]
    assert verify_chain(trail.history("user-2")).ok


def test_the_record_goes_to_the_structured_log(trail: AuditTrail, log: io.StringIO) -> None:
    record = trail.append(make_entry())
    line = json.loads(log.getvalue().strip().splitlines()[-1])
    assert line["message"] == "audit record" and line["level"] == "INFO"
    assert line["audit"] == record.to_json()


def test_the_writer_only_puts_and_queries(trail: AuditTrail, client: Any) -> None:
    """The Audit table's IAM grants PutItem and Query only: the trail must work with nothing else."""
    operations: list[str] = []
    client.meta.events.register("before-call.dynamodb", lambda model, **_: operations.append(model.name))
    trail.append(make_entry())
    trail.append(make_entry(user_name="renamed"))
    trail.history("user-1")
    trail.find_user_ids("renamed")
    trail.on_day(datetime.now(UTC).date())
    assert set(operations) == {"PutItem", "Query"}


def test_concurrent_appends_keep_one_linear_chain(
    trail: AuditTrail, atomic_conditional_puts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Widen the read-then-put window so the two writers really collide on the same next seq.
    read_head: Callable[[str], AuditRecord | None] = trail.last

    def slow_last(user_id: str) -> AuditRecord | None:
        head = read_head(user_id)
        time.sleep(0.005)
        return head

    monkeypatch.setattr(trail, "last", slow_last)
    conflicts: list[str] = []

    def count_conflicts(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            conflicts.append("conflict")

    trail.client.meta.events.register("after-call.dynamodb.PutItem", count_conflicts)
    failures: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(12):
                trail.append(make_entry(cause=Cause(f"{name}-{n}", "PATCH /Users/user-1")))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    history = trail.history("user-1")
    assert [r.seq for r in history] == list(range(1, 25))
    assert sorted(r.cause.request_id for r in history) == sorted(f"{w}-{n}" for w in "ab" for n in range(12))
    assert verify_chain(history).ok
    assert conflicts, "the writers never collided; the test did not exercise the retry"


def test_a_writer_that_keeps_losing_gives_up_without_forking(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail.append(make_entry())
    monkeypatch.setattr(trail, "last", lambda user_id: None)  # always believes seq 1 is free
    with pytest.raises(ServiceUnavailable):
        trail.append(make_entry(action=Action.UPDATE))
    monkeypatch.undo()
    assert [r.action for r in trail.history("user-1")] == [Action.CREATE]


class RepeatedPut:
    """A client whose first PutItem lands but answers ConditionalCheckFailed, as when botocore
    repeats a put whose response was lost: the repeat finds the item its first try wrote."""

    def __init__(self, client: Any) -> None:
        self.client, self.repeated = client, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_item(self, **request: Any) -> Any:
        response = self.client.put_item(**request)
        if self.repeated:
            return response
        self.repeated = True
        return self.client.put_item(**request)  # the repeat: fails its attribute_not_exists condition


def test_a_put_repeated_after_it_landed_is_not_appended_twice(table: str, client: Any) -> None:
    log = io.StringIO()
    trail = AuditTrail(table, RepeatedPut(client), logger=Logger(service=f"audit-test-{uuid.uuid4().hex}",
                                                                  stream=log))
    record = trail.append(make_entry())
    assert trail.history("user-1") == [record]
    assert len(log.getvalue().strip().splitlines()) == 1
    assert trail.append(make_entry(action=Action.UPDATE)).seq == 2


def test_find_user_ids_by_any_name_the_user_had(trail: AuditTrail) -> None:
    trail.append(make_entry("user-1", user_name="Alice@Example.com"))
    trail.append(make_entry("user-1", user_name="alice.smith@example.com", action=Action.UPDATE))
    trail.append(make_entry("user-1", user_name="alice.smith@example.com", action=Action.DELETE))
    assert trail.find_user_ids("alice@example.com") == ["user-1"]
    assert trail.find_user_ids("ALICE.SMITH@example.com") == ["user-1"]
    # After SCIM deleted user-1, a new user takes the old name: both are found, oldest first.
    trail.append(make_entry("user-2", user_name="alice@example.com"))
    assert trail.find_user_ids("alice@example.com") == ["user-1", "user-2"]
    assert trail.find_user_ids("bob@example.com") == []


def test_records_carry_the_ttl_of_the_retention_setting(table: str, client: Any) -> None:
    trail = AuditTrail(table, client, retention_days=30, logger=Logger(stream=io.StringIO()))
    record = trail.append(make_entry())
    at = datetime.strptime(record.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    item = client.get_item(TableName=table, Key={"pk": {"S": "USER#user-1"}, "sk": {"S": "SEQ#0000000001"}})
    assert int(item["Item"]["expires_at"]["N"]) == int((at + timedelta(days=30)).timestamp())
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_retention_must_be_positive(table: str, client: Any) -> None:
    with pytest.raises(ValueError):
        AuditTrail(table, client, retention_days=0)


def test_on_day_lists_a_days_records_in_time_order(table: str, client: Any) -> None:
    clock = Clock(datetime(2026, 10, 31, 23, 59, 58, tzinfo=UTC))
    trail = AuditTrail(table, client, clock=clock, logger=Logger(stream=io.StringIO()))
    trail.append(make_entry("user-1"))  # 23:59:59 on 31 October
    trail.append(make_entry("user-2"))  # 00:00:00 on 1 November
    trail.append(make_entry("user-1", action=Action.DELETE))
    clock.now = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    trail.append(make_entry("user-3"))
    november_first = trail.on_day("2026-11-01")
    expected = [("user-2", Action.CREATE), ("user-1", Action.DELETE)]
    assert [(r.user_id, r.action) for r in november_first] == expected
    assert [r.at for r in november_first] == sorted(r.at for r in november_first)
    assert [r.user_id for r in trail.on_day(datetime(2026, 10, 31, tzinfo=UTC).date())] == ["user-1"]


def test_a_record_changed_in_the_table_fails_verification(trail: AuditTrail, table: str, client: Any) -> None:
    for action in (Action.CREATE, Action.UPDATE, Action.DELETE):
        trail.append(make_entry(action=action))
    forged = trail.history("user-1")[1]
    item = to_item(forged)
    item["acl_after"] = {"S": "on nopass (+@all ~*)"}
    client.put_item(TableName=table, Item=item)
    check = verify_chain(trail.history("user-1"))
    assert (check.ok, check.broken_at) == (False, 2)


def test_a_record_deleted_from_the_table_fails_verification(
    trail: AuditTrail, table: str, client: Any
) -> None:
    for action in (Action.CREATE, Action.UPDATE, Action.DISABLE, Action.DELETE):
        trail.append(make_entry(action=action))
    client.delete_item(TableName=table, Key={"pk": {"S": "USER#user-1"}, "sk": {"S": "SEQ#0000000002"}})
    check = verify_chain(trail.history("user-1"))
    assert (check.ok, check.broken_at) == (False, 2)


def test_an_unreadable_item_is_reported_with_its_position(trail: AuditTrail, table: str, client: Any) -> None:
    trail.append(make_entry())
    client.put_item(TableName=table, Item={"pk": {"S": "USER#user-1"}, "sk": {"S": "SEQ#0000000002"},
                                           "note": {"S": "not an audit record"}})
    with pytest.raises(UnreadableAuditRecord) as raised:
        trail.history("user-1")
    assert raised.value.position == 2


def test_a_secret_is_refused_and_nothing_is_written(trail: AuditTrail, log: io.StringIO) -> None:
    with pytest.raises(SecretInAuditRecord):
        trail.append(make_entry(acl_after=f"on #{PASSWORD_HASH} (+@read ~cache:*)"))
    with pytest.raises(SecretInAuditRecord):
        trail.append(make_entry(acl_after="on >hunter2 (+@read ~cache:*)"))
    assert trail.history("user-1") == []
    assert PASSWORD_HASH not in log.getvalue() and "hunter2" not in log.getvalue()
