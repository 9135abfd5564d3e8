"""ReconcilerFunction: on an EventBridge schedule, compare every target with the Directory and repair.

Everything worth testing lives in the core layer (`redis_scim.sync.reconcile`): this module wires
the reconciler once per cold start on the same engine the applier uses, runs one reconciliation
per invocation, and sends the run's metrics (drift by class, ghosts per target, unreachable
targets, duration). An unreachable target is reported, never a failed invocation.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from redis_scim.config import Settings
from redis_scim.observability import logger, metrics, put_metric, tracer
from redis_scim.sync.reconcile import Reconciler, ReconcileSettings, publish_metrics
from redis_scim.sync.runtime import build_engine

reconciler = Reconciler(
    build_engine(Settings.from_env(), boto3.Session(), metrics=metrics, logger=logger),
    settings=ReconcileSettings.from_env(os.environ),
    logger=logger,
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = reconciler.reconcile(time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    publish_metrics(report, put_metric)
    return {
        "run_id": report.run_id,
        "seconds": round(report.seconds, 3),
        "counts": report.counts(),
        "unreachable": {target.target: target.unreachable for target in report.unreachable},
        "failed_repairs": len(report.failed_repairs),
        "redriven": len(report.redriven),
        "deferred": report.deferred,
    }
