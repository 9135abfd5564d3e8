"""DynamoDirectory beyond the contract: cost per operation, big groups, concurrency, failures, secrets.

Costs are counted as DynamoDB API calls with botocore's event system; moto's timings say nothing
about AWS's, so nothing here asserts a duration.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from directory_subject import CAUSE

from redis_scim import errors
from redis_scim.directory import GroupChange, Member, UserChange
from redis_scim.directory.dynamodb import CHUNK_USERS, DynamoDirectory
from redis_scim.directory.memory import ListFeed
from redis_scim.directory.rules import new_id, utc_now


class _BrokenFeed:
    def __init__(self) -> None:
        self.calls = 0

    def publish(self, changes: Any) -> None:
        self.calls += 1
        raise ConnectionError("queue unreachable")


class _Metrics:
    def __init__(self) -> None:
        self.values: Counter[str] = Counter()

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.values[name] += int(value)


@pytest.fixture
def feed() -> ListFeed:
    return ListFeed()


@pytest.fixture
def directory(directory_table: str, dynamodb_client: Any, feed: ListFeed) -> DynamoDirectory:
    return DynamoDirectory(directory_table, dynamodb_client, feed)


@contextmanager
def counting(client: Any) -> Iterator[Counter[str]]:
    """Counts DynamoDB API calls by operation name while the block runs."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.dynamodb.*", count)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call.dynamodb.*", count)


def _users(directory: DynamoDirectory, count: int, prefix: str) -> list[str]:
    return [
        directory.create_user({"userName": f"{prefix}{n:05d}"}, password_sha256=None, cause=CAUSE).id
        for n in range(count)
    ]


def _seed_users(directory: DynamoDirectory, client: Any, count: int, prefix: str) -> list[str]:
    """Users written straight into the table, 25 items per BatchWriteItem.

    The items are exactly those `create_user` writes (`_new_user_items`); only the conditional
    transaction is skipped, because moto spends ~10 ms on each conditional update and creating
    thousands of users through the API would only re-test `create_user`.
    """
    user_ids, puts = [], []
    for n in range(count):
        user_id = new_id()
        user_ids.append(user_id)
        items = directory._new_user_items(user_id, {"userName": f"{prefix}{n:05d}"}, None, utc_now())
        puts += [{"PutRequest": {"Item": item["Put"]["Item"]}} for item in items]
    for offset in range(0, len(puts), 25):
        response = client.batch_write_item(RequestItems={directory._table: puts[offset : offset + 25]})
        assert not response.get("UnprocessedItems")
    return user_ids


def _raw_items(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**params)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --- cost ------------------------------------------------------------------------------------------


def test_calls_per_operation(directory: DynamoDirectory, dynamodb_client: Any) -> None:
    with counting(dynamodb_client) as post:
        user = directory.create_user(
            {"userName": "alice", "externalId": "a"}, password_sha256=None, cause=CAUSE
        )
    with counting(dynamodb_client) as replace:
        directory.replace_user(
            user.id,
            {"userName": "alice", "externalId": "a", "title": "x"},
            expected_version=1,
            password_sha256=None,
            keep_password=True,
            cause=CAUSE,
        )
    read = directory.get_user(user.id)
    with counting(dynamodb_client) as replace_read:
        directory.replace_user(
            user.id,
            {"userName": "alice", "externalId": "a", "title": "y"},
            expected_version=read.version,
            password_sha256=None,
            keep_password=True,
            cause=CAUSE,
            current=read,
        )
    with counting(dynamodb_client) as get:
        directory.get_user(user.id)
    with counting(dynamodb_client) as lookup:
        directory.search_users(lookup=("userName", "ALICE"), predicate=None, start_index=1, count=1)
    assert post == {"TransactWriteItems": 1}
    assert replace == {"GetItem": 1, "UpdateItem": 1}  # no guard moved: no transaction needed
    assert replace_read == {"UpdateItem": 1}  # the caller's record stands for the read
    assert get == {"GetItem": 1}
    assert lookup == {"GetItem": 2}


