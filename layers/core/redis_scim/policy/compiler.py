"""The ACL compiler: one user's desired state on one target → the exact ACL to write.

One selector per role, so a user in several roles gets exactly the union of what each role allows
on its own (read on A + write on B never becomes write on A). Self-managed targets get an
`ACL SETUSER <name> reset …` argument list; ElastiCache targets get an access string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from redis_scim.directory import UserRecord
from redis_scim.errors import InvalidValue
from redis_scim.policy.model import Policy, RedisTargetConfig, Role

Credential = Literal["scim-password", "external", "iam", "password"]
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DesiredAcl:
    """What one user must look like on one target. Equal values mean nothing to change.

    `credential` is the target's mode: `scim-password` (a `#<sha256>` rule, or `resetpass` until a
    password arrives), `external` (no password rule: LDAP module, TLS certificates), or the
    ElastiCache modes `iam`/`password` whose secrets live outside the access string.
    """

    target: str
    username: str
    enabled: bool
    credential: Credential
    roles: tuple[str, ...]
    selectors: tuple[str, ...]
    password_sha256: str | None = field(default=None, repr=False)

    def setuser_rules(self) -> list[str]:
        """Arguments after `ACL SETUSER <username>`: a full desired-state write (SETUSER is cumulative)."""
        return ["reset", "on" if self.enabled else "off", *self._password_rules(), *self.selectors]

    def access_string(self) -> str:
        """The ElastiCache access string: no `reset` and no passwords (the API manages those), an
        explicit `on`/`off`, empty root permissions, then the same selectors."""
        state = "on" if self.enabled else "off"
        return " ".join([state, "-@all", "resetkeys", "resetchannels", *self.selectors])

    def describe(self) -> str:
        """The SETUSER rules with the password hash redacted, for audit records and logs."""
        rules = self.setuser_rules()
        if self.password_sha256:
            rules = ["#<redacted>" if rule == f"#{self.password_sha256}" else rule for rule in rules]
        return " ".join(rules)

    def _password_rules(self) -> list[str]:
        if self.credential != "scim-password":
            return []
        return [f"#{self.password_sha256}"] if self.password_sha256 else ["resetpass"]


def selector(role: Role) -> str:
    # A new selector's channel access follows the server's `acl-pubsub-default`, which may be
    # `allchannels`: start every selector from no channels so only the role's own `&` rules count.
    return "(" + " ".join(("resetchannels", *role.rules)) + ")"


@lru_cache(maxsize=1024)
def _compiled_roles(roles: tuple[Role, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Role names and selectors of a role set. Cached: users share a few role sets, so the reconciler
    builds each selector once per run instead of once per user, and equal role sets share one
    selectors tuple in memory."""
    return tuple(role.name for role in roles), tuple(selector(role) for role in roles)


def compile_user(
    policy: Policy, target: str, user: UserRecord, group_names: Sequence[str]
) -> DesiredAcl | None:
    """The user's desired ACL on `target`, or None when no group maps to a role there (no ACL user).

    Raises `InvalidUsername` when the username template gives an unsafe or protected name.
    """
    roles = policy.role_set(target, group_names)
    if not roles:
        return None
    config = policy.target(target)
    username = policy.username_for(target, user)
    credential: Credential
    password_sha256 = None
    if isinstance(config, RedisTargetConfig):
        credential = config.credentials
        if credential == "scim-password" and user.password_sha256:
            password_sha256 = user.password_sha256.lower()
            if not _SHA256_HEX.fullmatch(password_sha256):
                raise InvalidValue(f"user {user.id}: the stored password hash is not a SHA-256 hex digest")
    else:
        credential = config.auth
    role_names, selectors = _compiled_roles(roles)
    return DesiredAcl(
        target=target,
        username=username,
        enabled=user.active,
        credential=credential,
        roles=role_names,
        selectors=selectors,
        password_sha256=password_sha256,
    )
