"""The audit trail in DynamoDB: appends sealed records to a user's chain and reads them back.

Append-only by design and by IAM: it only ever calls PutItem (conditional on the key being new) and
Query, so the functions' role needs no UpdateItem/DeleteItem on the Audit table. Table layout:
pk `USER#<scim id>`, sk `SEQ#<seq, 10 digits>`; GSI `ByDay` (`day`, `at`); GSI `ByUserName`
(`user_name_key`, `at`, keys only); TTL on `expires_at`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from redis_scim.audit.record import (
    DEFAULT_RETENTION_DAYS,
    AuditEntry,
    AuditRecord,
    seal,
    user_name_key,
)
from redis_scim.errors import RedisScimError, ServiceUnavailable
from redis_scim.observability import logger as default_logger

BY_DAY_INDEX = "ByDay"
BY_USER_NAME_INDEX = "ByUserName"
_USER_PREFIX = "USER#"
_SEQ_PREFIX = "SEQ#"
# Two writers racing on one user both retry; more than a handful of losses in a row means something
# else is wrong (e.g. a hot loop re-applying one user), and the message is better retried by SQS.
_MAX_APPEND_ATTEMPTS = 8

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class UnreadableAuditRecord(RedisScimError):
    """A stored item is not a well-formed audit record (tampered with, or written by something else)."""

    def __init__(self, detail: str, *, position: int) -> None:
        super().__init__(detail)
        self.position = position


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; every number in a record is an integer."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_item(record: AuditRecord) -> dict[str, Any]:
    """The DynamoDB item of a record: its fields plus the key and index attributes derived from them."""
    attributes = {
        **record.to_json(),
        "pk": _USER_PREFIX + record.user_id,
        "sk": f"{_SEQ_PREFIX}{record.seq:010d}",
        "day": record.day,
        "user_name_key": user_name_key(record.user_name),
    }
    return {name: _serializer.serialize(value) for name, value in attributes.items()}


def from_item(item: dict[str, Any], *, position: int = 1) -> AuditRecord:
    data = {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}
    try:
        return AuditRecord.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        key = item.get("sk", {}).get("S", "?")
        raise UnreadableAuditRecord(f"{key}: {error!r}", position=position) from error


class AuditTrail:
    """Writer and reader of the Audit table. `client` is a boto3 DynamoDB client."""

    def __init__(
        self,
        table_name: str,
        client: Any,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        logger: Logger | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if retention_days < 1:
            raise ValueError("audit retention must be at least one day")
        self.table_name = table_name
        self.client = client
        self.retention_days = retention_days
        self.logger = logger or default_logger
        self.clock = clock

    def append(self, entry: AuditEntry) -> AuditRecord:
        """Seal `entry` onto its user's chain, write it, and log it. Returns the stored record.

        Two writers of one user cannot fork the chain: the put is conditional on the next `seq`
        being free, and the loser re-reads the head and retries. Raises `SecretInAuditRecord`
        for a record that would carry a secret, `ServiceUnavailable` when retries run out.
        """
        previous = self.last(entry.user_id)
        for attempt in range(_MAX_APPEND_ATTEMPTS):
            record = seal(entry, previous=previous, at=self.clock(), retention_days=self.retention_days)
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=to_item(record),
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                previous = self.last(entry.user_id)
                if previous is None or previous.hash != record.hash:
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                # Our own put landed on an earlier try that botocore repeated (e.g. after a
                # timeout): the record is stored, and appending it again would duplicate it.
            self.logger.info("audit record", extra={"audit": record.to_json()})
            return record
        raise ServiceUnavailable(f"audit chain of user {entry.user_id} is contended; gave up appending")

    def last(self, user_id: str) -> AuditRecord | None:
        """The head of the user's chain (strongly consistent), or None before the first record."""
        response = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _USER_PREFIX + user_id}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items", [])
        return from_item(items[0]) if items else None

    def history(self, user_id: str) -> list[AuditRecord]:
        """Every stored record of the user, oldest first (in `seq` order)."""
        items = self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _USER_PREFIX + user_id}},
            ConsistentRead=True,
        )
        return [from_item(item, position=position) for position, item in enumerate(items, start=1)]

    def find_user_ids(self, user_name: str) -> list[str]:
        """SCIM ids of every user that ever had this userName (case-insensitive), first seen first.

        Works after the user was renamed or deleted in SCIM: the trail keeps the names it saw.
        """
        items = self._query(
            IndexName=BY_USER_NAME_INDEX,
            KeyConditionExpression="user_name_key = :name",
            ExpressionAttributeValues={":name": {"S": user_name_key(user_name)}},
        )
        ids: dict[str, None] = {}
        for item in items:
            ids.setdefault(item["pk"]["S"].removeprefix(_USER_PREFIX), None)
        return list(ids)

    def on_day(self, day: date | str) -> list[AuditRecord]:
        """Every record written on a UTC day, in time order: "what happened on 1 November"."""
        items = self._query(
            IndexName=BY_DAY_INDEX,
            KeyConditionExpression="#day = :day",
            ExpressionAttributeNames={"#day": "day"},
            ExpressionAttributeValues={":day": {"S": day if isinstance(day, str) else day.isoformat()}},
        )
        return [from_item(item, position=position) for position, item in enumerate(items, start=1)]

    def _query(self, **parameters: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(TableName=self.table_name, **parameters):
            yield from page.get("Items", [])
