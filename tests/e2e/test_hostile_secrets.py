"""Secrets hygiene on the local stack: after a lifecycle that used a SCIM password and a bearer
token made with `redis-scim token create`, neither appears anywhere we keep data.

The stack is private to the test, so its captured stdout/stderr are exactly what this lifecycle
logged. Searched: every DynamoDB table (scanned through AWS_ENDPOINT_URL, as an operator would),
every SQS queue and dead-letter queue (peeked), the audit trail (a table), and the stack's output.
Only the password's SHA-256 may be at rest, on the Directory's user item while the user exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

pytestmark = pytest.mark.e2e

Stack = Any
StartStack = Callable[..., Stack]
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
AUDIT_WAIT_SECONDS = 60
CLI = Path(sys.executable).with_name("redis-scim")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def aws_client(stack: Stack, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def redis_scim(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI, configured the way the local stack's banner says: AWS_ENDPOINT_URL only."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment.pop("TOKEN_SECRET_ID", None)
    environment.pop("DIRECTORY_TABLE", None)
    environment["AWS_ENDPOINT_URL"] = stack.aws_endpoint_url
    return subprocess.run([str(CLI), *args], env=environment, capture_output=True, text=True, timeout=60)


def everything_stored(stack: Stack) -> dict[str, str]:
    """Where -> its content as text: every item of every table and every message of every queue."""
    stored: dict[str, str] = {}
    dynamodb = aws_client(stack, "dynamodb")
    for table in dynamodb.list_tables()["TableNames"]:
        items: list[Any] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            items.extend(page["Items"])
        stored[f"table {table}"] = json.dumps(items)
    sqs = aws_client(stack, "sqs")
    for url in sqs.list_queues().get("QueueUrls", []):
        # Peek once: a zero visibility timeout leaves each message where it was, and a single
        # receive keeps the peeks far from the queue's maxReceiveCount (the applier consumes it too).
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        bodies = {message["MessageId"]: message["Body"] for message in messages.get("Messages", [])}
        stored[f"queue {url}"] = json.dumps(bodies)
    return stored


def wait_for_audit(stack: Stack, table: str, user_id: str, action: str) -> list[str]:
    """The user's audit actions in order, once the applier has recorded `action` (bounded wait)."""
    dynamodb = aws_client(stack, "dynamodb")
    deadline = time.monotonic() + AUDIT_WAIT_SECONDS
    while True:
        items = [
            item
            for page in dynamodb.get_paginator("scan").paginate(TableName=table)
            for item in page["Items"]
            if item.get("user_id", {}).get("S") == user_id
        ]
        actions = [item["action"]["S"] for item in sorted(items, key=lambda item: int(item["seq"]["N"]))]
        if action in actions or time.monotonic() > deadline:
            return actions
        time.sleep(0.5)


def test_a_full_lifecycle_leaves_no_password_or_token_behind(start_stack: StartStack) -> None:
    stack = start_stack()
    created = redis_scim(stack, "token", "create", "--expires", "1d", "--id", "idp")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token and token not in created.stderr
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    first_password, second_password = f"Pw1-{uuid.uuid4()}", f"Pw2-{uuid.uuid4()}"
    user_name = f"secrets-{uuid.uuid4().hex[:8]}@example.com"

    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as scim:
        response = scim.post(
            "/Users", json={"schemas": [USER_SCHEMA], "userName": user_name, "password": first_password}
        )
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        assert "password" not in response.text
        # A reader in the example policy: the applier creates its Redis user with the password hash,
        # so the audit trail records every step of the lifecycle.
        group = scim.post(
            "/Groups",
            json={"schemas": [GROUP_SCHEMA], "displayName": "Cache Readers", "members": [{"value": user_id}]},
        )
        assert group.status_code == 201, group.text
        # A request with a wrong token: its rejection is logged, so the function's logs are captured.
        assert scim.get("/Users", headers={"Authorization": "Bearer wrong-token"}).status_code == 401

        def patch(*operations: dict[str, Any]) -> None:
            reply = scim.patch(
                f"/Users/{user_id}", json={"schemas": [PATCH_SCHEMA], "Operations": list(operations)}
            )
            assert reply.status_code == 200, reply.text
            assert first_password not in reply.text and second_password not in reply.text

        patch({"op": "replace", "path": "password", "value": second_password})  # Okta's password sync
        # A failed request carrying a password: refused, and the password still never logged.
        refused = scim.post(
            "/Users", json={"schemas": [USER_SCHEMA], "userName": user_name, "password": first_password}
        )
        assert refused.status_code == 409

        stored = everything_stored(stack)
        directory = next(text for where, text in stored.items() if "directory" in where)
        assert sha256(second_password) in directory  # the design's one derived value: the ACL #hash
        assert sha256(first_password) not in directory  # replaced, not kept
        for where, text in stored.items():
            if "directory" not in where:
                assert sha256(second_password) not in text, where

        patch({"op": "replace", "value": {"active": False}})  # deactivate
        assert scim.delete(f"/Users/{user_id}").status_code == 204

    listing = redis_scim(stack, "token", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    (idp,) = [row for row in json.loads(listing.stdout) if row["id"] == "idp"]
    assert idp["last_used"] is not None and idp["state"] == "live"

    audit_table = next(
        name for name in aws_client(stack, "dynamodb").list_tables()["TableNames"] if "audit" in name
    )
    actions = wait_for_audit(stack, audit_table, user_id, "delete")
    assert actions[0] == "create" and actions[-1] == "delete", actions
    stored = everything_stored(stack)
    assert len([where for where in stored if where.startswith("table ")]) >= 2  # Directory and Audit
    logs = stack.text()
    assert "SCIM request rejected: no valid bearer token" in logs
    assert f'"user_id":"{user_id}"' in logs.replace(" ", "")  # the applier's and the audit's log lines
    forbidden = {
        "the first password": first_password,
        "the second password": second_password,
        "the bearer token": token,
        "the bearer token's SHA-256": sha256(token),
        "the first password's SHA-256": sha256(first_password),
    }
    for label, secret in forbidden.items():
        for where, text in {**stored, "the stack's stdout/stderr": logs}.items():
            assert secret not in text, f"{label} found in {where}"
    # After deletion not even the remaining hash is kept outside the Directory's tombstone.
    for where, text in stored.items():
        if "directory" not in where:
            assert sha256(second_password) not in text, where


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RUN_SLOW") != "1", reason="set RUN_SLOW=1 (waits out the 60 s token cache)"
)
def test_a_revoked_token_is_refused_by_the_running_stack_within_a_minute(start_stack: StartStack) -> None:
    stack = start_stack()
    created = redis_scim(stack, "token", "create", "--id", "to-revoke")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{stack.base_url}/ServiceProviderConfig", headers=headers).status_code == 200
    revoked = redis_scim(stack, "token", "revoke", "to-revoke")
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    while httpx.get(f"{stack.base_url}/ServiceProviderConfig", headers=headers).status_code == 200:
        assert time.monotonic() - started < 75, "the revoked token still works after the cache's minute"
        time.sleep(2)
    refused = httpx.get(f"{stack.base_url}/ServiceProviderConfig", headers=headers)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    time.sleep(0.5)
    assert '"reason":"revoked"' in stack.text().replace(" ", "")
    assert token not in stack.text()
