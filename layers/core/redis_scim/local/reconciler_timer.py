"""The local stack's EventBridge schedule: invokes the ReconcilerFunction handler every few seconds.

Like the scheduled rule in template.yaml, it sends the handler a "Scheduled Event" and never runs
two invocations at once. The interval is RECONCILE_INTERVAL seconds (default 60); the first run
comes one interval after the stack starts, so a fresh stack is not reconciled while it boots.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis_scim.local.lambda_runtime import InvocationContext, load_function

if TYPE_CHECKING:
    from redis_scim.local.stack import LocalStack

RECONCILER_FUNCTION = "ReconcilerFunction"
RECONCILER_TIMEOUT_SECONDS = 900.0  # template.yaml's Timeout for ReconcilerFunction
DEFAULT_INTERVAL_SECONDS = 60.0

_logger = logging.getLogger(__name__)


def scheduled_event(now: datetime, region: str = "us-east-1") -> dict[str, Any]:
    """The event EventBridge sends a function on a schedule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:123456789012:rule/local-reconciler-schedule"],
        "detail": {},
    }


class ReconcilerTimer:
    """Calls `handler` with a scheduled event every `interval` seconds, in a background thread."""

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        timeout_seconds: float = RECONCILER_TIMEOUT_SECONDS,
    ) -> None:
        if interval <= 0:
            raise ValueError("RECONCILE_INTERVAL must be a positive number of seconds")
        self.handler = handler
        self.interval = interval
        self.timeout_seconds = timeout_seconds
        self.runs = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="reconciler-timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_seconds)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            context = InvocationContext(
                function_name=RECONCILER_FUNCTION, timeout_seconds=self.timeout_seconds
            )
            try:
                self.handler(scheduled_event(datetime.now(UTC)), context)
            except Exception:  # a failed run is logged, like a failed Lambda invocation; the next one comes
                _logger.exception("reconciler run failed")
            self.runs += 1


def interval_from_env(env: Mapping[str, str] = os.environ) -> float:
    """RECONCILE_INTERVAL in seconds (default 60)."""
    text = env.get("RECONCILE_INTERVAL") or ""
    try:
        return float(text) if text else DEFAULT_INTERVAL_SECONDS
    except ValueError:
        raise ValueError(f"RECONCILE_INTERVAL must be a number of seconds, not {text!r}") from None


def reconciler_timer(stack: LocalStack) -> ReconcilerTimer:
    """The local stack's service factory: the ReconcilerFunction handler on a RECONCILE_INTERVAL timer.

    The stack has already set the functions' environment, so the handler's cold start wires
    itself exactly as on Lambda.
    """
    interval = interval_from_env()  # checked before the handler's cold start connects anywhere
    return ReconcilerTimer(load_function("reconciler").lambda_handler, interval=interval)
