"""How bearer tokens are used: when each was last used (in the Directory table) and how old it is
(metrics), recorded on every successful authentication without ever storing the token.

"Last used" costs at most one DynamoDB write per token per `interval` and per warm function, and
the write is conditional on the stored time being older than `interval`, so many warm functions
still write rarely. The item is `pk` `TOKEN#<token id>`, `sk` `#USAGE`, attribute `last_used`
(ISO 8601 UTC); it carries no `kind`, so it never appears in SCIM listings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from redis_scim.auth.tokens import TokenEntry
from redis_scim.observability import MetricName

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(minutes=5)
_USAGE_PREFIX = "TOKEN#"
_USAGE_SK = "#USAGE"
_BATCH_GET_KEYS = 100  # the BatchGetItem limit
_SECONDS_PER_DAY = 86_400


def _key(token_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{_USAGE_PREFIX}{token_id}"}, "sk": {"S": _USAGE_SK}}


def _iso(moment: datetime) -> str:
    # One fixed format, so that stored times compare correctly as strings in the condition.
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class DynamoTokenUsage:
    """Records each token's last use in the Directory table and reports its age as metrics.

    `metrics` is the powertools `Metrics` the function flushes at the end of each invocation
    (`observability.metrics`), so the age metrics add no log line of their own.
    """

    def __init__(
        self, table: str, client: Any, *, metrics: Any, interval: timedelta = DEFAULT_INTERVAL
    ) -> None:
        self._table = table
        self._client = client
        self._metrics = metrics
        self._interval = interval
        self._recorded: dict[str, datetime] = {}

    def record(self, entry: TokenEntry, now: datetime) -> None:
        self._report_age(entry, now)
        last = self._recorded.get(entry.id)
        if last is not None and now - last < self._interval:
            return
        self._recorded[entry.id] = now
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(entry.id),
                UpdateExpression="SET last_used = :now",
                ConditionExpression="attribute_not_exists(last_used) OR last_used < :due",
                ExpressionAttributeValues={
                    ":now": {"S": _iso(now)},
                    ":due": {"S": _iso(now - self._interval)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return  # another function recorded a use within the interval
            logger.warning("cannot record the use of token %s: %s", entry.id, exc)
        except BotoCoreError as exc:
            logger.warning("cannot record the use of token %s: %s", entry.id, exc)

    def last_used(self, token_ids: Iterable[str]) -> dict[str, datetime]:
        """token id -> its last recorded use; ids never used (or not within reach) are omitted."""
        keys = [_key(token_id) for token_id in dict.fromkeys(token_ids)]
        found: dict[str, datetime] = {}
        for offset in range(0, len(keys), _BATCH_GET_KEYS):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": keys[offset : offset + _BATCH_GET_KEYS],
                    "ProjectionExpression": "pk, last_used",
                }
            }
            while request:
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table, []):
                    token_id = item["pk"]["S"][len(_USAGE_PREFIX) :]
                    found[token_id] = datetime.fromisoformat(item["last_used"]["S"])
                request = answer.get("UnprocessedKeys") or {}
        return found

    def _report_age(self, entry: TokenEntry, now: datetime) -> None:
        age_days = (now - entry.created).total_seconds() / _SECONDS_PER_DAY
        self._metrics.add_metric(
            name=MetricName.TOKEN_AGE_DAYS, unit=MetricUnit.Count, value=round(age_days, 2)
        )
        if entry.expires is not None:
            days_left = (entry.expires - now).total_seconds() / _SECONDS_PER_DAY
            self._metrics.add_metric(
                name=MetricName.TOKEN_DAYS_TO_EXPIRY, unit=MetricUnit.Count, value=round(days_left, 2)
            )
