"""Fixtures for the unit tests: a Directory and a client driving the SCIM handler."""

from __future__ import annotations

import json
from typing import Any

import pytest

from redis_scim.directory import Actor
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.scim.handler import ScimHandler
from redis_scim.scim.http import ScimRequest


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory(ListFeed())


BASE_URL = "https://api.example/prod/scim/v2"


class ScimClient:
    """Drives `ScimHandler.handle` the way the Lambda adapter does, with JSON in and out."""

    base_url = BASE_URL

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = ScimRequest(
            method=method,
            path=path,
            query=query or {},
            headers={"content-type": "application/scim+json", **(headers or {})},
            body=payload,
            base_url=BASE_URL,
            request_id="req-1",
            actor=Actor(token_id="t1", source_ip="192.0.2.1", user_agent="pytest"),
        )
        response = self.handler.handle(request)
        assert response.headers["Content-Type"] == "application/scim+json"
        if response.body is not None:
            json.dumps(response.body)  # always serialisable
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path: str, operations: list[dict[str, Any]], **kwargs: Any) -> Any:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def scim(directory: Any) -> ScimClient:
    return ScimClient(ScimHandler(directory))


@pytest.fixture
def scim_for() -> Any:
    """Builds a client over any Directory (e.g. a wrapper that counts or injects failures)."""

    def build(directory: Any, **options: Any) -> ScimClient:
        return ScimClient(ScimHandler(directory, **options))

    return build
