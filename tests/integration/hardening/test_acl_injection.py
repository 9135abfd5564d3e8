"""The ACL-injection corpus end to end: hostile userNames, displayNames, emails, externalIds and group
names go through the SCIM handler, then the sync engine converges them onto a real Valkey.

Each value is either refused by SCIM with a clear 4xx SCIM error (nothing stored), or accepted and
then mapped to a safe Redis username, or refused by the compiler (audited as rejected, no Redis
user). Whatever happens, no Redis user ever ends up with rights beyond its roles: every ACL user on
the server is checked with ACL GETUSER against a reference reader and with ACL DRYRUN.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hardening_support import MemoryAudit, remove_users

from redis_scim import errors
from redis_scim.audit import Outcome
from redis_scim.directory import Actor, Cause
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.policy import load_policy_text
from redis_scim.scim.handler import ScimHandler
from redis_scim.scim.http import ScimRequest
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.runtime import open_targets

pytestmark = pytest.mark.redis

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
READERS = "Cache Readers"
# Three targets on one server, each naming users from a different SCIM attribute. Prefixes keep
# their names apart; none of them can be matched by a hostile value alone.
POLICY = """\
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
groups:
  "Cache Readers": [cache-reader]
targets:
  by-name:
    kind: redis
    url: {url}
    username: "{{userName}}"
  by-email:
    kind: redis
    url: {url}
    username: "e.{{emailLocalPart}}"
  by-external-id:
    kind: redis
    url: {url}
    username: "x.{{externalId}}"
