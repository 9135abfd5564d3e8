"""The one error hierarchy of the core. Each error knows its HTTP status and SCIM `scimType`.

Every layer raises these; the SCIM handler turns them into RFC 7644 §3.12 Error responses in one
place, so a client error can never surface as a 5xx.
"""

from __future__ import annotations


class RedisScimError(Exception):
    """Base of every error the core raises on purpose."""

    status: int = 500
    scim_type: str | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- client errors (4xx) -------------------------------------------------------------------------


class InvalidSyntax(RedisScimError):
    status, scim_type = 400, "invalidSyntax"


class InvalidFilter(RedisScimError):
    status, scim_type = 400, "invalidFilter"


class InvalidValue(RedisScimError):
    status, scim_type = 400, "invalidValue"


class InvalidPath(RedisScimError):
    status, scim_type = 400, "invalidPath"


class NoTarget(RedisScimError):
    status, scim_type = 400, "noTarget"


class Mutability(RedisScimError):
    status, scim_type = 400, "mutability"


class TooMany(RedisScimError):
    status, scim_type = 400, "tooMany"


class Unauthorized(RedisScimError):
    status = 401


class NotFound(RedisScimError):
    status = 404


class MethodNotAllowed(RedisScimError):
    status = 405


class Uniqueness(RedisScimError):
    status, scim_type = 409, "uniqueness"


class PreconditionFailed(RedisScimError):
    """The client's If-Match did not match the resource's current version."""

    status = 412


class PayloadTooLarge(RedisScimError):
    status = 413


class UnsupportedMediaType(RedisScimError):
    status = 415


class NotImplementedFeature(RedisScimError):
    status = 501


# --- server-side conditions ----------------------------------------------------------------------


class VersionConflict(RedisScimError):
    """A concurrent writer changed the resource between read and write.

    Raised by the Directory when an `expected_version` no longer holds. The SCIM handler retries
    internally when the client sent no If-Match, and answers 412 when it did.
    """

    status = 412


class ServiceUnavailable(RedisScimError):
    """A dependency is throttling or unreachable; the client should retry later."""

    status = 503


class PolicyError(RedisScimError):
    """The policy file is invalid. The message names the key and the line."""

    status = 500


class InvalidUsername(InvalidValue):
    """A SCIM user cannot be given a safe Redis username (charset, length, a protected name).

    Raised by the policy's username rendering; the applier audits it and the SCIM API may reject
    the request with it. The value is never "fixed": a repaired name could collide with another.
    """


class SecretInAuditRecord(RedisScimError):
    """An audit record carried something shaped like a password or password hash.

    The audit writer refuses it (a last line of defence behind the redacted ACL descriptions):
    the change stays unaudited and retried until the leak is fixed, rather than a secret at rest.
    """

    status = 500


class UsernameHeld(ServiceUnavailable):
    """A Redis username is still held by a user whose deprovisioning or rename is not applied yet.

    Transient by nature: the applier fails the message so SQS retries it after the other user's
    change has released the name.
    """


class SyncIncomplete(RedisScimError):
    """Some targets did not converge for a user; the others did. The change is retried as a whole."""

    status = 503

    def __init__(self, user_id: str, failures: dict[str, str]) -> None:
        detail = "; ".join(f"{target}: {reason}" for target, reason in sorted(failures.items()))
        super().__init__(f"user {user_id} did not converge on every target ({detail})")
        self.user_id = user_id
        self.failures = dict(failures)
