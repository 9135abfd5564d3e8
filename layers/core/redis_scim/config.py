"""Runtime configuration, read once per cold start from the environment.

The defaults are the names the local stack (`make run`, stack name `redis-scim`) creates, so the
CLI works against it with only `AWS_ENDPOINT_URL` set; template.yaml sets every variable explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

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
        names = {
            "directory_table": "DIRECTORY_TABLE",
            "audit_table": "AUDIT_TABLE",
            "audit_retention_days": "AUDIT_RETENTION_DAYS",
            "change_queue_url": "CHANGE_QUEUE_URL",
            "token_secret_id": "TOKEN_SECRET_ID",
            "policy": "POLICY",
            "target_secrets": "TARGET_SECRETS",
        }
        # pydantic converts the strings (e.g. AUDIT_RETENTION_DAYS) and names a bad value.
        return cls.model_validate({field: env[var] for field, var in names.items() if env.get(var)})
