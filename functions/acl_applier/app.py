"""AclApplierFunction: SQS FIFO change messages in, every target's ACLs converged, partial failures out.

Everything worth testing lives in the core layer (`redis_scim.sync`); this module wires it once per
cold start and applies powertools at the edge. `skip_group_on_error`: a failed message fails only
the rest of its user's message group (FIFO order per user); other users' messages still complete.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from redis_scim.config import Settings
from redis_scim.observability import logger, metrics, tracer
from redis_scim.sync.applier import AclApplier
from redis_scim.sync.runtime import build_engine

applier = AclApplier(build_engine(Settings.from_env(), boto3.Session(), metrics=metrics, logger=logger))
processor = SqsFifoPartialProcessor(skip_group_on_error=True)


# The correlation id (the SCIM request id) is set per record from the message's cause.
@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=applier.handle_record, processor=processor, context=context
    )
