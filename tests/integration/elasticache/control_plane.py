"""A test double of the ElastiCache RBAC control plane, served by moto to real boto3 clients.

moto (5.2) implements CreateUser/DescribeUsers/DeleteUser with users that are always `active`, and
neither ModifyUser nor any user-group call. `ElastiCacheControlPlane.install()` adds those to moto's
ElastiCache responder (and wraps the three user calls with the documented states), so a boto3
client built inside `mock_aws()` goes through its real parameter validation, query serialization,
HTTP round trip and XML parsing; errors come back as the real wire codes (`InvalidUserState`, …)
and surface as the client's modelled exceptions (`client.exceptions.InvalidUserStateFault`).

Documented behaviour it reproduces (sources in ../shared/REDIS_ACL_FACTS.md §2, cited per rule):
- users and groups pass through `creating` / `modifying` / `deleting` and become `active` after
  `settle_delay` seconds (None: only when `settle()` is called); ModifyUser/DeleteUser on a user
  that is not active fail with InvalidUserState, ModifyUserGroup/DeleteUserGroup on a group that
  is not active with InvalidUserGroupState (§2.7);
- a group change is reported in `PendingChanges` while `modifying` and applied when it settles (§2.7);
- ModifyUserGroup naming a non-member in UserIdsToRemove rejects the whole request, adds included
  (InvalidParameterValue, §2.7); more than `users_per_group` (100) members → UserGroupQuotaExceeded (§2.8);
- Redis OSS groups must always hold a user named `default` (DefaultUserRequired; deleting that user
  while it is in such a group: DefaultUserAssociatedToUserGroup) (§2.6); Valkey groups refuse users
  without a password or IAM (§2.2); one user name per group (DuplicateUserName, API model);
- access strings may hold neither `reset` nor passwords (§2.2), and are reported as the engine
  renders them (ModifyUser's example answer in §2.2); ModifyUser replaces the whole string;
- passwords: 1 to 2 of 16 to 128 printable characters without `,` `"` `/` `@` (§2.4); IAM needs user
  id == user name (§2.5); ids are stored lowercase (§2.1);
- DeleteUser removes the user from its groups (§2.7).

The group attached with `attach()` stands for a cache: each member (its user name, passwords and
access string) is mirrored onto a real Valkey when its change settles — `ACL SETUSER <name> reset …`
on create/modify (live connections stay, as ModifyUser keeps them), `ACL DELUSER` on removal from
the group or deletion (connections are dropped, as ElastiCache does). An IAM user logs in to the
mirror with `iam_token(name)`: the double stands in for ElastiCache's SigV4 token check.
Not modelled (unverified or not used): AppendAccessString, tags on groups, replication groups.
Assumptions where AWS documents nothing: adding a user that already is a member is refused like
removing a non-member (InvalidParameterValue); user names with spaces are refused (the engine
cannot hold them); a user still `creating` may be added to a group;
a removal or deletion takes effect on the mirror when it settles, not when it is requested.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from moto.core.responses import ActionResult
from moto.elasticache.exceptions import ElastiCacheException
from moto.elasticache.models import ElastiCacheBackend, User
from moto.elasticache.responses import ElastiCacheResponse

USER_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
FORBIDDEN_PASSWORD_CHARACTERS = frozenset(',"/@')
PASSWORD_RULES = re.compile(r"^(?:[><#!].*|nopass|resetpass)$")
DEFAULT_USERS_PER_GROUP = 100
_MIRROR_ADMIN = "elasticache-control-plane"
_PROBE = "elasticache-control-plane-probe"


class Fault(ElastiCacheException):
    """An ElastiCache error with its wire code (the API model's `error.code`)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass
class UserGroup:
    user_group_id: str
    engine: str
    arn: str
    user_ids: list[str]
    status: str = "creating"
    pending_add: list[str] = field(default_factory=list)
    pending_remove: list[str] = field(default_factory=list)

    def to_response(self) -> dict[str, Any]:
        response: dict[str, Any] = {
            "UserGroupId": self.user_group_id,
            "Status": self.status,
            "Engine": self.engine,
            "UserIds": list(self.user_ids),
            "MinimumEngineVersion": "6.0",
            "ReplicationGroups": [],
            "ServerlessCaches": [],
            "ARN": self.arn,
        }
        if self.pending_add or self.pending_remove:
            response["PendingChanges"] = {
                "UserIdsToAdd": list(self.pending_add),
                "UserIdsToRemove": list(self.pending_remove),
            }
        return response


@dataclass
class _Transition:
    settles_at: float | None
    complete: Callable[[], None]


@dataclass
class Call:
    """One request the double answered (for tests that count or inspect calls)."""

    operation: str
    params: dict[str, Any]
    error: str | None = None


class ElastiCacheControlPlane:
    """The double's state: users live in moto's backend, groups and transitions here."""

    def __init__(
        self,
        mirror: redis.Redis,
        *,
        settle_delay: float | None = 0.0,
        users_per_group: int = DEFAULT_USERS_PER_GROUP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_delay = settle_delay
        self.users_per_group = users_per_group
        self.clock = clock
        self.calls: list[Call] = []
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, str], dict[str, UserGroup]] = {}
        self._transitions: dict[tuple[str, str], _Transition] = {}
        self._attached: str | None = None
        self._iam_secret = secrets.token_hex(8)
        self._originals: dict[str, Any] = {}
        self._mirror = self._take_over(mirror)

    # --- wiring into moto ------------------------------------------------------------------------

    def install(self) -> ElastiCacheControlPlane:
        """Serve the RBAC calls from this double (inside `mock_aws()`); `uninstall()` restores moto."""
        handlers = {
            "create_user": self._create_user,
            "describe_users": self._describe_users,
            "modify_user": self._modify_user,
            "delete_user": self._delete_user,
            "create_user_group": self._create_user_group,
            "describe_user_groups": self._describe_user_groups,
            "modify_user_group": self._modify_user_group,
            "delete_user_group": self._delete_user_group,
        }
        for name, handler in handlers.items():
            self._originals[name] = ElastiCacheResponse.__dict__.get(name)
            setattr(ElastiCacheResponse, name, self._responder(name, handler))
        return self

    def uninstall(self) -> None:
        for name, original in self._originals.items():
            if original is None:
                delattr(ElastiCacheResponse, name)
            else:
                setattr(ElastiCacheResponse, name, original)
        self._originals.clear()

    def _responder(
        self, name: str, handler: Callable[[ElastiCacheResponse, ElastiCacheBackend, dict[str, Any]], Any]
    ) -> Callable[[ElastiCacheResponse], ActionResult]:
        def respond(response: ElastiCacheResponse) -> ActionResult:
            params = response._get_params()
            call = Call(name, dict(params))
            with self._lock:
                self.calls.append(call)
                backend = response.elasticache_backend
                self._settle_due()
                try:
                    return ActionResult(handler(response, backend, params))
                except ElastiCacheException as error:
                    call.error = error.code
                    raise

        return respond

    # --- test controls -----------------------------------------------------------------------------

    def settle(self) -> None:
        """Complete every pending transition now (as if the asynchronous work had finished)."""
        with self._lock:
            while self._transitions:
                key = next(iter(self._transitions))
                self._transitions.pop(key).complete()

    def attach(self, backend: ElastiCacheBackend, user_group_id: str) -> None:
        """Make the mirror Valkey stand for a cache using `user_group_id` (mirrors its members now)."""
        with self._lock:
            group = self._group(backend, user_group_id)
            self._attached = group.user_group_id
            for user_id in group.user_ids:
                self._mirror_user(backend.users[user_id])
            self._mirror_default(backend, group)

    def iam_token(self, user_name: str) -> str:
        """What the mirror accepts as a valid IAM auth token of `user_name`."""
        return f"iam-token-{self._iam_secret}-{user_name}"

    def groups(self, backend: ElastiCacheBackend) -> dict[str, UserGroup]:
        return self._groups.setdefault((backend.account_id, backend.region_name), {})

    def operations(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.operation == name]

    # --- users -------------------------------------------------------------------------------------

    def _create_user(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> User:
        user_id = _valid_id(params.get("UserId", ""), "UserId").lower()
        mode = params.get("AuthenticationMode") or {}
        passwords = list(params.get("Passwords") or mode.get("Passwords") or [])
        _check_passwords(passwords)
        if any(char.isspace() or char == "\0" for char in params.get("UserName", "")):
            # The engine refuses such names ("Usernames can't contain spaces or null characters").
            raise Fault("InvalidParameterValue", "User names cannot contain spaces.")
        if mode.get("Type") == "iam" and params.get("UserName") != user_id:
            raise Fault(
                "InvalidParameterValue", "IAM authentication requires the user name to equal the user id."
            )
        rendered = self._render(params.get("AccessString", ""))
        # moto's own CreateUser (its authentication-mode checks, duplicates) on the stored values.
        params["UserId"], params["AccessString"] = user_id, rendered  # ids are stored lowercase
        user = self._originals["create_user"](response).result
        user.status = "creating"
        self._later(("user", user.id), lambda: setattr(user, "status", "active"))
        return user

    def _describe_users(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> dict[str, Any]:
        if params.get("UserId"):
            return {"Users": [self._user(backend, params["UserId"])]}
        users = [
            u for u in backend.users.values() if not params.get("Engine") or u.engine == params["Engine"]
        ]
        return _page(users, params, "Users")

    def _modify_user(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> User:
        user = self._user(backend, params["UserId"])
        _require_active("User", user.id, user.status, "InvalidUserState", "users")
        if params.get("AppendAccessString"):
            raise NotImplementedError("the double does not model AppendAccessString (semantics unverified)")
        mode = params.get("AuthenticationMode") or {}
        passwords = params.get("Passwords") or mode.get("Passwords")
        kind = mode.get("Type")
        if params.get("NoPasswordRequired"):
            kind = "no-password-required"
        elif passwords and not kind:
            kind = "password"
        if kind == "iam" and user.name != user.id:
            raise Fault(
                "InvalidParameterValue", "IAM authentication requires the user name to equal the user id."
            )
        if kind == "password" and not passwords:
            raise Fault(
                "InvalidParameterCombination",
                "A user with Authentication Mode: password, must have at least one password",
            )
        if kind in ("iam", "no-password-required") and passwords:
            raise Fault(
                "InvalidParameterCombination",
                f"Password field is not allowed with authentication type: {kind}",
            )
        if kind == "no-password-required" and any(
            self.groups(backend)[g].engine == "valkey" for g in user.user_group_ids
        ):
            raise Fault(
                "InvalidParameterValue", "Valkey user groups cannot contain users without a password or IAM."
            )
        _check_passwords(list(passwords or []))
        access = self._render(params["AccessString"]) if params.get("AccessString") else None
        if access is not None:
            user.access_string = access
        if kind is not None:
            user.authentication_type = kind
            user.no_password_required = kind == "no-password-required"
            user.passwords = list(passwords or [])
        user.status = "modifying"

        def complete() -> None:
            user.status = "active"
            if self._attached in user.user_group_ids:
                self._mirror_user(user)

        self._later(("user", user.id), complete)
        return user

    def _delete_user(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> User:
        user = self._user(backend, params["UserId"])
        groups = self.groups(backend)
        if user.name == "default" and any(groups[g].engine == "redis" for g in user.user_group_ids):
            raise Fault(
                "DefaultUserAssociatedToUserGroup",
                f"User {user.id} is the default user of a Redis OSS user group and cannot be deleted.",
            )
        _require_active("User", user.id, user.status, "InvalidUserState", "users")
        user.status = "deleting"

        def complete() -> None:
            for group_id in list(user.user_group_ids):
                group = groups[group_id]
                group.user_ids.remove(user.id)
                if group_id == self._attached:
                    self._unmirror_user(user)
            user.user_group_ids.clear()
            backend.users.pop(user.id, None)

        self._later(("user", user.id), complete)
        return user

    # --- user groups -------------------------------------------------------------------------------

    def _create_user_group(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> dict[str, Any]:
        group_id = _valid_id(params.get("UserGroupId", ""), "UserGroupId").lower()
        engine = params.get("Engine", "").lower()
        if engine not in ("redis", "valkey"):
            raise Fault("InvalidParameterValue", f'Unknown parameter for Engine: "{engine}"')
        groups = self.groups(backend)
        if group_id in groups:
            raise Fault("UserGroupAlreadyExists", f"User group {group_id} already exists.")
        members = [self._user(backend, user_id) for user_id in params.get("UserIds") or []]
        self._check_members(engine, group_id, members, members)
        arn = f"arn:aws:elasticache:{backend.region_name}:{backend.account_id}:usergroup:{group_id}"
        group = UserGroup(group_id, engine, arn, [user.id for user in members])
        for user in members:
            user.user_group_ids.append(group_id)
        groups[group_id] = group
        self._later(("group", group_id), lambda: setattr(group, "status", "active"))
        return group.to_response()

    def _describe_user_groups(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> dict[str, Any]:
        if params.get("UserGroupId"):
            return {"UserGroups": [self._group(backend, params["UserGroupId"]).to_response()]}
        return _page([g.to_response() for g in self.groups(backend).values()], params, "UserGroups")

    def _modify_user_group(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> dict[str, Any]:
        group = self._group(backend, params["UserGroupId"])
        _require_active(
            "User group", group.user_group_id, group.status, "InvalidUserGroupState", "user groups"
        )
        to_add = [self._user(backend, user_id) for user_id in params.get("UserIdsToAdd") or []]
        to_remove = [user_id.lower() for user_id in params.get("UserIdsToRemove") or []]
        for user_id in to_remove:
            if user_id not in group.user_ids:
                # The whole request fails, the adds with it (REDIS_ACL_FACTS.md §2.7, terraform #49948).
                raise Fault(
                    "InvalidParameterValue", f"{user_id} is not a member of user group {group.user_group_id}"
                )
        for user in to_add:
            if user.id in group.user_ids:
                raise Fault(
                    "InvalidParameterValue",
                    f"{user.id} is already a member of user group {group.user_group_id}",
                )
        remaining = [backend.users[u] for u in group.user_ids if u not in to_remove]
        self._check_members(group.engine, group.user_group_id, [*remaining, *to_add], to_add)
        group.status = "modifying"
        group.pending_add = [user.id for user in to_add]
        group.pending_remove = to_remove

        def complete() -> None:
            # A user deleted meanwhile has already left every group (and the mirror).
            for user_id in group.pending_remove:
                user = backend.users.get(user_id)
                if user is None or user_id not in group.user_ids:
                    continue
                group.user_ids.remove(user_id)
                user.user_group_ids.remove(group.user_group_id)
                if group.user_group_id == self._attached:
                    self._unmirror_user(user)
            for user_id in group.pending_add:
                user = backend.users.get(user_id)
                if user is None:
                    continue
                group.user_ids.append(user_id)
                user.user_group_ids.append(group.user_group_id)
                if group.user_group_id == self._attached:
                    self._mirror_user(user)
            if group.user_group_id == self._attached:
                self._mirror_default(backend, group)
            group.pending_add, group.pending_remove, group.status = [], [], "active"

        self._later(("group", group.user_group_id), complete)
        return group.to_response()

    def _delete_user_group(
        self, response: ElastiCacheResponse, backend: ElastiCacheBackend, params: dict[str, Any]
    ) -> dict[str, Any]:
        group = self._group(backend, params["UserGroupId"])
        _require_active(
            "User group", group.user_group_id, group.status, "InvalidUserGroupState", "user groups"
        )
        group.status = "deleting"

        def complete() -> None:
            for user_id in group.user_ids:
                backend.users[user_id].user_group_ids.remove(group.user_group_id)
                if group.user_group_id == self._attached:
                    self._unmirror_user(backend.users[user_id])
            del self.groups(backend)[group.user_group_id]

        self._later(("group", group.user_group_id), complete)
        return group.to_response()

    def _check_members(self, engine: str, group_id: str, members: list[User], added: list[User]) -> None:
        if len(members) > self.users_per_group:
            raise Fault("UserGroupQuotaExceeded", "The number of users exceeds the user group limit")
        names = [user.name for user in members]
        if len(set(names)) != len(names):
            raise Fault(
                "DuplicateUserName", f"User group {group_id} cannot contain two users with one user name."
            )
        if engine == "redis" and "default" not in names:
            raise Fault(
                "DefaultUserRequired", "User group needs to contain a user with the user name default."
            )
        if engine == "valkey" and any(_without_password(user) for user in added):
            raise Fault(
                "InvalidParameterValue", "Valkey user groups cannot contain users without a password or IAM."
            )

    # --- state helpers -----------------------------------------------------------------------------

    def _user(self, backend: ElastiCacheBackend, user_id: str) -> User:
        user = backend.users.get(user_id.lower())
        if user is None:
            raise Fault("UserNotFound", f"User {user_id} not found.")
        return user

    def _group(self, backend: ElastiCacheBackend, group_id: str) -> UserGroup:
        group = self.groups(backend).get(group_id.lower())
        if group is None:
            raise Fault("UserGroupNotFound", f"User group {group_id} not found.")
        return group

    def _later(self, key: tuple[str, str], complete: Callable[[], None]) -> None:
        # With no delay the answer still shows the transitional status; the next call sees it settled.
        settles_at = None if self.settle_delay is None else self.clock() + self.settle_delay
        self._transitions[key] = _Transition(settles_at, complete)

    def _settle_due(self) -> None:
        now = self.clock()
        for key, transition in list(self._transitions.items()):
            if transition.settles_at is not None and transition.settles_at <= now:
                del self._transitions[key]
                transition.complete()

    # --- the mirror --------------------------------------------------------------------------------

    def _take_over(self, mirror: redis.Redis) -> redis.Redis:
        """Manage the mirror as a user of its own, so mirroring `default` never locks the double out."""
        password = secrets.token_hex(16)
        mirror.execute_command(
            "ACL", "SETUSER", _MIRROR_ADMIN, "reset", "on", f">{password}", "~*", "&*", "+@all"
        )
        kwargs = mirror.connection_pool.connection_kwargs
        return redis.Redis(
            host=kwargs.get("host", "127.0.0.1"),
            port=kwargs.get("port", 6379),
            username=_MIRROR_ADMIN,
            password=password,
            decode_responses=True,
        )

    def _render(self, access_string: str) -> str:
        """The access string as the engine reports it; InvalidParameterValue if ElastiCache refuses it."""
        tokens = split_access_string(access_string)
        if any(token.lower() == "reset" or PASSWORD_RULES.match(token) for token in tokens):
            raise Fault("InvalidParameterValue", "Access string cannot contain reset or passwords.")
        try:
            self._mirror.execute_command("ACL", "SETUSER", _PROBE, "reset", *tokens)
            line = next(
                u for u in self._mirror.execute_command("ACL", "LIST") if u.startswith(f"user {_PROBE} ")
            )
        except redis.ResponseError as error:
            raise Fault("InvalidParameterValue", f"Invalid access string: {error}") from None
        finally:
            self._mirror.execute_command("ACL", "DELUSER", _PROBE)
        return line.removeprefix(f"user {_PROBE} ")

    def _mirror_user(self, user: User) -> None:
        if user.authentication_type == "iam":
            credentials = [f">{self.iam_token(user.name)}"]
        elif _without_password(user):
            credentials = ["nopass"]
        else:
            credentials = [f">{password}" for password in user.passwords]
        access = [t for t in split_access_string(user.access_string) if not t.startswith("#")]
        self._mirror.execute_command("ACL", "SETUSER", user.name, "reset", *credentials, *access)

    def _unmirror_user(self, user: User) -> None:
        if user.name == "default":
            self._mirror.execute_command("ACL", "SETUSER", "default", "reset", "off")
            self._mirror.execute_command("CLIENT", "KILL", "USER", "default")
        else:
            self._mirror.execute_command("ACL", "DELUSER", user.name)

    def _mirror_default(self, backend: ElastiCacheBackend, group: UserGroup) -> None:
        """A cache whose group has no user named `default` has its default user switched off."""
        if not any(backend.users[u].name == "default" for u in group.user_ids):
            self._mirror.execute_command("ACL", "SETUSER", "default", "reset", "off")
            self._mirror.execute_command("CLIENT", "KILL", "USER", "default")


def split_access_string(access_string: str) -> list[str]:
    """Rules of an access string; a selector `( … )` is one rule, as ACL SETUSER takes it."""
    tokens: list[str] = []
    depth, current = 0, ""
    for char in access_string:
        if char.isspace() and depth == 0:
            if current:
                tokens.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current:
        tokens.append(current)
    return tokens


def _without_password(user: User) -> bool:
    return bool(user.no_password_required) or user.authentication_type == "no-password-required"


def _valid_id(value: str, name: str) -> str:
    # botocore validates lengths but not patterns; the service does (InvalidParameterValue).
    if not USER_ID.fullmatch(value):
        raise Fault("InvalidParameterValue", f"{name} must match [a-zA-Z][a-zA-Z0-9-]*: {value!r}")
    return value


def _check_passwords(passwords: list[str]) -> None:
    if len(passwords) > 2:
        raise Fault("InvalidParameterValue", "A user can have at most two passwords.")
    for password in passwords:
        if not 16 <= len(password) <= 128:
            raise Fault("InvalidParameterValue", "Passwords length must be between 16-128 characters.")
        if not password.isprintable() or FORBIDDEN_PASSWORD_CHARACTERS & set(password):
            raise Fault("InvalidParameterValue", 'Passwords must be printable and cannot contain , " / or @.')


def _require_active(kind: str, name: str, status: str, code: str, plural: str) -> None:
    if status != "active":
        raise Fault(code, f"{kind} {name} has status {status}. Only active {plural} can be modified.")


def _page(items: list[Any], params: dict[str, Any], key: str) -> dict[str, Any]:
    start = int(params.get("Marker") or 0)
    size = int(params.get("MaxRecords") or 100)
    page: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        page["Marker"] = str(start + size)
    return page