def _member_patch_cost(
    directory: DynamoDirectory, client: Any, group_id: str, added: list[str]
) -> Counter[str]:
    with counting(client) as calls:
        directory.change_group(
            group_id, GroupChange(add_members=[Member(u) for u in added]), expected_version=None, cause=CAUSE
        )
    return calls


def _big_group(directory: DynamoDirectory, dynamodb_client: Any, feed: ListFeed, size: int) -> None:
    """Create a group of `size` members, then check that member PATCHes cost O(k), not O(size)."""
    members = _seed_users(directory, dynamodb_client, size, "m")
    published = len(feed.changes)
    group = directory.create_group(
        {"displayName": "everyone"}, members=[Member(u) for u in members], cause=CAUSE
    )
    assert group.version == -(-size // CHUNK_USERS)  # one bump per chunk
    assert len({c.user_id for c in feed.changes[published:]}) == size
    state = directory.user_state(members[-1])
    assert state is not None and [ref.id for ref in state.groups] == [group.id]

    newcomers = _users(directory, 20, "new")
    small = directory.create_group(
        {"displayName": "small"}, members=[Member(u) for u in _users(directory, 10, "s")], cause=CAUSE
    ).id
    to_small = _member_patch_cost(directory, dynamodb_client, small, newcomers[:10])
    to_big = _member_patch_cost(directory, dynamodb_client, group.id, newcomers[10:])
    assert to_small == to_big == {"BatchGetItem": 1, "TransactWriteItems": 1, "GetItem": 1}
    with counting(dynamodb_client) as removal:
        directory.change_group(
            group.id, GroupChange(remove_members=newcomers[10:13]), expected_version=None, cause=CAUSE
        )
    assert removal == {"BatchGetItem": 1, "TransactWriteItems": 1, "GetItem": 1}
    assert len(directory.group_members(group.id)) == size + 7


def test_a_group_of_2000_members(directory: DynamoDirectory, dynamodb_client: Any, feed: ListFeed) -> None:
    _big_group(directory, dynamodb_client, feed, 2000)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # moto spends ~5 ms per conditional update: about 1,100 transactions of 90
@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="set RUN_SLOW=1")
def test_a_group_of_50000_members(directory: DynamoDirectory, dynamodb_client: Any, feed: ListFeed) -> None:
    _big_group(directory, dynamodb_client, feed, 50_000)


def test_membership_changes_spanning_chunks(directory: DynamoDirectory, feed: ListFeed) -> None:
    old, new = _users(directory, 120, "old"), _users(directory, 80, "new")
    group = directory.create_group({"displayName": "g"}, members=[Member(u) for u in old], cause=CAUSE)
    assert group.version == 3

    published = len(feed.changes)
    replaced = directory.change_group(
        group.id,
        GroupChange(replace_members=[Member(u) for u in old[:20] + new]),
        expected_version=group.version,
        cause=CAUSE,
    )
    assert {m.value for m in directory.group_members(group.id)} == set(old[:20] + new)
    assert {c.user_id for c in feed.changes[published:]} == set(old[20:] + new)

    published = len(feed.changes)
    directory.change_group(
        group.id, GroupChange(resource={"displayName": "all"}), expected_version=replaced.version, cause=CAUSE
    )
    assert {c.user_id for c in feed.changes[published:]} == set(
        old[:20] + new
    )  # a rename touches every member

    published = len(feed.changes)
    directory.delete_group(group.id, expected_version=None, cause=CAUSE)
    assert {c.user_id for c in feed.changes[published:]} == set(old[:20] + new)
    assert all(directory.user_groups(u) == [] for u in new)
    with pytest.raises(errors.NotFound):
        directory.get_group(group.id)
    assert (
        directory.search_groups(lookup=("displayName", "all"), predicate=None, start_index=1, count=1).total
        == 0
    )


