"""AclApplierFunction: SQS FIFO change messages in, every target's ACLs converged, partial failures out.

Everything worth testing lives in the core layer (`redis_scim.sync`): `AclApplier.handle_batch` runs
powertools' `SqsFifoPartialProcessor` (ReportBatchItemFailures, skipping only a failed user's
message group). This module wires it once per cold start and applies observability at the edge.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from redis_scim.config import Settings
from redis_scim.observability import logger, metrics, tracer
from redis_scim.sync.applier import AclApplier
from redis_scim.sync.runtime import build_engine

applier = AclApplier(build_engine(Settings.from_env(), boto3.Session(), metrics=metrics, logger=logger))


# The correlation id (the SCIM request id) is set per record from the message's cause.
@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return applier.handle_batch(event, context)
