"""Controller credentials for the policy's targets, read from Secrets Manager at cold start.

The policy names connections through variables (`url: ${PROD_CACHE_URL}`); on AWS their values,
which carry passwords, live in secrets (template.yaml `TargetSecretArns`, passed as
`TARGET_SECRETS`). Each secret is a JSON object of variable -> value. The values are only ever
handed to the policy loader: never logged, never part of an error message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from redis_scim import errors

_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*")


def parse_secret_ids(text: str | None) -> tuple[str, ...]:
    """The secret ids/ARNs of a comma-separated list (blank entries ignored)."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def connection_variables(secret_ids: Iterable[str], client: Any) -> dict[str, str]:
    """Every variable the secrets define. `client` is a boto3 Secrets Manager client.

    Raises `errors.ServiceUnavailable` when a secret cannot be read (the applier fails to start and
    its messages are retried) and `errors.PolicyError` when a secret is not a JSON object of
    upper-case variable names to strings, or two secrets define the same variable.
    """
    variables: dict[str, str] = {}
    defined_by: dict[str, str] = {}
    for secret_id in secret_ids:
        for name, value in _read(secret_id, client).items():
            if name in defined_by:
                raise errors.PolicyError(
                    f"target secrets {defined_by[name]} and {secret_id} both define {name}"
                )
            variables[name], defined_by[name] = value, secret_id
    return variables


def policy_environment(
    secret_ids: Iterable[str], client: Any, environment: Mapping[str, str]
) -> dict[str, str]:
    """`environment` plus the secrets' variables (which win), for `load_policy(env=...)`."""
    return {**environment, **connection_variables(secret_ids, client)}


def _read(secret_id: str, client: Any) -> dict[str, str]:
    try:
        text = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except (ClientError, BotoCoreError) as error:
        raise errors.ServiceUnavailable(f"target secret {secret_id} cannot be read: {error}") from None
    except KeyError:
        raise errors.PolicyError(f"target secret {secret_id} has no SecretString") from None
    try:
        content = json.loads(text)
    except ValueError:
        content = None
    if not isinstance(content, dict):
        raise errors.PolicyError(
            f'target secret {secret_id} must be a JSON object such as {{"PROD_CACHE_URL": "rediss://..."}}'
        )
    for name, value in content.items():
        if not _VARIABLE.fullmatch(name):
            raise errors.PolicyError(
                f"target secret {secret_id}: {name!r} is not a variable name (A-Z, 0-9, _)"
            )
        if not isinstance(value, str):
            raise errors.PolicyError(f"target secret {secret_id}: the value of {name} must be a string")
    return content
