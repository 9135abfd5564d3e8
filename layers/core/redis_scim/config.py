"""Runtime configuration, read once per cold start from the environment.

The defaults are the names the local stack (`make run`, stack name `redis-scim`) creates, so the
CLI works against it with only `AWS_ENDPOINT_URL` set; template.yaml sets every variable explicitly.

A dataclass, not a pydantic model: nothing else on the applier's or the reconciler's path imports
pydantic, and importing it there would also make powertools' batch utility load its parser models
(it checks `sys.modules`), about 0.1 s of their cold start for one integer (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Settings:
    directory_table: str = "redis-scim-directory"
    audit_table: str = "redis-scim-audit"
    audit_retention_days: int = 400  # the Audit table's TTL: records expire this long after they are written
    change_queue_url: str | None = None
    token_secret_id: str = "redis-scim/scim-tokens"  # noqa: S105 - the secret's name, not a secret
    policy: str = "examples/policy.yaml"
    # Comma-separated Secrets Manager ids of the targets' controller connections (template.yaml
    # TargetSecretArns); their variables fill the policy's ${...} (targets/connection_secrets.py).
    target_secrets: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """The settings from `env`; an unset or empty variable keeps its default."""
        default = cls()
        return cls(
            directory_table=env.get("DIRECTORY_TABLE") or default.directory_table,
            audit_table=env.get("AUDIT_TABLE") or default.audit_table,
            audit_retention_days=_days(env.get("AUDIT_RETENTION_DAYS"), default.audit_retention_days),
            change_queue_url=env.get("CHANGE_QUEUE_URL") or default.change_queue_url,
            token_secret_id=env.get("TOKEN_SECRET_ID") or default.token_secret_id,
            policy=env.get("POLICY") or default.policy,
            target_secrets=env.get("TARGET_SECRETS") or default.target_secrets,
        )


def _days(value: str | None, default: int) -> int:
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"AUDIT_RETENTION_DAYS must be a whole number of days, not {value!r}") from None
