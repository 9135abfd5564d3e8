"""The subject of the Directory tests: one implementation, the feed it publishes to, and builders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis_scim.directory import Cause, Directory, Member, UserRecord
from redis_scim.directory.memory import ListFeed

CAUSE = Cause(request_id="req-1", operation="test")


@dataclass
class Subject:
    """A Directory under test and the feed it publishes to."""

    directory: Directory
    feed: ListFeed

    def user(self, user_name: str, /, **attributes: Any) -> UserRecord:
        return self.directory.create_user(
            {"userName": user_name, **attributes}, password_sha256=None, cause=CAUSE
        )

    def users(self, count: int, prefix: str = "user") -> list[str]:
        return [self.user(f"{prefix}{n:05d}").id for n in range(count)]

    def group(self, name: str, /, member_ids: list[str] | None = None, **attributes: Any) -> str:
        members = [Member(uid) for uid in member_ids or []]
        return self.directory.create_group(
            {"displayName": name, **attributes}, members=members, cause=CAUSE
        ).id
