"""The discovery endpoints (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas.

They advertise only what the handler really does: PATCH, filters (with the page cap), ETags;
no bulk, no sorting, no password change endpoint. Built once per process.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from scim2_models import Context, ResourceType

from redis_scim.scim.resources import GroupModel, UserModel

SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
MAX_RESULTS = 1000


def service_provider_config(base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SPC_SCHEMA],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        # `password` is accepted on create, PUT and PATCH (Okta pushes it) and kept only as a
        # SHA-256; changePassword advertises that a client may change it with PATCH.
        "changePassword": {"supported": True},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A long-lived bearer token in the Authorization header.",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"},
    }


@cache
def _resource_types() -> tuple[dict[str, Any], ...]:
    return tuple(
        ResourceType.from_resource(model).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        for model in (UserModel, GroupModel)
    )


@cache
def _schemas() -> tuple[dict[str, Any], ...]:
    models: tuple[Any, ...] = (UserModel, *UserModel.get_extension_models().values(), GroupModel)
    schemas = [model.to_schema() for model in models]
    return tuple(schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE) for schema in schemas)


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [_located(item, base_url, "ResourceTypes", "ResourceType") for item in _resource_types()]


def schemas(base_url: str) -> list[dict[str, Any]]:
    return [_located(item, base_url, "Schemas", "Schema") for item in _schemas()]


def _located(item: dict[str, Any], base_url: str, endpoint: str, resource_type: str) -> dict[str, Any]:
    return {
        **item,
        "meta": {"resourceType": resource_type, "location": f"{base_url}/{endpoint}/{item['id']}"},
    }
