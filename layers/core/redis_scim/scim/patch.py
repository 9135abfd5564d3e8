"""PATCH (RFC 7644 §3.5.2) for Users and Groups, with the IdP quirks of IDP_BEHAVIOURS.md §6.

Users: the operations are applied to the user with scim2-models; `password` operations are taken
out first so the clear text never enters a model, a log or the store (only its SHA-256 does).

Groups: member operations never read the group's members. Every form the IdPs send (add a list,
remove by `members[value eq ...]`, remove `members` with a value list, replace `members`, no-path
values carrying `members`) is folded, in order, into one `GroupChange` delta; the remaining
attribute operations are applied to the group resource (which holds no members).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from scim2_models import Context, PatchOp, SCIMException, ScimFilter
from scim2_models.path import CompareOperator, Comparison, FilterNode, LogicalExpr, LogicalOperator

from redis_scim import errors
from redis_scim.directory import GroupChange, Member
from redis_scim.scim.resources import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    MAX_MEMBERS_PER_REQUEST,
    PATCH_OP_SCHEMA,
    POLICY,
    USER_SCHEMA,
    GroupModel,
    UserModel,
    check_body_id,
    library_error,
    manager_value,
    members_from_value,
    normalise_manager,
    pop_attribute,
)

MAX_OPERATIONS = 1000


def operations_of(body: Any) -> list[dict[str, Any]]:
    """The operations of a PatchOp body, checked for shape. An empty list is a valid no-op (the
    Entra SCIM Validator sends one)."""
    if not isinstance(body, dict):
        raise errors.InvalidSyntax("the request body must be a PatchOp JSON object")
    operations = next((value for key, value in body.items() if key.lower() == "operations"), None)
    if operations is None:
        raise errors.InvalidValue("a PatchOp needs an 'Operations' array")
    if not isinstance(operations, list):
        raise errors.InvalidSyntax("'Operations' must be an array")
    if len(operations) > MAX_OPERATIONS:
        raise errors.TooMany(f"at most {MAX_OPERATIONS} operations per PATCH")
    checked = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise errors.InvalidSyntax("each operation must be a JSON object")
        normalised = {key.lower(): value for key, value in operation.items()}
        op = normalised.get("op")
        if not isinstance(op, str) or op.lower() not in ("add", "remove", "replace"):
            raise errors.InvalidValue(f"{op!r} is not a PATCH operation: add, remove or replace")
        path = normalised.get("path")
        if path is not None and not isinstance(path, str):
            raise errors.InvalidPath("'path' must be a string")
        result: dict[str, Any] = {"op": op.lower()}
        if path is not None and path.strip():
            result["path"] = path.strip()
        elif result["op"] == "remove":
            # RFC 7644 §3.5.2.2: a remove without a path has no target.
            raise errors.NoTarget("a remove operation needs a path")
        if "value" in normalised:
            result["value"] = normalised["value"]
        checked.append(result)
    return checked


def _strip_core_urn(path: str, schema: str) -> str:
    prefix = schema + ":"
    return path[len(prefix) :] if path.lower().startswith(prefix.lower()) else path


def _clean_value_object(value: Any, resource_id: str, read_only: tuple[str, ...]) -> dict[str, Any]:
    """A no-path operation's value: Okta repeats the unchanged `id`; `meta`/`schemas` are ignored."""
    if not isinstance(value, dict):
        raise errors.InvalidValue("an operation without a path needs an object value")
    value = dict(value)
    check_body_id(value, resource_id)
    for name in read_only:
        pop_attribute(value, name)
    return value


def _apply(model: Any, resource_type: Any, operations: list[dict[str, Any]]) -> bool:
    if not operations:
        return False
    try:
        patch = PatchOp[resource_type].model_validate(  # type: ignore[valid-type]
            {"schemas": [PATCH_OP_SCHEMA], "Operations": operations},
            scim_ctx=Context.RESOURCE_PATCH_REQUEST,
            scim_policy=POLICY,
        )
        return bool(patch.patch(model, scim_policy=POLICY))
    except (SCIMException, ValidationError) as exc:
        raise library_error(exc) from None


# --- users -------------------------------------------------------------------------------------


@dataclass
class UserPatchResult:
    changed: bool
    password_changed: bool
    password: str | None  # the new clear-text password (None = cleared); only when password_changed


def patch_user(model: Any, body: Any) -> UserPatchResult:
    """Apply a PatchOp body to a User model in place."""
    operations = []
    password_changed = False
    password: Any = None
    for operation in operations_of(body):
        path = operation.get("path")
        if path is None:
            value = _clean_value_object(operation.get("value"), model.id, ("meta", "schemas", "groups"))
            if any(key.lower() == "password" for key in value):
                password_changed, password = True, pop_attribute(value, "password")
            value = _normalise_manager_keys(value)
            if value:
                operations.append({**operation, "value": value})
            continue
        bare = _strip_core_urn(path, USER_SCHEMA)
        if bare.lower() == "password":
            password_changed = True
            password = None if operation["op"] == "remove" else operation.get("value")
            continue
        if bare.lower() == f"{ENTERPRISE_SCHEMA}:manager".lower() and "value" in operation:
            operation = {**operation, "value": manager_value(operation["value"])}
        operations.append(operation)
    if password is not None and not isinstance(password, str):
        raise errors.InvalidValue("'password' must be a string")
    changed = _apply(model, UserModel, operations)
    return UserPatchResult(
        changed=changed or password_changed, password_changed=password_changed, password=password
    )


