"""Handler CPU per POST/GET/PATCH User: ours against scim2-server's, same requests, same process.

Our `ScimHandler` runs over `MemoryDirectory` (the Directory port without AWS I/O) and
scim2-server's `ScimHandler` over its `InMemoryStorage`; each operation is timed with
`process_time` over N requests (2,000; 300 in quick mode) and reported in ms per request.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from bench._common import QUICK, report

BASE_URL = "https://api.example/prod/scim/v2"
HEADERS = {"content-type": "application/scim+json"}


def user_body(index: int) -> bytes:
    return json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"user{index}@corp.example",
            "name": {"givenName": "Ada", "familyName": f"L{index}"},
            "emails": [{"primary": True, "value": f"user{index}@corp.example", "type": "work"}],
            "displayName": "Ada L",
            "externalId": f"ext-{index}",
            "active": True,
        }
    ).encode()


PATCH_BODY = json.dumps(
    {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "path": "active", "value": False},
            {"op": "Replace", "path": "name.familyName", "value": "Hopper"},
        ],
    }
).encode()


def cpu_per_call(calls: int, run: Callable[[int], Any]) -> float:
    started = time.process_time()
    for index in range(calls):
        run(index)
    return (time.process_time() - started) / calls


def user_operations(calls: int, request: Callable[[str, str, bytes | None], Any]) -> dict[str, float]:
    """CPU per POST, GET and PATCH of one user, through any handler wrapped as `request`."""
    ids: list[str] = []

    def post(index: int) -> None:
        ids.append(request("POST", "/Users", user_body(index)).body["id"])

    def get(index: int) -> None:
        request("GET", f"/Users/{ids[index]}", None)

    def patch(index: int) -> None:
        request("PATCH", f"/Users/{ids[index]}", PATCH_BODY)

    return {
        "post": round(cpu_per_call(calls, post) * 1000, 3),
        "get": round(cpu_per_call(calls, get) * 1000, 3),
        "patch": round(cpu_per_call(calls, patch) * 1000, 3),
    }


def bench_ours(calls: int) -> dict[str, float]:
    from redis_scim.directory import Actor
    from redis_scim.directory.memory import MemoryDirectory
    from redis_scim.scim.handler import ScimHandler
    from redis_scim.scim.http import ScimRequest

    handler = ScimHandler(MemoryDirectory())

    def request(method: str, path: str, body: bytes | None) -> Any:
        response = handler.handle(ScimRequest(method, path, {}, HEADERS, body, BASE_URL, "bench", Actor()))
        assert response.status < 300, response.body
        return response

    return user_operations(calls, request)


def bench_scim2_server(calls: int) -> dict[str, float]:
    from scim2_server.handler import ScimHandler
    from scim2_server.memory import InMemoryStorage
    from scim2_server.requests import ScimRequest
    from scim2_server.service import ScimService
    from scim2_server.utils import load_default_provider

    service = ScimService(load_default_provider(), secret=os.urandom(32))
    handler = ScimHandler(service, InMemoryStorage())

    def request(method: str, path: str, body: bytes | None) -> Any:
        response = handler.handle(ScimRequest(method, BASE_URL, path, {}, HEADERS, body or b""))
        assert response.status < 300, response.body
        return response

    return user_operations(calls, request)


def main() -> None:
    calls = 300 if QUICK else 2000
    ours, theirs = bench_ours(calls), bench_scim2_server(calls)
    report(
        {
            "scim_cpu_ms": ours,
            "scim2_server_cpu_ms": theirs,
            "scim_cpu_ratio": {op: round(ours[op] / theirs[op], 2) for op in ours},
            "scim_cpu_requests": calls,
        }
    )


if __name__ == "__main__":
    main()
