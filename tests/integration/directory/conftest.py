"""Directory fixtures: every contract test runs against each implementation of the port.

`MemoryDirectory` runs in process; `DynamoDirectory` runs on moto's in-process DynamoDB with the
table created from template.yaml, so its keys and indexes are the deployed ones.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import moto.dynamodb.models as moto_dynamodb
import pytest
from directory_subject import Subject
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.local.resources import create_resources, load_template


class _TableSnapshotsAreFree:
    """`copy` for moto's DynamoDB backend that hands tables back as they are.

    moto deep-copies every table on every TransactWriteItems to roll back on failure: O(table size)
    per transaction (0.8 s at 3,000 items), which makes groups of thousands untestable. We roll
    back the touched items ourselves instead (`_transact_with_item_rollback`).
    """

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


_transactions = threading.Lock()
_moto_transact = moto_dynamodb.DynamoDBBackend.transact_write_items


def _transact_with_item_rollback(self: Any, transact_items: list[dict[str, Any]]) -> None:
    # One transaction at a time, as DynamoDB isolates them (it refuses a conflicting one instead).
    with _transactions:
        saved = []
        for entry in transact_items:
            ((_, operation),) = entry.items()
            table = self.get_table(operation["TableName"])
            key = operation.get("Key") or operation["Item"]
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        try:
            _moto_transact(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(saved):
                if item is not None:
                    table.items[hash_key][range_key] = item
                else:
                    table.items[hash_key].pop(range_key, None)
            raise


@pytest.fixture(scope="module")
def aws() -> Iterator[boto3.Session]:
    """moto for this module, with transactions that cost what DynamoDB's do (one per item)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(moto_dynamodb, "copy", _TableSnapshotsAreFree)
    patch.setattr(moto_dynamodb.DynamoDBBackend, "transact_write_items", _transact_with_item_rollback)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    patch.undo()


@pytest.fixture(scope="module")
def dynamodb_client(aws: boto3.Session) -> Any:
    return aws.client("dynamodb")


@pytest.fixture
def directory_table(aws: boto3.Session, dynamodb_client: Any) -> Iterator[str]:
    """A fresh Directory table (keys and indexes from template.yaml) for one test."""
    template = load_template()
    template["Resources"] = {"DirectoryTable": template["Resources"]["DirectoryTable"]}
    table = create_resources(aws, stack_name=f"t{uuid.uuid4().hex[:12]}", template=template).tables[
        "DirectoryTable"
    ]
    yield table
    dynamodb_client.delete_table(TableName=table)


def _memory(request: pytest.FixtureRequest) -> Subject:
    feed = ListFeed()
    return Subject(MemoryDirectory(feed), feed)


def _dynamodb(request: pytest.FixtureRequest) -> Subject:
    table = request.getfixturevalue("directory_table")
    client = request.getfixturevalue("dynamodb_client")
    feed = ListFeed()
    return Subject(DynamoDirectory(table, client, feed), feed)


IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest], Subject]] = {
    "memory": _memory,
    "dynamodb": _dynamodb,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def subject(request: pytest.FixtureRequest) -> Subject:
    return IMPLEMENTATIONS[request.param](request)
