"""Helpers shared by the hardening tests: an in-memory audit sink and cleaning a test Valkey.

A module of its own (not conftest) so test modules can import it by a name no other test
directory uses.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis

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


def remove_users(valkey: redis.Redis) -> None:
    for name in set(valkey.execute_command("ACL", "USERS")) - {"default"}:
        valkey.execute_command("ACL", "DELUSER", name)
