"""Logging, metrics and tracing for every function, created once and imported everywhere.

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(template.yaml sets both). Decorators that flush metrics or inject the Lambda context are applied
only at the handler edge (functions/*/app.py); the core just logs and counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "redis-scim")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "RedisScim")

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)
# Only botocore is patched: patching every library X-Ray knows costs cold-start time for nothing.
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))


def route_core_logs_to_json() -> None:
    """Send the core modules' standard-library logs (`logging.getLogger(__name__)`) through the
    powertools JSON handler, so they carry the correlation id too.

    Called by the Lambda handlers at cold start only: it stops `redis_scim` logs from propagating
    to the root logger, which is what a test's log capture listens on.
    """
    logging.getLogger("redis_scim")  # registers the package's parent logger so it can be configured
    copy_config_to_registered_loggers(source_logger=logger, include={"redis_scim"})


class MetricName:
    """The EMF metric names the dashboard and alarms in template.yaml refer to."""

    AUTH_FAILURES = "AuthFailures"  # dimension: reason (missing, malformed, unknown, expired)
    PROVISIONED = "UsersProvisioned"
    DEPROVISIONED = "UsersDeprovisioned"
    APPLY_FAILURES = "ApplyFailures"
    DEPROVISION_LATENCY = "DeprovisionLatency"
    DRIFT_CORRECTED = "DriftCorrected"
    # The reconciler, once per run: GhostsFound without a dimension (the total, for the alarm) and
    # with `target`; DriftFound with `class` (missing, drifted, node-divergent, stale);
    # ReconcileDuration (milliseconds), TargetsUnreachable and RepairsDeferred (left for the next
    # run when a run neared its time limit) without dimensions.
    GHOSTS_FOUND = "GhostsFound"
    DRIFT_FOUND = "DriftFound"
    RECONCILE_DURATION = "ReconcileDuration"
    TARGETS_UNREACHABLE = "TargetsUnreachable"
    REPAIRS_DEFERRED = "RepairsDeferred"
    # On each successful authentication (no dimension beyond service, so one alarm covers every
    # token): the age of the token used, and the days left before it expires (tokens that expire).
    TOKEN_AGE_DAYS = "TokenAgeDays"  # noqa: S105 - a metric name, not a secret
    TOKEN_DAYS_TO_EXPIRY = "TokenDaysToExpiry"  # noqa: S105 - a metric name, not a secret


def count_event(name: str, **dimensions: str) -> None:
    """Emit one count of `name` now, with its own dimensions.

    A single metric is flushed at once so its dimensions (e.g. an auth failure's reason) never leak
    onto the other metrics the shared `metrics` object flushes at the end of the invocation.
    """
    put_metric(name, 1, MetricUnit.Count.value, dimensions)


def put_metric(name: str, value: float, unit: str, dimensions: Mapping[str, str]) -> None:
    """Emit one value of `name` now, with the service dimension and `dimensions` only."""
    with single_metric(name=name, unit=MetricUnit(unit), value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        for key, value_ in dimensions.items():
            metric.add_dimension(name=key, value=value_)
