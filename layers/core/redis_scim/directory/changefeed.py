"""The change feed on SQS FIFO: one message per changed user, for the ACL applier.

Messages are grouped by user (MessageGroupId = user id, so one user's changes are applied in
order while different users' run in parallel) and deduplicated by `<user id>:<version>`, so a
re-driven change is delivered once within SQS's five-minute deduplication window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from redis_scim import errors
from redis_scim.directory import UserChange

SQS_BATCH_LIMIT = 10  # SendMessageBatch takes at most 10 entries


class SqsChangeFeed:
    """Publishes `UserChange`s to the FIFO queue `queue_url`; `client` is a boto3 SQS client."""

    def __init__(self, queue_url: str, client: Any) -> None:
        self._queue_url = queue_url
        self._client = client

    def publish(self, changes: Sequence[UserChange]) -> None:
        """Send every change, 10 per call. Raises `errors.ServiceUnavailable` after trying them all
        when any was refused (a partial batch failure included); the message names no secret."""
        refused: list[str] = []
        for offset in range(0, len(changes), SQS_BATCH_LIMIT):
            batch = changes[offset : offset + SQS_BATCH_LIMIT]
            entries = [
                {
                    "Id": str(index),
                    "MessageBody": json.dumps(change.to_json(), separators=(",", ":")),
                    "MessageGroupId": change.user_id,
                    "MessageDeduplicationId": change.deduplication_id,
                }
                for index, change in enumerate(batch)
            ]
            try:
                response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                # Keep going: the other batches may still get through (throttling is per call).
                reason = error.response["Error"].get("Code") if isinstance(error, ClientError) else None
                refused += [
                    f"{change.deduplication_id} ({reason or type(error).__name__})" for change in batch
                ]
                continue
            for failure in response.get("Failed", []):
                change = batch[int(failure["Id"])]
                refused.append(f"{change.deduplication_id} ({failure.get('Code', 'unknown')})")
        if refused:
            raise errors.ServiceUnavailable(
                f"{len(refused)} of {len(changes)} change messages refused: {', '.join(refused[:10])}"
            )
