"""The token list as kept in AWS Secrets Manager, read through powertools Parameters with a short cache.

The cache is short (60 s by default) so a revoked token stops working within a minute, while a
warm function still makes at most one Secrets Manager call per minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

from redis_scim import errors
from redis_scim.auth.tokens import TokenEntry, parse_token_list
from redis_scim.observability import logger

DEFAULT_MAX_AGE_SECONDS = 60


class SecretsManagerTokens:
    """A `TokenSource` reading the JSON token list from one Secrets Manager secret."""

    def __init__(self, secret_id: str, client: Any, *, max_age: int = DEFAULT_MAX_AGE_SECONDS) -> None:
        self._secret_id = secret_id
        self._provider = SecretsProvider(boto3_client=client)
        self._max_age = max_age

    def entries(self) -> Sequence[TokenEntry]:
        try:
            value = self._provider.get(self._secret_id, max_age=self._max_age, transform="json")
            return parse_token_list(value)
        except (GetParameterError, TransformParameterError, ValueError) as exc:
            # A missing, unreadable or malformed secret is our outage, not the client's fault:
            # answer 503 (IdPs retry) and keep the reason in the log only.
            logger.error(
                "cannot read the SCIM token list", extra={"secret_id": self._secret_id, "error": str(exc)}
            )
            raise errors.ServiceUnavailable("The token store is unavailable; retry later.") from exc
