"""The audit trail: one append-only, hash-chained record per change of a user on a target.

`record` holds the pure model and chain verification; `store` the DynamoDB writer and reader.
"""

from redis_scim.audit.record import (
    Action,
    AuditEntry,
    AuditRecord,
    ChainCheck,
    Outcome,
    find_secrets,
    seal,
    verify_chain,
)
from redis_scim.audit.store import AuditTrail, UnreadableAuditRecord

__all__ = [
    "Action",
    "AuditEntry",
    "AuditRecord",
    "AuditTrail",
    "ChainCheck",
    "Outcome",
    "UnreadableAuditRecord",
    "find_secrets",
    "seal",
    "verify_chain",
]