def test_a_user_in_more_groups_than_one_transaction_holds_is_deleted(
    directory: DynamoDirectory, feed: ListFeed
) -> None:
    user = _users(directory, 1, "u")[0]
    groups = [
        directory.create_group({"displayName": f"g{n}"}, members=[Member(user)], cause=CAUSE).id
        for n in range(CHUNK_USERS + 10)
    ]
    directory.delete_user(user, expected_version=None, cause=CAUSE)
    assert all(directory.group_members(g) == [] for g in groups)
    state = directory.user_state(user)
    assert state is not None and state.deleted
    assert feed.changes[-1] == UserChange(user, state.version, CAUSE)


# --- concurrency -----------------------------------------------------------------------------------


@pytest.mark.parametrize("per_patch", [1, 20])
def test_concurrent_member_patches_lose_nothing(directory: DynamoDirectory, per_patch: int) -> None:
    """Two clients each add 20 different members, in PATCHes of `per_patch` members, at once."""
    group = directory.create_group({"displayName": "team"}, members=[], cause=CAUSE)
    batches = [_users(directory, 20, "a"), _users(directory, 20, "b")]
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def patch(user_ids: list[str]) -> None:
        start.wait()
        try:
            for offset in range(0, len(user_ids), per_patch):
                added = [Member(u) for u in user_ids[offset : offset + per_patch]]
                directory.change_group(
                    group.id, GroupChange(add_members=added), expected_version=None, cause=CAUSE
                )
        except BaseException as error:  # reported below: a thread's exception is otherwise lost
            failures.append(error)

    threads = [threading.Thread(target=patch, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert {m.value for m in directory.group_members(group.id)} == set(batches[0] + batches[1])
    assert directory.get_group(group.id).version == 1 + 2 * (20 // per_patch)
    assert all([ref.id for ref in directory.user_groups(u)] == [group.id] for u in batches[0] + batches[1])


def test_a_transaction_conflict_is_retried(directory: DynamoDirectory, dynamodb_client: Any) -> None:
    user = _users(directory, 1, "u")[0]
    group = directory.create_group({"displayName": "g"}, members=[], cause=CAUSE)
    conflicts = iter([True, True])

    def conflict_twice(model: Any, **_: Any) -> None:
        if next(conflicts, False):
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [
                        {"Code": "TransactionConflict"},
                        {"Code": "None"},
                        {"Code": "None"},
                    ],
                },
                "TransactWriteItems",
            )

    dynamodb_client.meta.events.register("before-call.dynamodb.TransactWriteItems", conflict_twice)
    try:
        changed = directory.change_group(
            group.id, GroupChange(add_members=[Member(user)]), expected_version=None, cause=CAUSE
        )
    finally:
        dynamodb_client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", conflict_twice)
    assert changed.version == 2 and directory.group_members(group.id) == [Member(user)]


def test_throttling_is_service_unavailable_and_writes_nothing(
    directory: DynamoDirectory, dynamodb_client: Any, feed: ListFeed
) -> None:
    def throttle(model: Any, **_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, model.name
        )

    dynamodb_client.meta.events.register("before-call.dynamodb.TransactWriteItems", throttle)
    try:
        with pytest.raises(errors.ServiceUnavailable):
            directory.create_user({"userName": "alice"}, password_sha256=None, cause=CAUSE)
    finally:
        dynamodb_client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", throttle)
    assert directory.search_users(lookup=None, predicate=None, start_index=1, count=0).total == 0
    assert feed.changes == []


def test_an_expected_version_is_checked_inside_the_write(
    directory: DynamoDirectory, dynamodb_client: Any
) -> None:
    """A writer that slips in between our read and our write makes the write fail, not overwrite."""
    user = directory.create_user({"userName": "alice"}, password_sha256=None, cause=CAUSE)
    sneaked = False

    def sneak_in(model: Any, **_: Any) -> None:
        nonlocal sneaked
        if not sneaked:
            sneaked = True
            dynamodb_client.update_item(
                TableName=directory._table,
                Key={"pk": {"S": f"USER#{user.id}"}, "sk": {"S": "#USER"}},
                UpdateExpression="SET version = :v",
                ExpressionAttributeValues={":v": {"N": "5"}},
            )

    dynamodb_client.meta.events.register("before-call.dynamodb.UpdateItem", sneak_in)
    try:
        with pytest.raises(errors.VersionConflict):
            directory.replace_user(
                user.id,
                {"userName": "alice", "title": "t"},
                expected_version=1,
                password_sha256=None,
                keep_password=True,
                cause=CAUSE,
            )
    finally:
        dynamodb_client.meta.events.unregister("before-call.dynamodb.UpdateItem", sneak_in)
    assert "title" not in directory.get_user(user.id).resource


# --- change feed failures and secrets --------------------------------------------------------------


def test_a_failing_feed_never_fails_the_write(
    directory_table: str, dynamodb_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    feed, metrics = _BrokenFeed(), _Metrics()
    directory = DynamoDirectory(directory_table, dynamodb_client, feed, metrics=metrics)
    with caplog.at_level(logging.WARNING):
        user = directory.create_user({"userName": "alice"}, password_sha256="ab" * 32, cause=CAUSE)
        group = directory.create_group({"displayName": "g"}, members=[Member(user.id)], cause=CAUSE)
    assert feed.calls == 2
    assert directory.get_group(group.id).version == 1
    pending = {p.user_id: p.version for p in directory.pending_users()}
    assert pending == {user.id: 2}  # the marker stays for the reconciler
    assert metrics.values["ChangeFeedPublishFailures"] == 2
    assert "publish failed" in caplog.text and "ab" * 32 not in caplog.text


def test_only_the_password_hash_is_stored(
    directory: DynamoDirectory, dynamodb_client: Any, feed: ListFeed
) -> None:
    directory.create_user(
        {"userName": "alice", "password": "hunter2"}, password_sha256="cd" * 32, cause=CAUSE
    )
    raw = json.dumps(_raw_items(dynamodb_client, directory._table))
    assert "hunter2" not in raw and raw.count("cd" * 32) == 1
    assert "hunter2" not in json.dumps([change.to_json() for change in feed.changes])


def test_pending_users_are_merged_across_shards_in_time_order(directory: DynamoDirectory) -> None:
    ids = _users(directory, 30, "p")
    pending = list(directory.pending_users())
    assert {p.user_id for p in pending} == set(ids)
    assert [p.pending_at for p in pending] == sorted(p.pending_at for p in pending)
    assert directory.clear_pending(ids[0], version=1)
    assert ids[0] not in {p.user_id for p in directory.pending_users()}


def test_a_member_who_joins_during_a_group_delete_is_removed_too(
    directory: DynamoDirectory, dynamodb_client: Any, feed: ListFeed
) -> None:
    early, late = _users(directory, 2, "u")
    group = directory.create_group({"displayName": "g"}, members=[Member(early)], cause=CAUSE)
    transactions = 0

    def join_before_the_final_delete(model: Any, **_: Any) -> None:
        nonlocal transactions
        transactions += 1
        if transactions == 2:  # the first removed `early`; this one would delete the group item
            directory.change_group(
                group.id, GroupChange(add_members=[Member(late)]), expected_version=None, cause=CAUSE
            )

    dynamodb_client.meta.events.register(
        "before-call.dynamodb.TransactWriteItems", join_before_the_final_delete
    )
    try:
        directory.delete_group(group.id, expected_version=None, cause=CAUSE)
    finally:
        dynamodb_client.meta.events.unregister(
            "before-call.dynamodb.TransactWriteItems", join_before_the_final_delete
        )
    with pytest.raises(errors.NotFound):
        directory.get_group(group.id)
    assert directory.user_groups(late) == [] and directory.user_groups(early) == []
    left = [c for c in feed.changes if c.user_id == late]
    assert [c.version for c in left] == [1, 2, 3]  # created, joined, then left with the group


def test_a_resource_too_large_for_an_item_is_refused_whole(
    directory: DynamoDirectory, feed: ListFeed
) -> None:
    with pytest.raises(errors.PayloadTooLarge):
        directory.create_user({"userName": "big", "title": "x" * 450_000}, password_sha256=None, cause=CAUSE)
    assert (
        directory.search_users(lookup=("userName", "big"), predicate=None, start_index=1, count=0).total == 0
    )
    assert feed.changes == []
