"""The HTTP API fuzzed from its OpenAPI description (docs/openapi.yaml) with schemathesis, against
the local stack: whatever is sent, no 5xx (501 only where /ServiceProviderConfig says a feature is
unsupported), and every 4xx is a SCIM Error body with the SCIM media type.

Examples per operation are bounded (`EXAMPLES`) so the run stays well under a minute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
EXAMPLES = 8
# API Gateway's `ANY` routes only these methods to the function (TRACE, QUERY... never reach it).
CONFIG = SchemathesisConfig.from_str(
    """
[phases.coverage]
unexpected-methods = ["get", "put", "post", "delete", "options", "patch"]
"""
)
schema = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)


def test_the_description_covers_every_endpoint() -> None:
    paths = yaml.safe_load(OPENAPI.read_text())["paths"]
    assert set(paths) == {
        "/Users", "/Users/{id}", "/Groups", "/Groups/{id}", "/ServiceProviderConfig",
        "/ResourceTypes", "/ResourceTypes/{id}", "/Schemas", "/Schemas/{id}",
    }  # fmt: skip
    assert set(paths["/Users/{id}"]) >= {"get", "put", "patch", "delete"}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, local_stack: Any) -> None:
    response = case.call(
        base_url=local_stack.base_url, headers={"Authorization": f"Bearer {local_stack.token}"}
    )
    case.validate_response(response, checks=[not_a_server_error])
    assert response.headers["content-type"] == ["application/scim+json"]
    if response.status_code >= 400:
        body = response.json()
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert body["status"] == str(response.status_code) and body.get("detail")
