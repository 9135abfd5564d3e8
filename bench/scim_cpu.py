"""Benchmark: cold import of the SCIM handler, and handler CPU per POST/GET/PATCH User.

Runs our `ScimHandler` over `MemoryDirectory` (no AWS I/O) and scim2-server's `ScimHandler` over
its `InMemoryStorage`, same requests, same process, and prints one JSON object.
Usage: .venv/bin/python bench/scim_cpu.py [requests per operation, default 2000]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

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


def cold_import(statement: str, runs: int = 5) -> dict[str, float]:
    """Median wall and CPU seconds of a fresh interpreter running `statement` (bytecode compiled).

    CPU (user + system of the child) is the figure to compare when the machine is busy.
    """
    command = [sys.executable, "-c", statement]
    subprocess.run(command, check=True)  # noqa: S603 - our own interpreter and fixed statements
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True)  # noqa: S603
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


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
        "post_user_ms": cpu_per_call(calls, post) * 1000,
        "get_user_ms": cpu_per_call(calls, get) * 1000,
        "patch_user_ms": cpu_per_call(calls, patch) * 1000,
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
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    result = {
        "python": sys.version.split()[0],
        "requests_per_operation": calls,
        "cold_import": {
            "interpreter_baseline": cold_import("pass"),
            "redis_scim.scim.handler": cold_import("import redis_scim.scim.handler"),
            "scim2_server_stack": cold_import(
                "import scim2_server.handler, scim2_server.service, scim2_server.memory"
            ),
        },
        "cpu_per_request": {
            "redis_scim_memory_directory": bench_ours(calls),
            "scim2_server_in_memory": bench_scim2_server(calls),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
