"""Fixtures for the unit tests: a Directory for the SCIM handler tests."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from redis_scim import errors
from redis_scim.directory import Cause, GroupChange, GroupRecord, GroupRef, Member, Page, UserRecord


class FakeDirectory:
    """A minimal in-test Directory following the port's rules (until the memory directory lands)."""

    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        self.members: dict[str, dict[str, Member]] = {}
        self._clock = itertools.count()

    def _now(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{next(self._clock):06d}Z"

    def _check_unique(self, kind: str, resource: dict[str, Any], own_id: str | None) -> None:
        records = self.users if kind == "user" else self.groups
        name_key = "userName" if kind == "user" else "displayName"
        for record in records.values():
            if record.id == own_id:
                continue
            if (
                str(record.resource.get(name_key, "")).casefold()
                == str(resource.get(name_key, "")).casefold()
            ):
                raise errors.Uniqueness(f"{name_key} is taken")
            if resource.get("externalId") and record.resource.get("externalId") == resource.get("externalId"):
                raise errors.Uniqueness("externalId is taken")

    def create_user(
        self, resource: dict[str, Any], *, password_sha256: str | None, cause: Cause
    ) -> UserRecord:
        self._check_unique("user", resource, None)
        now = self._now()
        record = UserRecord(uuid.uuid4().hex, 1, now, now, copy.deepcopy(resource), password_sha256)
        self.users[record.id] = record
        return copy.deepcopy(record)

    def get_user(self, user_id: str) -> UserRecord:
        if user_id not in self.users:
            raise errors.NotFound(f"user {user_id} not found")
        return copy.deepcopy(self.users[user_id])

    def replace_user(self, user_id, resource, *, expected_version, password_sha256, keep_password, cause):
        current = self.users.get(user_id)
        if current is None:
            raise errors.NotFound(user_id)
        if expected_version is not None and expected_version != current.version:
            raise errors.VersionConflict("conflict")
        self._check_unique("user", resource, user_id)
        current.resource = copy.deepcopy(resource)
        current.version += 1
        current.last_modified = self._now()
        if not keep_password:
            current.password_sha256 = password_sha256
        return copy.deepcopy(current)

    def delete_user(self, user_id, *, expected_version, cause):
        current = self.users.get(user_id)
        if current is None:
            raise errors.NotFound(user_id)
        if expected_version is not None and expected_version != current.version:
            raise errors.VersionConflict("conflict")
        del self.users[user_id]
        for members in self.members.values():
            members.pop(user_id, None)

    def _search(self, records, lookup, predicate, start_index, count) -> Page:
        matches = []
        for record in sorted(records, key=lambda r: (r.created, r.id)):
            if lookup is not None:
                attribute, value = lookup
                actual = record.id if attribute == "id" else record.resource.get(attribute)
                if attribute in ("userName", "displayName"):
                    if str(actual).casefold() != value.casefold():
                        continue
                elif actual != value:
                    continue
            if predicate is not None and not predicate(record):
                continue
            matches.append(record)
        return Page(len(matches), copy.deepcopy(matches[start_index - 1 : start_index - 1 + count]))

    def search_users(self, *, lookup, predicate, start_index, count) -> Page:
        return self._search(self.users.values(), lookup, predicate, start_index, count)

    def user_groups(self, user_id: str) -> list[GroupRef]:
        return [
            GroupRef(group_id, self.groups[group_id].display_name)
            for group_id, members in self.members.items()
            if user_id in members
        ]

    def _check_members(self, members: Sequence[Member]) -> None:
        for member in members:
            if member.value not in self.users:
                raise errors.InvalidValue(f"member {member.value} is not a user")

    def create_group(self, resource, *, members, cause) -> GroupRecord:
        self._check_unique("group", resource, None)
        self._check_members(members)
        now = self._now()
        record = GroupRecord(uuid.uuid4().hex, 1, now, now, copy.deepcopy(resource))
        self.groups[record.id] = record
        self.members[record.id] = {member.value: member for member in members}
        return copy.deepcopy(record)

    def get_group(self, group_id: str) -> GroupRecord:
        if group_id not in self.groups:
            raise errors.NotFound(f"group {group_id} not found")
        return copy.deepcopy(self.groups[group_id])

    def group_members(self, group_id: str) -> list[Member]:
        self.get_group(group_id)
        return list(self.members[group_id].values())

    def change_group(self, group_id, change: GroupChange, *, expected_version, cause) -> GroupRecord:
        current = self.groups.get(group_id)
        if current is None:
            raise errors.NotFound(group_id)
        if expected_version is not None and expected_version != current.version:
            raise errors.VersionConflict("conflict")
        if change.resource is not None:
            self._check_unique("group", change.resource, group_id)
        self._check_members(change.replace_members or change.add_members)
        if change.resource is not None:
            current.resource = copy.deepcopy(change.resource)
        members = self.members[group_id]
        if change.replace_members is not None:
            members.clear()
            members.update({member.value: member for member in change.replace_members})
        for member in change.add_members:
            members.setdefault(member.value, member)
        for member_id in change.remove_members:
            members.pop(member_id, None)
        current.version += 1
        current.last_modified = self._now()
        return copy.deepcopy(current)

    def delete_group(self, group_id, *, expected_version, cause) -> None:
        current = self.get_group(group_id)
        if expected_version is not None and expected_version != current.version:
            raise errors.VersionConflict("conflict")
        del self.groups[group_id]
        del self.members[group_id]

    def search_groups(self, *, lookup, predicate, start_index, count) -> Page:
        return self._search(self.groups.values(), lookup, predicate, start_index, count)


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory()


BASE_URL = "https://api.example/prod/scim/v2"


class ScimClient:
    """Drives `ScimHandler.handle` the way the Lambda adapter does, with JSON in and out."""

    base_url = BASE_URL

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        from redis_scim.directory import Actor
        from redis_scim.scim.http import ScimRequest

        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = ScimRequest(
            method=method,
            path=path,
            query=query or {},
            headers={"content-type": "application/scim+json", **(headers or {})},
            body=payload,
            base_url=BASE_URL,
            request_id="req-1",
            actor=Actor(token_id="t1", source_ip="192.0.2.1", user_agent="pytest"),
        )
        response = self.handler.handle(request)
        if response.body is not None:
            assert response.headers["Content-Type"] == "application/scim+json"
            json.dumps(response.body)  # always serialisable
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path: str, operations: list[dict[str, Any]], **kwargs: Any) -> Any:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def scim(directory: Any) -> ScimClient:
    from redis_scim.scim.handler import ScimHandler

    return ScimClient(ScimHandler(directory))
