"""ScimApiFunction: API Gateway REST proxy events in, SCIM 2.0 responses out.

Everything worth testing lives in the core layer (`redis_scim.apigateway.ScimApi`); this module only
wires it to AWS once per cold start and applies the observability decorators at the edge.
"""

from __future__ import annotations

# First, before boto3 and powertools: scim2-models builds ~50 pydantic models at import, and on
# Python < 3.13 pydantic finds each one's attribute docstrings by walking the import stack and
# scanning sys.modules at every frame. With boto3 and powertools loaded first (~800 modules), the
# whole cold import takes about 15% more CPU (docs/performance.md).
from redis_scim.scim.handler import ScimHandler

# isort: split
from typing import Any

import boto3
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from redis_scim.apigateway import ScimApi
from redis_scim.auth import BearerAuthenticator, SecretsManagerTokens
from redis_scim.auth.usage import DynamoTokenUsage
from redis_scim.config import Settings
from redis_scim.directory.changefeed import SqsChangeFeed
from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.observability import logger, metrics, route_core_logs_to_json, tracer

route_core_logs_to_json()
settings = Settings.from_env()
if not settings.change_queue_url:
    raise RuntimeError("CHANGE_QUEUE_URL is not set: the SCIM API cannot publish changes")
session = boto3.Session()
aws_config = Config(retries={"mode": "standard"})  # the Directory relies on botocore retrying throttles
dynamodb = session.client("dynamodb", config=aws_config)
directory = DynamoDirectory(
    settings.directory_table,
    dynamodb,
    SqsChangeFeed(settings.change_queue_url, session.client("sqs", config=aws_config)),
    metrics=metrics,
)
api = ScimApi(
    ScimHandler(directory),
    BearerAuthenticator(
        SecretsManagerTokens(settings.token_secret_id, session.client("secretsmanager")),
        usage=DynamoTokenUsage(settings.directory_table, dynamodb, metrics=metrics),
    ),
)


# The correlation id is API Gateway's request id; it travels on through SQS to the applier.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)  # responses carry identities: keep them out of traces
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api(event)