"""
SAFE_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=,-]{0,127}")

CORPUS = [
    "",
    " ",
    "alice smith",
    "alice\r\nACL SETUSER evil on nopass +@all ~*",
    "alice\nfoo",
    "alice\rfoo",
    "alice\x00admin",
    "alice>secret",
    "alice<secret",
    "alice #abc",
    "#abc",
    "!" + "a" * 63,
    "alice!",
    "!alice",
    "~*",
    "%R~*",
    "%RW~*",
    "&*",
    "(+@all ~*)",
    "alice(+@all",
    "alice)",
    "+@all",
    "-@all",
    "on nopass +@all ~* &*",
    "nopass",
    "allkeys",
    "reset",
    "default",
    "DEFAULT",
    "\u0430lice",  # Cyrillic a
    "\uff41lice",  # fullwidth a
    "alice\u200b",  # zero-width space
    "alice\u202eecila",  # right-to-left override
    "\ufeffalice",
    "a" * 10_000,
    "*",
    "alice*",
    "alice?",
    "alice\t",
    '"alice"',
    "'alice'",
    "alice\\",
    "alice;FLUSHALL",
    "$6\r\nSELECT",
]


def corpus_id(value: str) -> str:
    return repr(value[:24])


class Stack:
    """The SCIM handler and the sync engine over one in-memory Directory and one Valkey."""

    def __init__(self, valkey: redis.Redis) -> None:
        self.valkey = valkey
        self.audit = MemoryAudit()
        self.directory = MemoryDirectory(ListFeed())
        self.handler = ScimHandler(self.directory)
        url = f"redis://127.0.0.1:{valkey.connection_pool.connection_kwargs['port']}"
        policy = load_policy_text(POLICY.format(url=url), env={})
        self.engine = SyncEngine(
            directory=self.directory,
            ledger=MemoryLedger(),
            policy=policy,
            targets=open_targets(policy),
            audit=self.audit,
        )
        self.readers = self.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": READERS}).body[
            "id"
        ]

    def call(self, method: str, path: str, body: Any) -> Any:
        request = ScimRequest(
            method=method,
            path=path,
            query={},
            headers={"content-type": "application/scim+json"},
            body=json.dumps(body).encode(),
            base_url="https://scim.example/scim/v2",
            request_id=f"req-{uuid.uuid4().hex[:8]}",
            actor=Actor("tok-test", "192.0.2.1", "pytest"),
        )
        return self.handler.handle(request)

    def join(self, group_id: str, user_id: str) -> None:
        operations = [{"op": "add", "path": "members", "value": [{"value": user_id}]}]
        response = self.call(
            "PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA], "Operations": operations}
        )
        assert response.status == 204, response.body

    def converge_all(self) -> None:
        for pending in list(self.directory.pending_users()):
            try:
                self.engine.converge(pending.user_id, Cause("req-sync", "applier"))
            except errors.SyncIncomplete as incomplete:
                raise AssertionError(f"a hostile value broke convergence: {incomplete.detail}") from None

    def acl_users(self) -> set[str]:
        return set(self.valkey.execute_command("ACL", "USERS"))


@pytest.fixture
def stack(valkey: redis.Redis) -> Iterator[Stack]:
    remove_users(valkey)
    yield Stack(valkey)


def rights(valkey: redis.Redis, username: str) -> dict[str, Any]:
    """What a user may do, as ACL GETUSER reports it (passwords and on/off left out)."""
    described = valkey.acl_getuser(username)
    return {name: described[name] for name in ("commands", "keys", "channels", "selectors")}


# What a reader may and may not do; a hostile user must never do more.
ALLOWED = [("GET", "cache:1")]
FORBIDDEN = [
    ("SET", "cache:1", "v"),
    ("GET", "other:1"),
    ("FLUSHALL",),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("ACL", "SETUSER", "x", "on"),
    ("PUBLISH", "cache-events", "x"),
    ("EVAL", "return 1", "0"),
    ("DEBUG", "SLEEP", "0"),
]


def dryrun(valkey: redis.Redis, username: str, command: tuple[str, ...]) -> bool:
    try:
        return bool(valkey.execute_command("ACL", "DRYRUN", username, *command) == "OK")
    except redis.ResponseError:
        return False


def assert_nobody_exceeds_a_reader(stack: Stack, reference: str) -> None:
    reader = rights(stack.valkey, reference)
    for username in stack.acl_users() - {"default"}:
        assert SAFE_USERNAME.fullmatch(username), f"unsafe Redis username {username!r}"
        assert rights(stack.valkey, username) == reader, username
        for command in ALLOWED:
            assert dryrun(stack.valkey, username, command), (username, command)
        for command in FORBIDDEN:
            assert not dryrun(stack.valkey, username, command), (username, command)


def assert_scim_error(response: Any) -> None:
    assert response.status in (400, 409), response.body
    assert response.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert response.body["status"] == str(response.status) and response.body["detail"]


def reference_reader(stack: Stack) -> str:
    """A well-behaved reader on every target: what every other user is compared with."""
    body = {
        "schemas": [USER_SCHEMA],
        "userName": "reference",
        "externalId": "reference",
        "emails": [{"value": "ref@example.com", "primary": True}],
    }
    response = stack.call("POST", "/Users", body)
    stack.join(stack.readers, response.body["id"])
    stack.converge_all()
    assert {"reference", "e.ref", "x.reference"} <= stack.acl_users()
    return "reference"


@pytest.mark.parametrize("attribute", ["userName", "displayName", "email", "externalId"])
def test_hostile_user_attributes_never_give_more_than_the_roles(stack: Stack, attribute: str) -> None:
    reference = reference_reader(stack)
    accepted, refused, rejected_by_compiler = 0, 0, 0
    for position, value in enumerate(CORPUS):
        body: dict[str, Any] = {
            "schemas": [USER_SCHEMA],
            "userName": f"user{position}",
            "externalId": f"ext{position}",
            "emails": [{"value": f"mail{position}@example.com", "primary": True}],
        }
        if attribute == "email":
            body["emails"] = [{"value": f"{value}@example.com", "primary": True}]
        else:
            body[attribute] = value
        users_before = stack.acl_users()
        response = stack.call("POST", "/Users", body)
        if response.status >= 400:
            assert_scim_error(response)
            refused += 1
            continue
        accepted += 1
        user_id = response.body["id"]
        stack.join(stack.readers, user_id)
        stack.converge_all()
        created = stack.acl_users() - users_before
        state = stack.directory.user_state(user_id)
        assert state is not None and not state.pending, f"{corpus_id(value)} left the user pending"
        rejected = [r for r in stack.audit.history(user_id) if r.outcome is Outcome.REJECTED]
        rejected_by_compiler += bool(rejected)
        # Three targets: one Redis user per target that could name the user safely, none otherwise.
        assert len(created) + len({r.target for r in rejected}) == 3, (corpus_id(value), created, rejected)
        assert_nobody_exceeds_a_reader(stack, reference)
    assert accepted and (refused or rejected_by_compiler or attribute == "displayName")


def test_hostile_group_names_never_grant_a_role(stack: Stack) -> None:
    reference = reference_reader(stack)
    for position, value in enumerate(
        [
            *CORPUS,
            "Cache Readers ",
            " Cache Readers",
            "Cache\u00a0Readers",
            "C\u0430che Readers",
            "Cache Readers\x00",
            "Cache Readers\r\n",
        ]
    ):
        user = stack.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": f"member{position}"})
        assert user.status == 201
        group = stack.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": value})
        if group.status >= 400:
            assert_scim_error(group)
            continue
        stack.join(group.body["id"], user.body["id"])
        stack.converge_all()
        # Not a member of the policy's group under any spelling: no role, so no Redis user.
        assert f"member{position}" not in stack.acl_users(), corpus_id(value)
        assert_nobody_exceeds_a_reader(stack, reference)


def test_a_case_variant_of_a_policy_group_is_refused_as_a_duplicate(stack: Stack) -> None:
    response = stack.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "CACHE READERS"})
    assert response.status == 409 and response.body["scimType"] == "uniqueness"


def test_a_user_name_shaped_like_a_password_hash_is_rejected_and_audited(stack: Stack) -> None:
    response = stack.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "#" + "a" * 64})
    assert response.status == 201
    stack.join(stack.readers, response.body["id"])
    stack.converge_all()
    assert stack.acl_users() == {"default"}
