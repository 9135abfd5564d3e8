"""A ready-made audit entry for the audit tests: a SCIM user created on the local target."""

from __future__ import annotations

from typing import Any

from redis_scim.audit import Action, AuditEntry, Outcome
from redis_scim.directory import Actor, Cause


def make_entry(user_id: str = "user-1", **overrides: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "user_id": user_id,
        "user_name": "bjensen@example.com",
        "redis_username": "bjensen",
        "target": "local",
        "node_count": 1,
        "action": Action.CREATE,
        "outcome": Outcome.APPLIED,
        "verified": True,
        "cause": Cause("req-1", "POST /Users", Actor("tok-1", "203.0.113.7", "Okta SCIM Client 1.0")),
        "acl_before": None,
        "acl_after": "on resetpass (+@read ~cache:*)",
        "user_version": 1,
    }
    return AuditEntry(**{**values, **overrides})
