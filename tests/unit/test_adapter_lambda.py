"""functions/scim_api/app.py as Lambda runs it: cold-start wiring to DynamoDB, SQS and Secrets
Manager (moto, resources created from template.yaml), invoked with the sample events."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from redis_scim.auth import TokenEntry
from redis_scim.local.lambda_runtime import InvocationContext, load_function
from redis_scim.local.resources import LocalResources, create_resources
from redis_scim.observability import logger

# A request that adds no metric of its own is normal; powertools warns about it on every flush.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_TOKEN = "example-token-for-the-sample-events"


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


@dataclass
class Deployed:
    app: ModuleType
    session: Any
    resources: LocalResources

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.app.lambda_handler(event, InvocationContext(function_name="ScimApiFunction"))

    def queued_messages(self) -> list[dict[str, Any]]:
        sqs = self.session.client("sqs")
        url = self.resources.queues["ChangeQueue"]
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    core_logger = logging.getLogger("redis_scim")
    saved = (core_logger.handlers[:], core_logger.propagate, core_logger.level)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        entry = TokenEntry.for_token(SAMPLE_TOKEN, token_id="tok-sample")
        secret = json.dumps([entry.to_json()])
        resources = create_resources(session, secret_values={"ScimTokenSecret": secret})
        monkeypatch.setenv("DIRECTORY_TABLE", resources.tables["DirectoryTable"])
        monkeypatch.setenv("CHANGE_QUEUE_URL", resources.queues["ChangeQueue"])
        monkeypatch.setenv("TOKEN_SECRET_ID", resources.secrets["ScimTokenSecret"])
        # A module another test (or an in-process local stack) loaded holds that run's settings.
        sys.modules.pop("functions.scim_api.app", None)
        try:
            yield Deployed(load_function("scim_api"), session, resources)
        finally:
            # Each test gets its own cold start; the JSON log routing is undone for the other tests.
            sys.modules.pop("functions.scim_api.app", None)
            core_logger.handlers[:], core_logger.propagate, core_logger.level = saved


def test_post_user_is_stored_and_published_with_its_cause(deployed: Deployed) -> None:
    event = sample("scim_post_user")
    result = deployed.invoke(event)
    assert result["statusCode"] == 201, result["body"]
    created = json.loads(result["body"])
    assert result["headers"]["Location"] == created["meta"]["location"]
    assert created["meta"]["location"].startswith("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/scim/v2/Users/")
    (message,) = deployed.queued_messages()
    assert message["user_id"] == created["id"]
    assert message["cause"]["request_id"] == event["requestContext"]["requestId"]
    assert message["cause"]["actor"] == {
        "token_id": "tok-sample", "source_ip": "198.51.100.23", "user_agent": "Okta SCIM Client 1.0.0"
    }
    # The request id is the logs' correlation id too.
    assert logger.get_correlation_id() == event["requestContext"]["requestId"]
    stored = deployed.session.client("dynamodb").scan(TableName=deployed.resources.tables["DirectoryTable"])
    assert SAMPLE_TOKEN not in json.dumps(stored["Items"])


def test_get_users_sample_finds_the_created_user(deployed: Deployed) -> None:
    deployed.invoke(sample("scim_post_user"))
    result = deployed.invoke(sample("scim_get_users"))
    assert result["statusCode"] == 200
    assert json.loads(result["body"])["totalResults"] == 1


def test_unauthorized_sample_is_401_and_writes_nothing(deployed: Deployed) -> None:
    event = sample("scim_post_user")
    del event["headers"]["Authorization"]
    result = deployed.invoke(event)
    assert result["statusCode"] == 401
    assert result["headers"]["WWW-Authenticate"] == 'Bearer realm="redis-scim"'
    assert deployed.invoke(sample("scim_unauthorized"))["statusCode"] == 401
    assert deployed.queued_messages() == []


def test_deleted_token_secret_is_503(deployed: Deployed) -> None:
    deployed.session.client("secretsmanager").delete_secret(
        SecretId=deployed.resources.secrets["ScimTokenSecret"], ForceDeleteWithoutRecovery=True
    )
    result = deployed.invoke(sample("scim_get_users"))
    assert result["statusCode"] == 503
    assert json.loads(result["body"])["detail"] == "The token store is unavailable; retry later."
