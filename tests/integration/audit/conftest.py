"""Fixtures for the audit trail on moto: the template's Audit table, atomic conditional puts."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from redis_scim.local.resources import LocalResources, create_resources


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


@pytest.fixture
def resources(aws: boto3.Session) -> LocalResources:
    return create_resources(aws)


@pytest.fixture
def atomic_conditional_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's PutItem atomic, as DynamoDB's is.

    moto checks a ConditionExpression and then writes, without a lock, so two threads can both pass
    `attribute_not_exists(pk)` for one key; DynamoDB never lets that happen. Without this, a test of
    concurrent appends would test moto's race instead of our retry.
    """
    lock = threading.Lock()
    original = DynamoDBBackend.put_item

    @functools.wraps(original)
    def put_item(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "put_item", put_item)
