"""Controller connections from Secrets Manager (moto): variables for the policy, clear errors that
never carry a secret's value, and the policy loaded with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from redis_scim import errors
from redis_scim.config import Settings
from redis_scim.policy import RedisTargetConfig, load_policy_text
from redis_scim.sync.runtime import build_engine
from redis_scim.targets.connection_secrets import (
    connection_variables,
    parse_secret_ids,
    policy_environment,
)

CONTROLLER_PASSWORD = "s3cr3t-controller-password"
PROD_URL = f"rediss://scim-controller:{CONTROLLER_PASSWORD}@prod-cache.internal:6379"
POLICY = """\
version: 1
roles:
  reader: "+@read ~cache:*"
groups:
  Readers: [reader]
targets:
  prod-cache:
    kind: redis
    url: ${PROD_CACHE_URL}
"""


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def put(client: Any, name: str, value: str) -> str:
    return client.create_secret(Name=name, SecretString=value)["ARN"]


def test_the_policy_gets_its_connection_from_the_secret(secrets: Any) -> None:
    arn = put(secrets, "redis-scim-prod/prod-cache", json.dumps({"PROD_CACHE_URL": PROD_URL}))
    env = policy_environment([arn], secrets, {"HOME": "/root"})
    assert env == {"HOME": "/root", "PROD_CACHE_URL": PROD_URL}
    target = load_policy_text(POLICY, env=env).targets["prod-cache"]
    assert isinstance(target, RedisTargetConfig)
    assert target.url == PROD_URL
    assert CONTROLLER_PASSWORD not in target.redacted_url


def test_several_secrets_add_up_and_win_over_the_environment(secrets: Any) -> None:
    first = put(secrets, "a", json.dumps({"PROD_CACHE_URL": PROD_URL}))
    second = put(secrets, "b", json.dumps({"SESSIONS_URL": "redis://sessions:6379"}))
    env = policy_environment([first, second], secrets, {"PROD_CACHE_URL": "redis://stale:6379"})
    assert env == {"PROD_CACHE_URL": PROD_URL, "SESSIONS_URL": "redis://sessions:6379"}


def test_no_secrets_means_no_calls() -> None:
    assert connection_variables([], client=None) == {}


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (f"rediss://x:{CONTROLLER_PASSWORD}@h", "must be a JSON object"),
        (json.dumps([PROD_URL]), "must be a JSON object"),
        (json.dumps({"prod-cache-url": PROD_URL}), "'prod-cache-url' is not a variable name"),
        (json.dumps({"PROD_CACHE_URL": 6379}), "the value of PROD_CACHE_URL must be a string"),
    ],
)
def test_a_malformed_secret_is_a_policy_error_without_its_value(
    secrets: Any, content: str, complaint: str
) -> None:
    arn = put(secrets, "bad", content)
    with pytest.raises(errors.PolicyError) as raised:
        connection_variables([arn], secrets)
    assert complaint in str(raised.value)
    assert arn in str(raised.value)
    assert CONTROLLER_PASSWORD not in str(raised.value)


def test_two_secrets_defining_one_variable_are_ambiguous(secrets: Any) -> None:
    first = put(secrets, "a", json.dumps({"PROD_CACHE_URL": PROD_URL}))
    second = put(secrets, "b", json.dumps({"PROD_CACHE_URL": "redis://other:6379"}))
    with pytest.raises(errors.PolicyError, match="both define PROD_CACHE_URL"):
        connection_variables([first, second], secrets)


def test_an_unreadable_secret_is_service_unavailable(secrets: Any) -> None:
    with pytest.raises(errors.ServiceUnavailable, match="target secret missing-secret cannot be read"):
        connection_variables(["missing-secret"], secrets)


def test_settings_read_the_secret_list_the_template_passes() -> None:
    settings = Settings.from_env({"TARGET_SECRETS": "arn:a, ,arn:b"})
    assert parse_secret_ids(settings.target_secrets) == ("arn:a", "arn:b")
    # CloudFormation joins an empty TargetSecretArns into "": no secrets.
    assert parse_secret_ids(Settings.from_env({"TARGET_SECRETS": ""}).target_secrets) == ()


def test_the_applier_engine_loads_its_policy_with_the_secrets(secrets: Any, tmp_path: Any) -> None:
    arn = put(secrets, "redis-scim-prod/prod-cache", json.dumps({"PROD_CACHE_URL": PROD_URL}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = Settings(policy=str(policy), target_secrets=arn)
    engine = build_engine(settings, boto3.Session(region_name="us-east-1"))
    target = engine.policy.targets["prod-cache"]
    assert isinstance(target, RedisTargetConfig)
    assert target.url == PROD_URL
