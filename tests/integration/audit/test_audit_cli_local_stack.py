"""The installed `redis-scim audit` against a moto server, configured by AWS_ENDPOINT_URL alone.

This is how a newcomer uses it next to `make run`: no region, no credentials, no table name.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from audit_entries import make_entry
from aws_lambda_powertools import Logger
from moto.server import ThreadedMotoServer

from redis_scim.audit import Action, AuditTrail
from redis_scim.local.resources import create_resources

CLI = shutil.which("redis-scim", path=str(Path(sys.executable).parent))


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.mark.skipif(CLI is None, reason="the redis-scim console script is not installed in this environment")
def test_audit_against_the_local_stack_needs_only_the_endpoint(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3 sends every client there
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    tables = create_resources(session).tables
    trail = AuditTrail(tables["AuditTable"], session.client("dynamodb"), logger=Logger(stream=io.StringIO()))
    trail.append(make_entry("user-1", user_name="alice@example.com"))
    trail.append(make_entry("user-1", user_name="alice@example.com", action=Action.DELETE, acl_after=None))

    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # no ~/.aws
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    assert CLI is not None
    result = subprocess.run([CLI, "audit", "--user", "Alice@example.com"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "chain verified: 2 records"

    result = subprocess.run([CLI, "audit", "--user", "bob@example.com"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "no audit records for user bob@example.com\n")
