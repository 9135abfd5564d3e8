"""The ACL applier's record logic: one SQS change message in, the user converged on every target.

The message only names the user (`{"user_id", "version", "cause"}`); what to apply is read from the
Directory at processing time (level-triggered). Kept free of Lambda: the handler in
functions/acl_applier wires it to powertools batch processing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response

from redis_scim.directory import Actor, Cause, UserChange
from redis_scim.errors import InvalidSyntax, ServiceUnavailable
from redis_scim.observability import logger
from redis_scim.sync.engine import Convergence, SyncEngine
from redis_scim.targets.elasticache import ElastiCacheTarget


def parse_change(body: str) -> UserChange:
    """The change-feed message, as `UserChange.to_json` wrote it. Raises InvalidSyntax when malformed."""
    try:
        data = json.loads(body)
        cause = data["cause"]
        actor = cause.get("actor") or {}
        return UserChange(
            user_id=_text(data["user_id"]),
            version=int(data["version"]),
            cause=Cause(
                request_id=_text(cause["request_id"]),
                operation=_text(cause["operation"]),
                actor=Actor(
                    token_id=actor.get("token_id"),
                    source_ip=actor.get("source_ip"),
                    user_agent=actor.get("user_agent"),
                ),
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidSyntax(f"not a change message: {type(error).__name__}: {error}") from None


def _user_ids(event: Mapping[str, Any]) -> list[str]:
    """The users an SQS event's records name (malformed records are left to `handle_record`)."""
    user_ids: list[str] = []
    for record in event.get("Records") or []:
        try:
            user_ids.append(parse_change(record["body"]).user_id)
        except (InvalidSyntax, KeyError, TypeError):
            continue
    return user_ids


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


# Time kept back at the end of an invocation: one convergence (every node of every target, the
# read-back, the audit write) finishes well within it, so no record is cut off half-applied.
RESERVE_MS = 10_000


class AclApplier:
    """Handles SQS batches: per record, parse, tag the logs with the SCIM request id, converge the user.

    `skip_group_on_error`: a failed message fails only the rest of its user's message group (FIFO
    order per user); other users' messages in the batch still complete.
    """

    def __init__(self, engine: SyncEngine, *, reserve_ms: int = RESERVE_MS) -> None:
        self.engine = engine
        self.processor = SqsFifoPartialProcessor(skip_group_on_error=True)
        self.reserve_ms = reserve_ms
        self._context: Any = None

    def handle_batch(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """An SQS event in, `{"batchItemFailures": [...]}` out (ReportBatchItemFailures).

        The batch's users' changes are applied up front, one pipelined write per Redis node and one
        ModifyUserGroup per ElastiCache group, and targets are persisted once per batch (see
        `SyncEngine.batch`); ElastiCache waits are capped by the invocation's remaining time minus
        `reserve_ms`. A record not started while at least `reserve_ms` of the invocation remained
        is reported as failed without being tried (unless the batch already changed its user: then
        only its read-back and audit remain, and they are done): a timed-out invocation would make
        SQS redeliver the whole batch, whereas this way only the unfinished messages come back.
        """
        self._context = context
        budgets = self._lend_time_budget(context)
        try:
            # Out of time already: nothing is applied ahead, so every record is left for redelivery.
            with self.engine.batch([] if self._out_of_time() else _user_ids(event)):
                response = process_partial_response(
                    event=event, record_handler=self.handle_record, processor=self.processor, context=context
                )
        finally:
            self._context = None
            for target, budget in budgets.items():
                target.remaining_time = budget
        return dict(response)

    def _lend_time_budget(self, context: Any) -> dict[ElastiCacheTarget, Callable[[], float] | None]:
        """Cap ElastiCache waits (for `modifying` to end) by what is left of the invocation, minus
        the reserve; returns each target's own budget, restored after the batch."""
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if remaining_ms is None:
            return {}
        targets = [t for t in self.engine.targets.values() if isinstance(t, ElastiCacheTarget)]
        budgets = {target: target.remaining_time for target in targets}
        for target in targets:
            target.remaining_time = lambda: (remaining_ms() - self.reserve_ms) / 1000
        return budgets

    def _out_of_time(self) -> bool:
        remaining = getattr(self._context, "get_remaining_time_in_millis", None)
        return remaining is not None and remaining() < self.reserve_ms

    def handle_record(self, record: Any) -> Convergence:
        """`record` is a powertools `SQSRecord` (anything with `.body` and `.message_id`).

        Raises when the user did not converge everywhere, so the batch processor reports the
        message as failed and SQS redelivers it (then the DLQ after maxReceiveCount).
        """
        change = parse_change(record.body)
        # A user the batch already changed is always finished: only its read-back and audit remain.
        if self._out_of_time() and not self.engine.changed_ahead(change.user_id):
            raise ServiceUnavailable("left for redelivery: the invocation is running out of time")
        # The SCIM API's request id: one correlation id from the HTTP request to the ACL write.
        logger.set_correlation_id(change.cause.request_id)
        logger.append_keys(user_id=change.user_id, message_id=record.message_id)
        try:
            result = self.engine.converge(change.user_id, change.cause)
        finally:
            logger.remove_keys(["user_id", "message_id"])
        logger.info(
            "user converged",
            extra={
                "user_id": change.user_id,
                "message_version": change.version,
                "applied_version": result.version,
                "changes": len(result.results),
                "pending_cleared": result.cleared,
            },
        )
        return result
