"""Bearer-token authentication of the SCIM API: tokens stored as SHA-256 hashes, checked in constant time."""

from redis_scim.auth.secret import SecretsManagerTokens
from redis_scim.auth.tokens import (
    AuthenticationFailed,
    BearerAuthenticator,
    RejectionReason,
    TokenEntry,
    TokenSource,
    generate_token,
    hash_token,
    parse_token_list,
)

__all__ = [
    "AuthenticationFailed",
    "BearerAuthenticator",
    "RejectionReason",
    "SecretsManagerTokens",
    "TokenEntry",
    "TokenSource",
    "generate_token",
    "hash_token",
    "parse_token_list",
]
