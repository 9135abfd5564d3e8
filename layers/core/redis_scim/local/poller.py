"""The local stack's SQS event source: feeds change-queue batches to the AclApplierFunction handler.

It behaves like Lambda's SQS event source mapping with ReportBatchItemFailures: it receives a
batch, builds the real SQS event (messageId, receiptHandle, body, attributes with
ApproximateReceiveCount, MessageGroupId, MessageDeduplicationId…), invokes the *same* handler,
deletes the messages that succeeded and leaves the failed ones to become visible again. Locally
the visibility timeout is short (2 s) so retries come quickly; after the queue's maxReceiveCount
(template.yaml) moto's redrive policy moves a message to the dead-letter queue.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis_scim.local.lambda_runtime import InvocationContext, load_function

if TYPE_CHECKING:
    from redis_scim.local.stack import LocalStack

LambdaHandler = Callable[[dict[str, Any], Any], Any]
APPLIER_FUNCTION = "AclApplierFunction"
APPLIER_TIMEOUT_SECONDS = 60.0  # template.yaml's Timeout for AclApplierFunction

_logger = logging.getLogger(__name__)


class SqsPoller:
    """Polls one queue and invokes `handler` with SQS events, in a background thread.

    Short polls (moto's long poll spins while a FIFO group is blocked) every `idle_seconds` when
    the queue is empty, and back to back while messages keep coming, so a change reaches the
    handler within a few tens of milliseconds.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: LambdaHandler,
        *,
        function_name: str = APPLIER_FUNCTION,
        timeout_seconds: float = APPLIER_TIMEOUT_SECONDS,
        batch_size: int = 10,
        visibility_timeout: int = 2,
        idle_seconds: float = 0.05,
        region: str = "us-east-1",
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.function_name = function_name
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.idle_seconds = idle_seconds
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.region = region
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"sqs-poller-{self.function_name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_seconds)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                handled = self.poll_once()
            except Exception:
                # The event source mapping keeps polling whatever happens; so does this one.
                _logger.exception("SQS poll failed")
                handled = 0
            if handled == 0:
                self._stopping.wait(self.idle_seconds)

    def poll_once(self) -> int:
        """Receive one batch, invoke the handler, delete what succeeded. Returns the batch size."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            VisibilityTimeout=self.visibility_timeout,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self.event_record(message) for message in messages]}
        context = InvocationContext(function_name=self.function_name, timeout_seconds=self.timeout_seconds)
        try:
            response = self.handler(event, context)
        except Exception:
            # A raised invocation error fails the whole batch: every message comes back after the
            # visibility timeout, exactly as with the real event source mapping.
            _logger.exception("%s failed a whole batch of %d", self.function_name, len(messages))
            return len(messages)
        failed = {failure["itemIdentifier"] for failure in (response or {}).get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    def event_record(self, message: dict[str, Any]) -> dict[str, Any]:
        """The Lambda SQS event record of a received message."""
        body = message["Body"]
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": body,
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: {
                    "stringValue": value.get("StringValue"),
                    "binaryValue": value.get("BinaryValue"),
                    "stringListValues": value.get("StringListValues", []),
                    "binaryListValues": value.get("BinaryListValues", []),
                    "dataType": value["DataType"],
                }
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody")
            or hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }


def applier_poller(stack: LocalStack) -> SqsPoller:
    """The local stack's service factory: the change queue feeding the AclApplierFunction handler.

    The stack has already set the functions' environment (tables, queue, POLICY, REDIS_URL), so the
    handler module's cold start wires itself exactly as on Lambda.
    """
    assert stack.resources is not None, "the stack creates its resources before its services"
    handler = load_function("acl_applier").lambda_handler
    return SqsPoller(stack.session.client("sqs"), stack.resources.queues["ChangeQueue"], handler)