def _normalise_manager_keys(value: dict[str, Any]) -> dict[str, Any]:
    manager_key = f"{ENTERPRISE_SCHEMA}:manager".lower()
    result = {}
    for key, item in value.items():
        if key.lower() == manager_key:
            item = manager_value(item)
        elif key.lower() == ENTERPRISE_SCHEMA.lower():
            item = normalise_manager(item)
        result[key] = item
    return result


# --- groups ------------------------------------------------------------------------------------


@dataclass
class GroupPatchPlan:
    """A group PATCH split into attribute operations and one folded membership delta."""

    attribute_operations: list[dict[str, Any]] = field(default_factory=list)
    added: dict[str, Member] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    replacement: dict[str, Member] | None = None
    members_in_request: int = 0

    def add(self, members: list[Member]) -> None:
        self._count(len(members))
        for member in members:
            if self.replacement is not None:
                self.replacement[member.value] = member
            else:
                self.added[member.value] = member
                self.removed.discard(member.value)

    def remove(self, member_ids: list[str]) -> None:
        self._count(len(member_ids))
        for member_id in member_ids:
            if self.replacement is not None:
                self.replacement.pop(member_id, None)
            else:
                self.removed.add(member_id)
                self.added.pop(member_id, None)

    def replace(self, members: list[Member]) -> None:
        self._count(len(members))
        self.added, self.removed = {}, set()
        self.replacement = {member.value: member for member in members}

    def _count(self, count: int) -> None:
        self.members_in_request += count
        if self.members_in_request > MAX_MEMBERS_PER_REQUEST:
            raise errors.TooMany(f"at most {MAX_MEMBERS_PER_REQUEST} members per request")

    @property
    def changes_members(self) -> bool:
        return bool(self.added or self.removed or self.replacement is not None)

    def member_change(self, resource: dict[str, Any] | None) -> GroupChange:
        if self.replacement is not None:
            return GroupChange(resource=resource, replace_members=list(self.replacement.values()))
        return GroupChange(
            resource=resource, add_members=list(self.added.values()), remove_members=sorted(self.removed)
        )


def plan_group_patch(body: Any, group_id: str) -> GroupPatchPlan:
    plan = GroupPatchPlan()
    for operation in operations_of(body):
        op, path, value = operation["op"], operation.get("path"), operation.get("value")
        if path is None:
            value = _clean_value_object(value, group_id, ("meta", "schemas"))
            members = pop_attribute(value, "members")
            if members is not None and op == "add":
                plan.add(members_from_value(members))
            elif members is not None:
                plan.replace(members_from_value(members))
            if value:
                plan.attribute_operations.append({**operation, "value": value})
            continue
        bare = _strip_core_urn(path, GROUP_SCHEMA)
        lowered = bare.lower()
        if lowered == "members":
            if op == "add":
                plan.add(members_from_value(value if value is not None else []))
            elif op == "replace":
                plan.replace(members_from_value(value if value is not None else []))
            elif value is None:
                plan.replace([])
            else:
                plan.remove([member.value for member in members_from_value(value)])
        elif lowered.startswith("members[") and lowered.endswith("]"):
            if op != "remove":
                raise errors.InvalidPath("a member filter path is only supported for remove")
            plan.remove(_member_ids_of_filter(bare[len("members[") : -1]))
        elif lowered.startswith("members"):
            raise errors.InvalidPath(f"unsupported members path {path!r}")
        else:
            plan.attribute_operations.append(operation)
    return plan


def _member_ids_of_filter(text: str) -> list[str]:
    """Ids named by `value eq "a"` (or several `or`-ed together): the only member filters a remove
    can serve without reading the group. Anything else is refused rather than guessed."""
    try:
        node = ScimFilter(text).ast
    except (SCIMException, ValueError):
        raise errors.InvalidFilter(f"invalid member filter {text!r}") from None
    terms: tuple[FilterNode, ...] = (
        node.terms if isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_ else (node,)
    )
    ids = []
    for term in terms:
        if not (
            isinstance(term, Comparison)
            and term.op == CompareOperator.eq
            and term.attr_path.attr.lower() == "value"
            and term.attr_path.sub_attr is None
            and isinstance(term.value, str)
        ):
            raise errors.InvalidFilter('member removal supports only `value eq "<id>"` filters, or-ed')
        ids.append(term.value)
    return ids


def patch_group_attributes(model: Any, operations: list[dict[str, Any]]) -> bool:
    return _apply(model, GroupModel, operations)
