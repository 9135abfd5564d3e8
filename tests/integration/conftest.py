"""Fixtures shared by the integration suites: moto with the template's tables, and the audit trail.

A suite that needs moto shaped differently (the Directory's transaction cost, ElastiCache's
control-plane double) defines its own `aws` fixture, which overrides this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from redis_scim.audit import AuditTrail
from redis_scim.local.resources import LocalResources, create_resources


@pytest.fixture(scope="module")
def aws() -> Iterator[boto3.Session]:
    """moto for one test module, with dummy credentials and no real endpoint in reach."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            yield boto3.Session(region_name="us-east-1")


@pytest.fixture(scope="module")
def resources(aws: boto3.Session) -> LocalResources:
    """The template's tables, queues and secret, in moto."""
    return create_resources(aws)


@pytest.fixture(scope="module")
def audit(aws: boto3.Session, resources: LocalResources) -> AuditTrail:
    return AuditTrail(resources.tables["AuditTable"], aws.client("dynamodb"))
