"""SCIM resource models (User + enterprise extension, Group) and their mapping to Directory records.

Request bodies are normalised for the IdP quirks of IDP_BEHAVIOURS.md §6 (nulls, string booleans,
foreign `schemas` URIs, read-only `id`/`meta`/`groups`, Entra's bare-string `manager`), validated
with scim2-models, and stored as the canonical attribute dict the Directory keeps. Responses are
built straight from stored dicts, without another round through the models.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, ClassVar, Generic

from pydantic import Field, ValidationError
from scim2_models import URN as SchemaUrn
from scim2_models import (
    CaseExact,
    ComplexAttribute,
    Context,
    Extension,
    Group,
    Mutability,
    Reference,
    Required,
    SCIMException,
    ScimPolicy,
)
from scim2_models import Email as CoreEmail
from scim2_models import (
    User as CoreUser,
)
from scim2_models.resources.resource import AnyExtension

from redis_scim import errors
from redis_scim.directory import GroupRecord, GroupRef, Member, UserRecord
from redis_scim.scim.http import etag_of

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

# Tolerances for real IdP traffic: Entra removes members with a value list and no filter, adds
# `emails[type eq "work"].value` when no work email exists yet, and IdP templates carry attributes
# we do not model (IDP_BEHAVIOURS.md §2.4, §3).
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)


class Manager(ComplexAttribute):
    """The enterprise `manager`, with `$ref` optional: IdPs send only `value` (RFC 7643 §4.3 says
    both are optional in practice; the library's static class requires `$ref`)."""

    value: Annotated[str | None, CaseExact.true] = None
    ref: Annotated[Reference[CoreUser] | None, Required.false] = Field(  # type: ignore[type-arg]
        None, serialization_alias="$ref", validation_alias="$ref"
    )
    display_name: Annotated[str | None, Mutability.read_only] = None


class EnterpriseUser(Extension):
    __schema__ = SchemaUrn(ENTERPRISE_SCHEMA)

    employee_number: str | None = None
    cost_center: str | None = None
    organization: str | None = None
    division: str | None = None
    department: str | None = None
    manager: Manager | None = None


class Email(CoreEmail):
    """An email whose value is stored as sent: the core model's RFC 5322 check refuses addresses
    directory-synced IdPs do send (`user@corp.local` from on-premises AD) and rewrites
    `Name <addr>` forms, where Entra asks servers not to transform values (MS-TUT)."""

    value: str | None = None


class User(CoreUser[AnyExtension], Generic[AnyExtension]):
    emails: list[Email] | None = None  # type: ignore[assignment]  # a subclass, list is invariant
    Emails: ClassVar[type[ComplexAttribute]] = Email


UserModel = User[EnterpriseUser]
GroupModel = Group

# A request may name at most this many members (POST/PUT body, or all operations of a PATCH).
MAX_MEMBERS_PER_REQUEST = 10_000

# Keys the store owns: never part of a stored `resource` dict.
_USER_OWNED = frozenset({"id", "meta", "schemas", "password", "groups"})
_GROUP_OWNED = frozenset({"id", "meta", "schemas", "members"})


def sha256_password(password: str) -> str:
    """The only form of a SCIM password we keep: what Redis stores as `#<hash>`."""
    return hashlib.sha256(password.encode()).hexdigest()


# --- request bodies ----------------------------------------------------------------------------


def drop_nulls(value: Any) -> Any:
    """Explicit JSON nulls mean "unassigned" (Entra sends `"manager": null`): remove them."""
    if isinstance(value, dict):
        return {key: drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [drop_nulls(item) for item in value if item is not None]
    return value


def manager_value(item: Any) -> Any:
    """The enterprise `manager` as the schema wants it, `{"value": id}`. Entra sends a bare id
    string, and its tutorial's SDK example a one-element array `[{"$ref": null, "value": id}]`."""
    if isinstance(item, str):
        return {"value": item}
    if isinstance(item, list) and len(item) == 1:
        item = item[0]
    if isinstance(item, dict):
        return {key: value for key, value in item.items() if value is not None}
    return item


def normalise_manager(extension: Any) -> Any:
    """The extension object with its `manager` normalised by `manager_value`."""
    if isinstance(extension, dict):
        for key, item in extension.items():
            if key.lower() == "manager":
                return {**extension, key: manager_value(item)}
    return extension


def _key(body: dict[str, Any], name: str) -> str | None:
    """The key of `body` naming attribute `name` (attribute names are case-insensitive)."""
    lowered = name.lower()
    return next((key for key in body if key.lower() == lowered), None)


def pop_attribute(body: dict[str, Any], name: str) -> Any:
    key = _key(body, name)
    return body.pop(key) if key is not None else None


def check_body_id(body: dict[str, Any], resource_id: str | None) -> None:
    """A body may repeat the resource's own id (Okta PUT); a different id is a mutability error."""
    given = pop_attribute(body, "id")
    if given is not None and resource_id is not None and given != resource_id:
        raise errors.Mutability("'id' is read-only and cannot be changed")


def _prepare(body: Any, *, resource_id: str | None, owned: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.InvalidSyntax("the request body must be a JSON object")
    body = drop_nulls(body)
    check_body_id(body, resource_id)
    for name in owned - {"password", "members"}:
        pop_attribute(body, name)
    return body


def user_from_body(
    body: Any, *, resource_id: str | None, context: Context
) -> tuple[dict[str, Any], str | None]:
    """Validate a POST/PUT User body. Returns the resource dict to store and the password, if any."""
    body = _prepare(body, resource_id=resource_id, owned=_USER_OWNED)
    password = pop_attribute(body, "password")
    if password is not None and not isinstance(password, str):
        raise errors.InvalidValue("'password' must be a string")
    extension_key = _key(body, ENTERPRISE_SCHEMA)
    if extension_key is not None:
        body[extension_key] = normalise_manager(body[extension_key])
    body["schemas"] = [USER_SCHEMA, ENTERPRISE_SCHEMA] if extension_key else [USER_SCHEMA]
    # A user created or replaced without `active` (OneLogin's templates) is enabled on the
    # targets, so SCIM says `active: true` too, or a filter on `active` would disagree with Redis.
    if _key(body, "active") is None:
        body["active"] = True
    model = validate(UserModel, body, context)
    return user_resource(model), password


def group_from_body(
    body: Any, *, resource_id: str | None, context: Context
) -> tuple[dict[str, Any], list[Member]]:
    """Validate a POST/PUT Group body. Returns the resource dict to store and the members."""
    body = _prepare(body, resource_id=resource_id, owned=_GROUP_OWNED)
    members = members_from_value(pop_attribute(body, "members") or [])
    body["schemas"] = [GROUP_SCHEMA]
    model = validate(GroupModel, body, context)
    return group_resource(model), members


def members_from_value(value: Any) -> list[Member]:
    """Members as a request carries them: `[{value, display?, type?, $ref?}]` (or one object)."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_MEMBERS_PER_REQUEST:
        raise errors.TooMany(f"at most {MAX_MEMBERS_PER_REQUEST} members per request")
    members: dict[str, Member] = {}
    for item in items:
        if not isinstance(item, dict):
            raise errors.InvalidValue("each member must be an object with a 'value'")
        item = drop_nulls(item)
        member_id = item.get(_key(item, "value") or "value")
        if not isinstance(member_id, str) or not member_id:
            raise errors.InvalidValue("each member needs a 'value' naming a user id")
        member_type = item.get(_key(item, "type") or "type")
        if isinstance(member_type, str) and member_type.lower() == "group":
            raise errors.InvalidValue("nested groups are not supported: members must be users")
        display = item.get(_key(item, "display") or "display")
        members[member_id] = Member(value=member_id, display=display if isinstance(display, str) else None)
    return list(members.values())


def validate(model: Any, body: dict[str, Any], context: Context) -> Any:
    try:
        return model.model_validate(body, scim_ctx=context, scim_policy=POLICY)
    except ValidationError as exc:
        raise library_error(exc) from None
    except SCIMException as exc:
        raise library_error(exc) from None


# Multi-valued attributes whose `type` identifies an entry: IdPs address them by type
# (`emails[type eq "work"].value`), so Entra requires at most one entry per type.
_TYPED_MULTI_VALUED = ("emails", "phoneNumbers", "ims", "photos", "addresses")


def user_resource(model: Any) -> dict[str, Any]:
    """The user's attributes to store, after the rules every write must keep."""
    dumped = model.model_dump(scim_ctx=Context.DEFAULT)
    resource = {key: value for key, value in dumped.items() if key not in _USER_OWNED}
    for attribute in _TYPED_MULTI_VALUED:
        types = [str(entry["type"]).lower() for entry in resource.get(attribute) or () if entry.get("type")]
        duplicates = sorted({kind for kind in types if types.count(kind) > 1})
        if duplicates:
            raise errors.InvalidValue(
                f"at most one {attribute} entry per type: {', '.join(map(repr, duplicates))} appears twice; "
                f"replace it with a path like {attribute}[type eq \"{duplicates[0]}\"].value"
            )
    return resource


def group_resource(model: Any) -> dict[str, Any]:
    dumped = model.model_dump(scim_ctx=Context.DEFAULT)
    return {key: value for key, value in dumped.items() if key not in _GROUP_OWNED}


# --- library errors → our hierarchy ------------------------------------------------------------

_SCIM_TYPE_ERRORS: dict[str, type[errors.RedisScimError]] = {
    "invalidFilter": errors.InvalidFilter,
    "invalidSyntax": errors.InvalidSyntax,
    "invalidPath": errors.InvalidPath,
    "noTarget": errors.NoTarget,
    "mutability": errors.Mutability,
    "uniqueness": errors.Uniqueness,
    "tooMany": errors.TooMany,
    "invalidValue": errors.InvalidValue,
}


def library_error(exc: ValidationError | SCIMException) -> errors.RedisScimError:
    """Translate a scim2-models failure into our error hierarchy.

    The detail names the attribute and the problem but never echoes the input, which may be a
    password.
    """
    if isinstance(exc, SCIMException):
        # The library sometimes wraps a pydantic report ("1 validation error for X ... For further
        # information visit https://errors.pydantic.dev/..."): keep the lines that say what is wrong.
        lines = [line.strip() for line in str(exc).splitlines()]
        detail = " ".join(line for line in lines if line and "pydantic.dev" not in line)
        return _SCIM_TYPE_ERRORS.get(exc.scim_type, errors.InvalidValue)(detail or "invalid value")
    first = exc.errors(include_input=False, include_url=False)[0]
    scim_type = (first.get("ctx") or {}).get("scim_type") or "invalidValue"
    location = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    detail = f"{location}: {first['msg']}" if location else first["msg"]
    return _SCIM_TYPE_ERRORS.get(scim_type, errors.InvalidValue)(detail)


# --- responses ---------------------------------------------------------------------------------


def _meta(
    resource_type: str, location: str, created: str, last_modified: str, version: int
) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": created,
        "lastModified": last_modified,
        "location": location,
        "version": etag_of(version),
    }


def user_location(base_url: str, user_id: str) -> str:
    return f"{base_url}/Users/{user_id}"


def group_location(base_url: str, group_id: str) -> str:
    return f"{base_url}/Groups/{group_id}"


def user_json(record: UserRecord, base_url: str, groups: list[GroupRef] | None) -> dict[str, Any]:
    """The full SCIM User of a record. `groups` None leaves the derived attribute out."""
    resource = record.resource
    schemas = [USER_SCHEMA, ENTERPRISE_SCHEMA] if resource.get(ENTERPRISE_SCHEMA) else [USER_SCHEMA]
    body: dict[str, Any] = {"schemas": schemas, "id": record.id, **resource}
    if groups:
        body["groups"] = [
            {
                "value": group.id,
                "display": group.display_name,
                "$ref": group_location(base_url, group.id),
                "type": "direct",
            }
            for group in groups
        ]
    body["meta"] = _meta(
        "User", user_location(base_url, record.id), record.created, record.last_modified, record.version
    )
    return body


def member_json(member: Member, base_url: str) -> dict[str, Any]:
    body = {"value": member.value, "$ref": user_location(base_url, member.value), "type": "User"}
    if member.display:
        body["display"] = member.display
    return body


def group_json(record: GroupRecord, base_url: str, members: list[Member] | None) -> dict[str, Any]:
    """The full SCIM Group of a record. `members` None leaves the attribute out."""
    body: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": record.id, **record.resource}
    if members:
        body["members"] = [member_json(member, base_url) for member in members]
    body["meta"] = _meta(
        "Group", group_location(base_url, record.id), record.created, record.last_modified, record.version
    )
    return body


def user_model_of(record: UserRecord) -> Any:
    """The scim2-models User of a stored record, for filter matching and PATCH."""
    return _model_of(UserModel, record.resource, record, "User", USER_SCHEMA)


def group_model_of(record: GroupRecord) -> Any:
    return _model_of(GroupModel, record.resource, record, "Group", GROUP_SCHEMA)


def _model_of(
    model: Any, resource: dict[str, Any], record: UserRecord | GroupRecord, resource_type: str, schema: str
) -> Any:
    schemas = [schema, ENTERPRISE_SCHEMA] if resource.get(ENTERPRISE_SCHEMA) else [schema]
    body = {
        **resource,
        "schemas": schemas,
        "id": record.id,
        "meta": {
            "resourceType": resource_type,
            "created": record.created,
            "lastModified": record.last_modified,
            "version": etag_of(record.version),
        },
    }
    try:
        return model.model_validate(body, scim_policy=POLICY)
    except (ValidationError, SCIMException) as exc:
        raise library_error(exc) from None
