"""Wires a SyncEngine from the runtime settings: policy, Directory, ledger, audit trail, target backends.

Used once per cold start by the applier (and by anything else that converges users against AWS).
The policy is loaded and validated here, so a bad policy is a clear error at start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from redis_scim.audit import AuditTrail
from redis_scim.config import Settings
from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.directory.ledger import DynamoLedger, Ledger
from redis_scim.directory.rules import MetricsSink
from redis_scim.errors import PolicyError
from redis_scim.policy import Policy, RedisTargetConfig, load_policy
from redis_scim.sync.engine import SyncEngine
from redis_scim.targets import Target
from redis_scim.targets.connection_secrets import parse_secret_ids, policy_environment


def open_targets(
    policy: Policy,
    *,
    session: Any = None,
    directory_table: str | None = None,
    ledger: Ledger | None = None,
    metrics: MetricsSink | None = None,
) -> dict[str, Target]:
    """One backend per policy target. ElastiCache targets need `session` (a boto3 Session) and the
    Directory table (their user-id registry lives there); without them they are a PolicyError.

    Each backend is imported only for a policy with a target of its kind, to keep it out of the
    others' cold start: redis-py alone costs about 0.1 s of CPU (docs/performance.md)."""
    targets: dict[str, Target] = {}
    for name, config in policy.targets.items():
        if isinstance(config, RedisTargetConfig):
            from redis_scim.targets.redis import RedisTarget

            targets[name] = RedisTarget.from_config(config)
        elif session is not None and directory_table is not None:
            from redis_scim.targets.elasticache import ElastiCacheTarget
            from redis_scim.targets.elasticache_ids import DynamoUserIdRegistry

            targets[name] = ElastiCacheTarget.from_config(
                config,
                session=session,
                user_ids=DynamoUserIdRegistry(directory_table, session.client("dynamodb")),
                ledger=ledger,
                metrics=metrics,
            )
        else:
            raise PolicyError(f"{policy.source}: target {name!r}: {config.kind} targets need AWS access")
    return targets


def build_engine(
    settings: Settings,
    session: Any,
    *,
    metrics: MetricsSink | None = None,
    logger: Any = None,
    targets: Mapping[str, Target] | None = None,
) -> SyncEngine:
    """The engine on the settings' tables; `session` is a boto3 Session. The Directory is opened
    without a change feed: the applier consumes changes, it never publishes them."""
    secret_ids = parse_secret_ids(settings.target_secrets)
    # Controller connections (with their passwords) come from Secrets Manager, not the environment.
    env = policy_environment(secret_ids, session.client("secretsmanager"), os.environ) if secret_ids else None
    policy = load_policy(settings.policy, env=env)
    dynamodb = session.client("dynamodb")
    ledger = DynamoLedger(settings.directory_table, dynamodb)
    if targets is None:
        targets = open_targets(
            policy, session=session, directory_table=settings.directory_table, ledger=ledger, metrics=metrics
        )
    return SyncEngine(
        directory=DynamoDirectory(settings.directory_table, dynamodb, None),
        ledger=ledger,
        policy=policy,
        targets=targets,
        audit=AuditTrail(
            settings.audit_table, dynamodb, retention_days=settings.audit_retention_days, logger=logger
        ),
        metrics=metrics,
        logger=logger,
    )
