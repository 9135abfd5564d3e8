"""A real Valkey server standing for an ElastiCache cache in the tests: logins, ACL DRYRUN, connections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# The tests' own admin on the server, apart from the double's: mirroring `default` locks neither out.
ADMIN = "elasticache-control-plane-test"
ADMIN_PASSWORD = "test-admin-password-123"


@dataclass
class Valkey:
    port: int

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **kwargs)

    def login(self, username: str, password: str) -> redis.Redis:
        """A connection authenticated as `username` that never reconnects (a dropped one stays dropped)."""
        connection = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=username,
            password=password,
            decode_responses=True,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),  # a dropped connection must stay dropped, not reconnect
        )
        return connection  # single_connection_client: connected and authenticated already

    def can_login(self, username: str, password: str) -> bool:
        try:
            self.login(username, password).close()
        except (redis.AuthenticationError, redis.ResponseError):
            return False
        return True

    def dryrun(self, username: str, *command: str) -> bool:
        """ACL DRYRUN: may `username` run `command` (a real permission check on the engine)?"""
        admin = self.client(username=ADMIN, password=ADMIN_PASSWORD)
        try:
            return admin.execute_command("ACL", "DRYRUN", username, *command) == "OK"
        except redis.ResponseError:
            return False

    def connected_users(self) -> list[str]:
        admin = self.client(username=ADMIN, password=ADMIN_PASSWORD)
        return [client["user"] for client in admin.client_list()]
