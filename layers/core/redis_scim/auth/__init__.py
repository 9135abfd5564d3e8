"""Bearer-token authentication of the SCIM API: tokens stored as SHA-256 hashes, checked in constant time."""

from redis_scim.auth.admin import CreatedToken, TokenAdminError, TokenList, parse_duration, token_state
from redis_scim.auth.secret import SecretsManagerTokens
from redis_scim.auth.tokens import (
    AuthenticationFailed,
    BearerAuthenticator,
    RejectionReason,
    TokenEntry,
    TokenSource,
    TokenUse,
    generate_token,
    hash_token,
    parse_token_list,
)

__all__ = [
    "AuthenticationFailed",
    "BearerAuthenticator",
    "CreatedToken",
    "RejectionReason",
    "SecretsManagerTokens",
    "TokenAdminError",
    "TokenEntry",
    "TokenList",
    "TokenSource",
    "TokenUse",
    "generate_token",
    "hash_token",
    "parse_duration",
    "parse_token_list",
    "token_state",
]
