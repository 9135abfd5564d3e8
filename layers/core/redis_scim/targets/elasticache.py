"""The ElastiCache target: users, access strings and user-group membership through the ElastiCache API.

ElastiCache refuses in-engine `ACL SETUSER`/`DELUSER`; a user exists on a cache when it is a member
of the cache's user group, with the access string ElastiCache keeps for it. So, for one user group:
create = CreateUser (+ add to the group); change = ModifyUser (it replaces the whole access string);
deactivate = remove from the group (ElastiCache drops the user's live connections) + ModifyUser
`off`; delete = remove from the group + DeleteUser. The whole user group is the target's one "node".

Coalescing: `apply_batch` applies many users' changes with one ModifyUserGroup (adds and removes
together); the single-user `Target` calls are one-element batches. Before it, membership is read,
so a removal never names a non-member (that would reject the whole request), and the group's
capacity is checked: additions that do not fit get no user at all (no user is ever half-applied),
the batch's revocations still go through, and `UserGroupFull` names who was not applied.
Users and groups pass through `creating`/`modifying`/`deleting`; a call refused with
InvalidUserState/InvalidUserGroupState is retried until the time budget ends, then
`TargetUnavailable` is raised and the message is left to SQS.

Names: every managed user's ElastiCache id *and* user name is the id `elasticache_ids` derives from
the username (IAM needs id == name), recorded in the user-id registry. A name the registry does not
own is looked up among the group's members by user name: such a hand-made user can be revoked
through the port (the reconciler's ghost actions), never given rights. Authentication: `iam` (no
password exists) or `password` (a generated password kept in a per-user Secrets Manager secret,
tagged with the SCIM id; `rotate_password` uses ElastiCache's two-password overlap).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from redis_scim import errors
from redis_scim.directory.ledger import Ledger
from redis_scim.directory.rules import MetricsSink
from redis_scim.policy import ElastiCacheTargetConfig
from redis_scim.targets import NodeAcl, Permissions, TargetUnavailable
from redis_scim.targets.elasticache_ids import UserIdRegistry, claim_user_id, derive_user_id

# AWS's documented "users per user group" quota (REDIS_ACL_FACTS.md §2.8); adjustable per account.
DEFAULT_USERS_PER_GROUP = 100
QUOTA_EXCEEDED_METRIC = "UserGroupQuotaExceeded"
BUSY_RETRY_METRIC = "ElastiCacheBusyRetries"
PASSWORD_BYTES = 30  # token_urlsafe(30) = 40 characters from [A-Za-z0-9_-]: none ElastiCache forbids
_BUSY = frozenset({"InvalidUserState", "InvalidUserGroupState"})
_PASSWORD_RULE_PREFIXES = (">", "<", "#", "!")
_PASSWORD_RULES = frozenset({"nopass", "resetpass"})
_NOT_A_MEMBER = "not-in-user-group"
# Up to this many users are described one call each; more are found in one paged listing
# (DescribeUsers pages 100 users per call, and a region holds at most ~1,000).
_DESCRIBE_ONE_BY_ONE = 8

logger = logging.getLogger(__name__)


class UserGroupFull(errors.RedisScimError):
    """The user group would exceed its users-per-group quota; nothing of the batch was applied."""

    status = 503


@dataclass(frozen=True)
class ElastiCacheAcl(NodeAcl):
    """One user as the ElastiCache control plane reports it, normalized so that equal means equal.

    `enabled` is the access string's `on`/`off`; `member` whether the user is in the target's user
    group (counting a pending change: read-back right after a write sees it); `authentication`
    `iam`, `password` or `no-password`. `settled` (not compared) is False while the user or the
    group is still being modified.
    """

    member: bool = True
    authentication: str = "iam"
    settled: bool = field(default=True, compare=False)

    def describe(self) -> str:
        parts = ["on" if self.enabled else "off", f"auth:{self.authentication}"]
        if not self.member:
            parts.append(_NOT_A_MEMBER)
        parts += sorted(self.flags)
        parts.append(self.root.rules())
        parts += sorted(f"({selector.rules()})" for selector in self.selectors)
        if not self.settled:
            parts.append("(pending)")
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class GroupMember:
    """A user of the target's user group, for the reconciler. `username` is the name the ownership
    ledger knows (the registry's reverse mapping), or the ElastiCache user name when unmanaged."""

    username: str
    user_id: str
    user_name: str
    access_string: str
    status: str
    managed: bool
    acl: ElastiCacheAcl


@dataclass(frozen=True)
class _Group:
    user_ids: frozenset[str]
    pending_add: frozenset[str]
    pending_remove: frozenset[str]
    status: str

    @property
    def effective(self) -> frozenset[str]:
        return (self.user_ids - self.pending_remove) | self.pending_add


_Kind = Literal["managed", "unmanaged", "new"]


@dataclass
class _Planned:
    username: str
    user_id: str
    desired: ElastiCacheAcl | None  # None: delete
    access_string: str | None
    current: dict[str, Any] | None  # DescribeUsers entry, None when absent
    kind: _Kind = "managed"  # unmanaged: not created by the system (its authentication is kept)


class ElastiCacheTarget:
    """One ElastiCache user group, driven through a boto3 `elasticache` client."""

    def __init__(
        self,
        config: ElastiCacheTargetConfig,
        *,
        client: Any,
        user_ids: UserIdRegistry,
        secrets_client: Any | None = None,
        ledger: Ledger | None = None,
        metrics: MetricsSink | None = None,
        users_per_group: int = DEFAULT_USERS_PER_GROUP,
        max_wait: float = 20.0,
        poll_interval: float = 2.0,
        remaining_time: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`max_wait`: seconds one call may wait for `modifying` to end; `remaining_time` (e.g. the
        Lambda context's remaining seconds minus a margin) caps it further."""
        if config.auth == "password" and secrets_client is None:
            raise ValueError(
                f"target {config.name!r}: password authentication needs a Secrets Manager client"
            )
        self.config = config
        self.name = config.name
        self.client = client
        self.user_ids = user_ids
        self.secrets_client = secrets_client
        self.ledger = ledger
        self.metrics = metrics
        self.users_per_group = users_per_group
        self.max_wait = max_wait
        self.poll_interval = poll_interval
        self.remaining_time = remaining_time
        self.clock = clock
        self.sleep = sleep
        self.node = f"{config.region}/{config.user_group}"

    @classmethod
    def from_config(
        cls, config: ElastiCacheTargetConfig, *, session: Any, user_ids: UserIdRegistry, **options: Any
    ) -> ElastiCacheTarget:
        """Build the clients from a boto3 session (standard retry mode absorbs API throttling)."""
        retries = Config(retries={"mode": "standard", "max_attempts": 5})
        secrets_client = None
        if config.auth == "password":
            secrets_client = session.client("secretsmanager", region_name=config.region, config=retries)
        return cls(
            config,
            client=session.client("elasticache", region_name=config.region, config=retries),
            user_ids=user_ids,
            secrets_client=secrets_client,
            **options,
        )

    def __repr__(self) -> str:
        return f"ElastiCacheTarget({self.name!r}, user_group={self.config.user_group!r})"

    # --- reads -------------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """One "node": the user group (ElastiCache applies it to every node of every attached cache)."""
        return [self.node]

    def read_users(self, usernames: Sequence[str]) -> dict[str, dict[str, NodeAcl | None]]:
        group = self._describe_group()
        ids = {username: user_id for username, (user_id, _) in self._resolve(usernames, group).items()}
        users = self._describe_users(list(ids.values()))
        result: dict[str, dict[str, NodeAcl | None]] = {}
        for username, user_id in ids.items():
            user = users.get(user_id)
            # A user being deleted is out of every group already: for the plan it is gone.
            present = user is not None and user.get("Status") != "deleting"
            result[username] = {self.node: _read_acl(user, group) if user and present else None}
        return result

    def canonical(self, rules: Sequence[str]) -> ElastiCacheAcl:
        access_string = access_string_from_rules(rules)
        enabled, root, selectors, flags = parse_access_string(access_string)
        return ElastiCacheAcl(
            enabled=enabled,
            password_hashes=frozenset(),
            nopass=False,
            root=root,
            selectors=selectors,
            flags=flags,
            member=enabled,  # a disabled user is taken out of the group: that is what cuts its sessions
            authentication=self.config.auth,
        )

    def list_usernames(self) -> dict[str, set[str]]:
        return {self.node: {member.username for member in self.list_users()}}

    def list_users(self) -> list[GroupMember]:
        """Every user of the group (pending additions included) with its access string."""
        group = self._describe_group()
        members = group.effective
        found: list[GroupMember] = []
        for user in self._all_users():
            if user["UserId"] not in members:
                continue
            owner = self.user_ids.username_of(self.name, user["UserId"])
            found.append(
                GroupMember(
                    username=owner or user["UserName"],
                    user_id=user["UserId"],
                    user_name=user["UserName"],
                    access_string=user.get("AccessString", ""),
                    status=user.get("Status", ""),
                    managed=owner is not None,
                    acl=_read_acl(user, group),
                )
            )
        return sorted(found, key=lambda member: member.username)

    # --- writes ------------------------------------------------------------------------------------

    def write_user(self, username: str, rules: Sequence[str]) -> None:
        self.apply_batch({username: rules})

    def delete_user(self, username: str) -> None:
        self.apply_batch({username: None})

    def disconnect_user(self, username: str) -> int:
        """ElastiCache has no CLIENT KILL for us: connections end when the user leaves the group.
        Takes it out if it still is a member; returns 1 when it did, else 0."""
        group = self._wait_for_group(self._deadline())
        user_id = self._resolve([username], group)[username][0]
        if user_id not in group.effective:
            return 0
        self._modify_group(add=[], remove=[user_id], deadline=self._deadline())
        self._wait_settled([user_id], self._deadline())
        return 1

    def apply_batch(self, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Apply many users' desired ACL rules (None: delete the user) with one ModifyUserGroup.

        Raises `UserGroupFull` before changing anything when the group cannot take the additions,
        `TargetUnavailable` when the control plane stays busy past the time budget or fails.
        """
        if not changes:
            return
        deadline = self._deadline()
        planned, refused = self._plan_all(changes, deadline)
        if refused:
            # One user that may not be changed (protected, or its id taken by a hand-made user)
            # must not hold up the others: apply the rest, then report it.
            self.apply_batch({name: rules for name, rules in changes.items() if name not in refused})
            raise next(iter(refused.values()))
        group = self._wait_for_group(deadline)
        members = group.effective
        add = [
            p.user_id
            for p in planned
            if p.desired is not None and p.desired.member and p.user_id not in members
        ]
        remove = [
            p.user_id
            for p in planned
            if p.current is not None and (p.desired is None or not p.desired.member) and p.user_id in members
        ]
        size_after = len(members) + len(add) - len(remove)
        if add and size_after > self.users_per_group:
            self._refuse_additions(changes, planned, add, size_after)
        created = [p for p in planned if p.desired is not None and p.current is None]
        for plan in created:
            self._create_user(plan, deadline)
        try:
            if add or remove:
                self._wait_settled([p.user_id for p in created], deadline)
                self._modify_group(add=add, remove=remove, deadline=deadline)
        except UserGroupFull:
            # The service's quota was lower than ours: undo the users this batch created, so
            # nothing of the batch stays half-applied, and report.
            for plan in created:
                self._call("delete_user", deadline, UserId=plan.user_id)
                self._delete_secret(plan.user_id)
            raise
        for plan in planned:
            if plan.desired is not None and plan.current is not None:
                self._modify_user(plan, deadline)
            elif plan.desired is None and plan.current is not None:
                self._call("delete_user", deadline, UserId=plan.user_id, tolerate={"UserNotFound"})
                self._delete_secret(plan.user_id)
        self._wait_settled(
            [p.user_id for p in planned if p.current is not None or p.desired is not None], deadline
        )

    def verify_revoked(self, username: str, *, deleted: bool) -> bool:
        """True once the user is out of the group for good (no pending addition, the removal
        settled: ElastiCache has then ended its connections) and, when `deleted`, the user is gone
        or being deleted; otherwise it must be `off`."""
        group = self._describe_group()
        user_id = self._resolve([username], group)[username][0]
        if user_id in group.user_ids or user_id in group.pending_add:
            return False
        user = self._describe_user(user_id)
        if user is None:
            return True
        if deleted:
            return user.get("Status") == "deleting"
        return not parse_access_string(user.get("AccessString", ""))[0]

    def rotate_password(self, username: str) -> None:
        """Start a password rotation with ElastiCache's two-password overlap.

        The user keeps its current password and gets a new one (ModifyUser with both); the secret's
        AWSCURRENT becomes the new one (the old one stays as AWSPREVIOUS). Clients still holding the
        old password keep working until the next rotation, which drops it.
        """
        if self.config.auth != "password" or self.secrets_client is None:
            raise errors.InvalidValue(f"target {self.name!r} does not use password authentication")
        user_id = derive_user_id(username)
        current = self._read_secret(user_id)
        if current is None:
            raise errors.NotFound(f"no password secret for {username!r} on target {self.name!r}")
        new = secrets.token_urlsafe(PASSWORD_BYTES)
        deadline = self._deadline()
        self._call(
            "modify_user",
            deadline,
            UserId=user_id,
            AuthenticationMode={"Type": "password", "Passwords": [current["password"], new]},
        )
        self._secrets(
            "put_secret_value",
            SecretId=self._secret_name(user_id),
            SecretString=self._secret_value(user_id, new),
        )
        self._wait_settled([user_id], deadline)

    def persist(self) -> None:
        """Nothing to do: ElastiCache keeps users and groups itself."""

    def close(self) -> None:
        """Nothing to release: boto3 clients hold no per-target connections."""

    # --- internals: planning -------------------------------------------------------------------------

    def _plan_all(
        self, changes: Mapping[str, Sequence[str] | None], deadline: float
    ) -> tuple[list[_Planned], dict[str, errors.InvalidUsername]]:
        """The batch's users planned, and the usernames refused (with why); nothing is claimed for
        a refused one."""
        resolved = self._resolve(list(changes), self._describe_group())
        planned: list[_Planned] = []
        refused: dict[str, errors.InvalidUsername] = {}
        for username, rules in changes.items():
            try:
                planned.append(self._plan(username, rules, *resolved[username]))
            except errors.InvalidUsername as error:
                refused[username] = error
        current = self._describe_users([plan.user_id for plan in planned])
        for plan in planned:
            plan.current = current.get(plan.user_id)
            if plan.kind == "new":
                try:
                    self._take_new_id(plan)
                except errors.InvalidUsername as error:
                    refused[plan.username] = error
            if plan.current is not None and plan.current.get("Status") == "deleting":
                # Gone for the plan; re-creating it must wait until ElastiCache has let go of the id.
                plan.current = None
                if plan.desired is not None:
                    self._wait_until_deleted(plan.user_id, deadline)
        return [plan for plan in planned if plan.username not in refused], refused

    def _plan(self, username: str, rules: Sequence[str] | None, user_id: str, kind: _Kind) -> _Planned:
        if username in self.config.protected_usernames:
            raise errors.InvalidUsername(f"{username!r} is protected on target {self.name!r}; never changed")
        desired = self.canonical(rules) if rules is not None else None
        access_string = access_string_from_rules(rules) if rules is not None else None
        if kind == "unmanaged" and desired is not None and desired.enabled:
            # Revoking a user the system did not create is always allowed (ghosts); granting
            # through it never: its credentials belong to whoever made it.
            raise errors.InvalidUsername(
                f"{username!r} on target {self.name!r} is a user redis-scim did not create ({user_id}); "
                "it is never given rights"
            )
        # `unmanaged`: changed by its own id, never claimed, its authentication left as it is.
        return _Planned(username, user_id, desired, access_string, None, kind)

    def _take_new_id(self, plan: _Planned) -> None:
        """A name not provisioned yet: nothing to delete; to create it, its derived id must be free
        in ElastiCache (not a user someone made by hand) and is then claimed in the registry."""
        if plan.desired is None:
            plan.current = None  # its derived id may be another user's
            return
        if plan.current is not None:
            raise errors.InvalidUsername(
                f"ElastiCache user id {plan.user_id!r} of username {plan.username!r} is taken by a user "
                f"redis-scim did not create ({plan.current.get('UserName')!r})"
            )
        claim_user_id(self.user_ids, self.name, plan.username)

    def _resolve(self, usernames: Sequence[str], group: _Group) -> dict[str, tuple[str, _Kind]]:
        """username -> (ElastiCache user id, kind). A managed user is found by its derived id and
        the registry; any other name is looked up among the group's members by user name (a user
        added by hand may have any id); a name found nowhere is new, with its derived id."""
        resolved: dict[str, tuple[str, _Kind]] = {}
        for username in usernames:
            user_id = derive_user_id(username)
            if self.user_ids.username_of(self.name, user_id) == username:
                resolved[username] = (user_id, "managed")
        unresolved = [username for username in usernames if username not in resolved]
        if unresolved:
            members = self._describe_users(sorted(group.effective))
            by_name = {user["UserName"]: user_id for user_id, user in members.items()}
            for username in unresolved:
                found = by_name.get(username)
                if found is not None and self.user_ids.username_of(self.name, found) is None:
                    resolved[username] = (found, "unmanaged")
                else:
                    resolved[username] = (derive_user_id(username), "new")
        return resolved

    def _wait_until_deleted(self, user_id: str, deadline: float) -> None:
        while self._describe_user(user_id) is not None:
            self._wait_or_give_up(deadline, f"user {user_id} is still being deleted")

    def _refuse_additions(
        self,
        changes: Mapping[str, Sequence[str] | None],
        planned: Sequence[_Planned],
        add: Sequence[str],
        size_after: int,
    ) -> None:
        """The additions do not fit: apply the rest of the batch (a full group must never hold up a
        deactivation or a deletion), then fail naming every user not applied. No user is half-applied:
        nothing is created for the refused ones."""
        refused = sorted(plan.username for plan in planned if plan.user_id in set(add))
        self._count(QUOTA_EXCEEDED_METRIC)
        logger.error(
            "user group full",
            extra={"target": self.name, "user_group": self.config.user_group, "not_applied": refused},
        )
        rest = {username: rules for username, rules in changes.items() if username not in refused}
        self.apply_batch(rest)
        raise UserGroupFull(
            f"user group {self.config.user_group!r} of target {self.name!r} would have {size_after} users; "
            f"its quota is {self.users_per_group} (AWS 'users per user group'): "
            f"not applied for {', '.join(refused)}"
        )

    # --- internals: users ----------------------------------------------------------------------------

    def _create_user(self, plan: _Planned, deadline: float) -> None:
        assert plan.access_string is not None
        parameters: dict[str, Any] = {
            "UserId": plan.user_id,
            "UserName": plan.user_id,
            "Engine": self.config.engine,
            "AccessString": plan.access_string,
            "AuthenticationMode": self._authentication(plan),
        }
        self._call("create_user", deadline, **parameters)

    def _modify_user(self, plan: _Planned, deadline: float) -> None:
        assert plan.desired is not None and plan.current is not None
        actual = _read_acl(plan.current, None)
        parameters: dict[str, Any] = {}
        if (actual.enabled, actual.root, actual.selectors, actual.flags) != (
            plan.desired.enabled,
            plan.desired.root,
            plan.desired.selectors,
            plan.desired.flags,
        ):
            parameters["AccessString"] = plan.access_string
        if plan.kind != "unmanaged" and actual.authentication != plan.desired.authentication:
            parameters["AuthenticationMode"] = self._authentication(plan)
        if parameters:
            self._call("modify_user", deadline, UserId=plan.user_id, **parameters)

    def _authentication(self, plan: _Planned) -> dict[str, Any]:
        if self.config.auth == "iam":
            return {"Type": "iam"}
        return {"Type": "password", "Passwords": [self._ensure_secret(plan)]}

    def _describe_user(self, user_id: str) -> dict[str, Any] | None:
        try:
            users = self._api("describe_users", UserId=user_id)["Users"]
        except _NotFound:
            return None
        return users[0] if users else None

    def _describe_users(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """user id -> its DescribeUsers entry (absent ids left out). Many ids: one paged listing."""
        if len(user_ids) <= _DESCRIBE_ONE_BY_ONE:
            found = {user_id: self._describe_user(user_id) for user_id in user_ids}
            return {user_id: user for user_id, user in found.items() if user is not None}
        wanted = set(user_ids)
        return {user["UserId"]: user for user in self._all_users() if user["UserId"] in wanted}

    def _all_users(self) -> Iterator[dict[str, Any]]:
        try:
            for page in self.client.get_paginator("describe_users").paginate():
                yield from page.get("Users", [])
        except (ClientError, BotoCoreError) as error:
            raise self._unavailable(error) from error

    # --- internals: the group ------------------------------------------------------------------------

    def _describe_group(self) -> _Group:
        try:
            groups = self._api("describe_user_groups", UserGroupId=self.config.user_group)["UserGroups"]
        except _NotFound:
            raise TargetUnavailable(self.name, {self.node: "user group not found"}) from None
        group = groups[0]
        pending = group.get("PendingChanges") or {}
        return _Group(
            user_ids=frozenset(group.get("UserIds", [])),
            pending_add=frozenset(pending.get("UserIdsToAdd", [])),
            pending_remove=frozenset(pending.get("UserIdsToRemove", [])),
            status=group.get("Status", ""),
        )

    def _wait_for_group(self, deadline: float) -> _Group:
        """The group once it is `active` (a pending change changes what may be sent), or busy."""
        while True:
            group = self._describe_group()
            if group.status == "active":
                return group
            self._wait_or_give_up(deadline, f"user group is {group.status}")

    def _modify_group(self, *, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
        while True:
            parameters: dict[str, Any] = {"UserGroupId": self.config.user_group}
            if add:
                parameters["UserIdsToAdd"] = list(add)
            if remove:
                parameters["UserIdsToRemove"] = list(remove)
            try:
                self._call("modify_user_group", deadline, **parameters)
                return
            except _NotMember:
                # Another writer removed one of them since we read: re-read and send only real members.
                members = self._wait_for_group(deadline).effective
                remove = [user_id for user_id in remove if user_id in members]
                add = [user_id for user_id in add if user_id not in members]
                if not add and not remove:
                    return

    def _wait_settled(self, user_ids: Sequence[str], deadline: float) -> None:
        """Wait (within the budget) until the group and these users are `active`; a change still
        pending afterwards is not an error: read-back shows it, `verify_revoked` waits for it."""
        while self.clock() < deadline:
            group = self._describe_group()
            users = self._describe_users(user_ids).values()
            if group.status == "active" and all(u.get("Status") in ("active", "deleting") for u in users):
                return
            self.sleep(self.poll_interval)

    # --- internals: password secrets -----------------------------------------------------------------

    def _secret_name(self, user_id: str) -> str:
        return f"redis-scim/{self.name}/{user_id}"

    def _secret_value(self, user_id: str, password: str) -> str:
        return json.dumps(
            {
                "username": user_id,
                "password": password,
                "region": self.config.region,
                "user_group": self.config.user_group,
            }
        )

    def _ensure_secret(self, plan: _Planned) -> str:
        """The user's password: the one already in its secret (a retried create), or a new one."""
        existing = self._read_secret(plan.user_id)
        if existing is not None:
            return str(existing["password"])
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        tags = [
            {"Key": "redis-scim:target", "Value": self.name},
            {"Key": "redis-scim:elasticache-user-id", "Value": plan.user_id},
        ]
        owner = self.ledger.owner(self.name, plan.username) if self.ledger is not None else None
        if owner is not None and not owner.released:
            tags.append({"Key": "redis-scim:scim-id", "Value": owner.user_id})
        self._secrets(
            "create_secret",
            Name=self._secret_name(plan.user_id),
            SecretString=self._secret_value(plan.user_id, password),
            Description=f"ElastiCache password of {plan.user_id} (user group {self.config.user_group})",
            Tags=tags,
        )
        return password

    def _read_secret(self, user_id: str) -> dict[str, Any] | None:
        if self.secrets_client is None:
            return None
        try:
            response = self._secrets("get_secret_value", SecretId=self._secret_name(user_id))
        except _NotFound:
            return None
        value: dict[str, Any] = json.loads(response["SecretString"])
        return value

    def _delete_secret(self, user_id: str) -> None:
        if self.secrets_client is None:
            return
        # The password of a deleted user opens nothing: no recovery window to wait out.
        with contextlib.suppress(_NotFound):
            self._secrets(
                "delete_secret", SecretId=self._secret_name(user_id), ForceDeleteWithoutRecovery=True
            )

    def _secrets(self, operation: str, **parameters: Any) -> Any:
        assert self.secrets_client is not None
        try:
            return getattr(self.secrets_client, operation)(**parameters)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                raise _NotFound from None
            # Never echo parameters: they may hold a password.
            raise TargetUnavailable(
                self.name, {self.node: f"Secrets Manager {operation}: {error.response['Error']['Code']}"}
            ) from None
        except BotoCoreError as error:
            raise TargetUnavailable(
                self.name, {self.node: f"Secrets Manager {operation}: {type(error).__name__}"}
            ) from None

    # --- internals: calls, budget, errors ------------------------------------------------------------

    def _deadline(self) -> float:
        budget = self.max_wait
        if self.remaining_time is not None:
            budget = min(budget, max(0.0, self.remaining_time()))
        return self.clock() + budget

    def _wait_or_give_up(self, deadline: float, why: str) -> None:
        if self.clock() + self.poll_interval > deadline:
            raise TargetUnavailable(
                self.name, {self.node: f"{why}; still busy after the time budget, retry later"}
            )
        self._count(BUSY_RETRY_METRIC)
        self.sleep(self.poll_interval)

    def _call(
        self,
        operation: str,
        deadline: float,
        *,
        tolerate: frozenset[str] | set[str] = frozenset(),
        **parameters: Any,
    ) -> Any:
        """One mutating call, retried while the user or group is busy (within `deadline`)."""
        while True:
            try:
                return self._api(operation, **parameters)
            except _Busy as busy:
                self._wait_or_give_up(deadline, busy.message)
            except _NotMember:
                raise  # `_modify_group` re-reads the group and sends only real members
            except _Refused as refused:
                if refused.code in tolerate:
                    return None
                raise TargetUnavailable(self.name, {self.node: f"{operation}: {refused}"}) from None

    def _api(self, operation: str, **parameters: Any) -> Any:
        try:
            return getattr(self.client, operation)(**parameters)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            message = error.response["Error"].get("Message", "")
            if code in _BUSY:
                raise _Busy(code, message) from None
            if code in ("UserNotFound", "UserGroupNotFound") and operation.startswith("describe"):
                raise _NotFound from None
            if code == "UserGroupQuotaExceeded":
                self._count(QUOTA_EXCEEDED_METRIC)
                logger.error(
                    "user group full", extra={"target": self.name, "user_group": self.config.user_group}
                )
                raise UserGroupFull(
                    f"user group {self.config.user_group!r} of target {self.name!r} is full "
                    f"(ElastiCache: {message}): nothing of the batch was kept"
                ) from None
            if code == "InvalidParameterValue" and "not a member" in message:
                raise _NotMember(code, message) from None
            if code == "UserNotFound":
                raise _Refused(code, message) from None
            raise TargetUnavailable(self.name, {self.node: f"{operation}: {code}: {message}"}) from None
        except BotoCoreError as error:
            raise self._unavailable(error) from None

    def _unavailable(self, error: Exception) -> TargetUnavailable:
        if isinstance(error, ClientError):
            return TargetUnavailable(self.name, {self.node: error.response["Error"]["Code"]})
        return TargetUnavailable(self.name, {self.node: type(error).__name__})

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.add_metric(name=name, unit="Count", value=1)


class _NotFound(Exception):
    """A describe found no such user or group (absent is an answer, not an error)."""


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Busy(_Refused):
    """The user or group is not `active` (creating, modifying, deleting)."""


class _NotMember(_Refused):
    """ModifyUserGroup named a non-member to remove: the whole request was rejected."""


# --- access strings ------------------------------------------------------------------------------


def access_string_from_rules(rules: Sequence[str]) -> str:
    """The ElastiCache access string for `ACL SETUSER name <rules>`.

    ElastiCache takes neither `reset` (it would wipe the passwords it manages) nor passwords (they
    go through the API), and a string without `on` leaves the user `off`; so `reset` becomes its
    explicit equivalents, the state is always explicit, and credential rules (`>…`, `#…`, `nopass`,
    …) are left out: a user's authentication only ever changes through AuthenticationMode.
    """
    state = "off"
    rest: list[str] = []
    for rule in rules:
        lowered = rule.lower()
        if lowered == "reset":
            continue
        if lowered in ("on", "off"):
            state = lowered
        elif not (rule.startswith(_PASSWORD_RULE_PREFIXES) or lowered in _PASSWORD_RULES):
            rest.append(rule)
    return " ".join([state, "-@all", "resetkeys", "resetchannels", *rest])


@dataclass
class _Part:
    commands: list[str] = field(default_factory=lambda: ["-@all"])
    keys: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    databases: str | None = None

    def apply(self, rule: str) -> bool:
        """Apply one rule the way the engine does; False when it is not a permission rule."""
        lowered = rule.lower()
        if lowered in ("allcommands", "+@all"):
            self.commands = ["+@all"]
        elif lowered in ("nocommands", "-@all"):
            self.commands = ["-@all"]
        elif rule[:1] in "+-" and len(rule) > 1:
            name = lowered[1:]
            # Like the engine, a later rule for the same command or category replaces an earlier one.
            self.commands = [c for c in self.commands if c[1:] != name] + [lowered]
        elif lowered == "allkeys":
            self.keys = {"~*"}
        elif lowered == "resetkeys":
            self.keys = set()
        elif rule.startswith(("~", "%")):
            self.keys.add("~" + rule.split("~", 1)[1] if rule.upper().startswith(("%RW~", "~")) else rule)
        elif lowered == "allchannels":
            self.channels = {"&*"}
        elif lowered == "resetchannels":
            self.channels = set()
        elif rule.startswith("&"):
            self.channels.add(rule)
        elif lowered in ("alldbs", "resetdbs") or lowered.startswith("db="):
            self.databases = lowered
        else:
            return False
        return True

    def permissions(self) -> Permissions:
        extra: tuple[tuple[str, str], ...] = ()
        if self.databases is not None and self.databases != "alldbs":  # alldbs: the default
            extra = (("databases", self.databases),)
        return Permissions(
            commands=" ".join(self.commands),
            keys=" ".join(sorted(self.keys)),
            channels=" ".join(sorted(self.channels)),
            extra=extra,
        )


def parse_access_string(text: str) -> tuple[bool, Permissions, frozenset[Permissions], frozenset[str]]:
    """(enabled, root, selectors, flags) of an access string, normalized like the engine renders it.

    What we write (`on -@all resetkeys resetchannels (resetchannels +@read ~a:*)`) and what
    DescribeUsers reports (`on resetchannels -@all (~a:* resetchannels -@all +@read)`) compare equal.
    Passwords never appear in access strings; `sanitize-payload` is the default and dropped.
    """
    enabled = False
    root = _Part()
    selectors: list[_Part] = []
    flags: set[str] = set()
    for rule in split_rules(text):
        lowered = rule.lower()
        if lowered in ("on", "off"):
            enabled = lowered == "on"
        elif rule.startswith("(") and rule.endswith(")"):
            selector = _Part()
            for inner in split_rules(rule[1:-1]):
                selector.apply(inner)
            selectors.append(selector)
        elif lowered == "clearselectors":
            selectors = []
        elif lowered == "skip-sanitize-payload":
            flags.add(lowered)
        elif lowered == "sanitize-payload":
            flags.discard("skip-sanitize-payload")
        elif rule.startswith(_PASSWORD_RULE_PREFIXES) or lowered in _PASSWORD_RULES:
            continue
        elif not root.apply(rule):
            flags.add(lowered)
    return enabled, root.permissions(), frozenset(s.permissions() for s in selectors), frozenset(flags)


def split_rules(text: str) -> list[str]:
    """The rules of an access string; a selector `( … )` is one rule."""
    rules: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char.isspace() and depth == 0:
            if current:
                rules.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current:
        rules.append(current)
    return rules


def _read_acl(user: Mapping[str, Any], group: _Group | None) -> ElastiCacheAcl:
    enabled, root, selectors, flags = parse_access_string(user.get("AccessString", ""))
    authentication = (user.get("Authentication") or {}).get("Type") or "no-password"
    member = group is not None and user["UserId"] in group.effective
    settled = user.get("Status") == "active" and (group is None or group.status == "active")
    return ElastiCacheAcl(
        enabled=enabled,
        password_hashes=frozenset(),
        nopass=authentication == "no-password",
        root=root,
        selectors=selectors,
        flags=flags,
        member=member,
        authentication=authentication,
        settled=settled,
    )
