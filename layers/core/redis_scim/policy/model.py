"""The validated policy: roles, the group→role map and the targets, as immutable objects.

Built only by `policy.loader`; everything here is already valid, so callers never re-check.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from redis_scim.directory import UserRecord
from redis_scim.errors import InvalidUsername, PolicyError
from redis_scim.policy.rules import keyless_writes_allowed
from redis_scim.policy.usernames import check_not_protected, render_username

GhostAction = Literal["report", "disable", "delete"]
RedisCredentials = Literal["scim-password", "external"]
ElastiCacheAuth = Literal["iam", "password"]
ElastiCacheEngine = Literal["valkey", "redis"]

# `default` exists on every server and on every ElastiCache user group; it is never managed.
ALWAYS_PROTECTED = frozenset({"default"})
ROLE_SETS_CACHED = 4096  # distinct (target, group names) whose roles a policy remembers


@lru_cache(maxsize=4096)
def group_key(display_name: str) -> str:
    """How group names are compared: NFC + casefold, as the Directory's uniqueness rule does."""
    # Cached: the reconciler asks for the same few group names once per user per target.
    return unicodedata.normalize("NFC", display_name).casefold()


@dataclass(frozen=True)
class Role:
    """A named set of ACL rules that becomes one selector of every user holding the role."""

    name: str
    rules: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    """What every target kind has: the username template, the allow list, ghosts, group overrides."""

    name: str
    username: str = "{userName}"
    allow: tuple[str, ...] = ("default",)
    ghosts: GhostAction = "report"
    # Per-group overrides of the top-level map: an entry replaces that group's roles on this
    # target, `[]` removes the group here; groups not named inherit the top-level mapping.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @cached_property  # asked once per user and target by the engine
    def protected_usernames(self) -> frozenset[str]:
        """Users the system never creates, changes or deletes on this target."""
        return ALWAYS_PROTECTED | frozenset(self.allow)


@dataclass(frozen=True, kw_only=True)
class RedisTargetConfig(TargetConfig):
    """A self-managed Redis/Valkey: standalone, primary + replicas (`nodes`) or a cluster."""

    kind: Literal["redis"] = "redis"
    # The controller's connection; may hold a password, hence kept out of repr.
    url: str = field(repr=False)
    nodes: tuple[str, ...] = field(default=(), repr=False)
    credentials: RedisCredentials = "scim-password"
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @property
    def controller_username(self) -> str | None:
        """The ACL user the controller connects as (from `url`), or None for `default`."""
        return urlsplit(self.url).username or None

    @cached_property
    def protected_usernames(self) -> frozenset[str]:
        own = self.controller_username
        return super().protected_usernames | ({own} if own else set())

    @property
    def redacted_url(self) -> str:
        """`url` with the password replaced by `***`, for logs and errors."""
        return redact_url(self.url)


@dataclass(frozen=True, kw_only=True)
class ElastiCacheTargetConfig(TargetConfig):
    """An ElastiCache (Valkey or Redis OSS) user group managed through the ElastiCache API."""

    kind: Literal["elasticache"] = "elasticache"
    region: str
    engine: ElastiCacheEngine
    user_group: str
    auth: ElastiCacheAuth = "iam"


AnyTarget = RedisTargetConfig | ElastiCacheTargetConfig


@dataclass(frozen=True)
class Policy:
    """The whole policy file. Group names in `groups` keep their spelling; matching folds case."""

    source: str
    roles: Mapping[str, Role]
    groups: Mapping[str, tuple[str, ...]]
    targets: Mapping[str, AnyTarget]
    module_commands: tuple[str, ...] = ()
    module_categories: tuple[str, ...] = ()
    version: int = 1
    # Per target, derived once: the reconciler compiles every user of a target in one pass, and
    # these are the same for all of them. The policy is immutable, so they never go stale.
    _group_roles: dict[str, dict[str, tuple[str, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _protected: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    # (target, group names) -> roles: users share a few group sets. Emptied when it grows past
    # ROLE_SETS_CACHED so that a population of unusual group sets cannot grow it without bound.
    _role_sets: dict[tuple[str, tuple[str, ...]], tuple[Role, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def warnings(self) -> list[str]:
        """Risks the loader reports but does not refuse (the issue's own example has one):
        roles whose key patterns do not stop keyspace-wide writes such as FLUSHALL."""
        return [
            f"{self.source}: role {role.name!r} allows {', '.join(c.upper() for c in commands)}, which "
            f"ignore key patterns; add {' '.join('-' + c for c in commands)} to the role unless intended"
            for role in self.roles.values()
            if (commands := keyless_writes_allowed(role.rules))
        ]

    def target(self, name: str) -> AnyTarget:
        try:
            return self.targets[name]
        except KeyError:
            raise PolicyError(f"{self.source}: unknown target {name!r}") from None

    def group_roles(self, target: str) -> dict[str, tuple[str, ...]]:
        """The effective group→role-names map of `target`, keyed by `group_key(displayName)`."""
        return dict(self._effective_group_roles(target))

    def _effective_group_roles(self, target: str) -> dict[str, tuple[str, ...]]:
        effective = self._group_roles.get(target)
        if effective is None:
            effective = {group_key(name): roles for name, roles in self.groups.items()}
            effective.update({group_key(name): roles for name, roles in self.target(target).groups.items()})
            self._group_roles[target] = effective
        return effective

    def roles_for(self, target: str, group_names: Iterable[str]) -> list[Role]:
        """The distinct roles the groups grant on `target`, sorted by role name."""
        return list(self.role_set(target, group_names))

    def role_set(self, target: str, group_names: Iterable[str]) -> tuple[Role, ...]:
        """`roles_for` as a tuple, cached per (target, group names)."""
        key = (target, tuple(group_names))
        roles = self._role_sets.get(key)
        if roles is None:
            mapping = self._effective_group_roles(target)
            names = {role for group in key[1] for role in mapping.get(group_key(group), ())}
            roles = tuple(self.roles[name] for name in sorted(names))
            if len(self._role_sets) >= ROLE_SETS_CACHED:
                self._role_sets.clear()
            self._role_sets[key] = roles
        return roles

    def username_for(self, target: str, user: UserRecord) -> str:
        """The user's Redis username on `target`; InvalidUsername if unsafe or protected."""
        config = self.target(target)
        username = render_username(config.username, user)
        protected = self._protected.get(target)
        if protected is None:
            protected = self._protected[target] = config.protected_usernames
        try:
            check_not_protected(username, protected)
        except InvalidUsername as error:
            raise InvalidUsername(f"user {user.id}: {error.detail}") from None
        return username

    def username_collisions(self, target: str, users: Iterable[UserRecord]) -> dict[str, list[str]]:
        """Usernames (case-folded) that more than one of `users` would get on `target` → their ids.

        Two SCIM users must never share one Redis user; callers report these, never merge them.
        Users whose name is invalid are left out: `username_for` reports them on its own.
        """
        owners: dict[str, list[str]] = {}
        for user in users:
            try:
                username = self.username_for(target, user)
            except InvalidUsername:
                continue
            owners.setdefault(username.casefold(), []).append(user.id)
        return {username: ids for username, ids in owners.items() if len(ids) > 1}


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    userinfo = f"{parts.username}:***" if parts.username else ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc}"))
