"""Hostile input fuzzed through the SCIM handler (on the in-memory Directory): filters, PATCH
operations on users and groups, and arbitrary requests. Whatever comes in, the answer is never a
5xx, every rejection is an RFC 7644 §3.12 Error, and a rejected request changes nothing.

A short run is part of the normal suite; RUN_SLOW=1 runs the long ones (marker `slow`).
The policy loader has its own fuzz test in test_policy_loader.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_scim.directory import Actor
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.scim.handler import ScimHandler
from redis_scim.scim.http import ScimRequest

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_TYPES = {
    "invalidFilter", "tooMany", "uniqueness", "mutability", "invalidSyntax",
    "invalidPath", "noTarget", "invalidValue", "invalidVers", "sensitive",
}  # fmt: skip
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

QUICK = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck))
slow = pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="set RUN_SLOW=1")

# --- strategies ----------------------------------------------------------------------------------

# Characters that break parsers, ACL rule strings, logs and JSON: quotes, escapes, controls,
# ACL syntax, unicode look-alikes and invisible characters.
HOSTILE = st.sampled_from(
    ['"', "\\", "'", " ", "\r", "\n", "\x00", "\t", ">", "<", "#", "!", "~", "%R~", "&", "(", ")", "[",
     "]", "+@all", "*", "\u0430", "\u200b", "\u202e", "\ufeff", "\U0001f600", "eq", "or", "and", "not",
     "pr", ".", ":"]
)  # fmt: skip
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE, st.text(max_size=4)), max_size=8).map("".join)
ATTRIBUTES = st.sampled_from(
    ["userName", "USERNAME", "displayName", "externalId", "id", "active", "name.familyName", "name",
     "emails", "emails.value", "emails.type", "emails.primary", "meta.lastModified", "meta.created",
     "meta.resourceType", "groups", "groups.value", "members", "members.value", "title", "nickName",
     "password", "unknownAttr", f"{USER_SCHEMA}:userName", f"{ENTERPRISE}:manager.value",
     f"{ENTERPRISE}:employeeNumber", "urn:unknown:schema:attr", "x.y.z", ""]
)  # fmt: skip
OPERATORS = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ", "Eq", "xx"])
FILTER_VALUES = st.one_of(
    HOSTILE_TEXT.map(json.dumps),
    st.sampled_from(
        ["true", "false", "null", "1", "-1", "1e999", "0.5", '"2026-01-01T00:00:00Z"', "'single'"]
    ),
    st.integers().map(str),
    HOSTILE_TEXT,
)


def _comparisons() -> st.SearchStrategy[str]:
    compare = st.tuples(ATTRIBUTES, OPERATORS, FILTER_VALUES).map(" ".join)
    present = ATTRIBUTES.map(lambda attribute: f"{attribute} pr")
    value_path = st.tuples(
        st.sampled_from(["emails", "members", "groups", "addresses", "name"]), st.deferred(lambda: FILTERS)
    ).map(lambda parts: f"{parts[0]}[{parts[1]}]")
    return st.one_of(compare, present, value_path)


FILTERS: st.SearchStrategy[str] = st.recursive(
    _comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or ", " AND ", " Or "]), inner).map("".join),
        inner.map(lambda text: f"not ({text})"),
        inner.map(lambda text: f"({text})"),
    ),
    max_leaves=12,
)


def _mutated(text: str, data: st.DataObject) -> str:
    """The filter with a few characters deleted, doubled or replaced by hostile ones."""
    for _ in range(data.draw(st.integers(0, 3))):
        if not text:
            break
        position = data.draw(st.integers(0, len(text) - 1))
        text = (
            text[:position]
            + data.draw(st.one_of(st.just(""), HOSTILE, st.text(max_size=2)))
            + text[position:]
        )
    return text


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), HOSTILE_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(ATTRIBUTES, HOSTILE_TEXT), inner, max_size=4)
    ),
    max_leaves=10,
)
PATCH_PATHS = st.one_of(
    ATTRIBUTES,
    st.builds(lambda f: f"members[{f}]", FILTERS),
    st.builds(lambda f: f"emails[{f}].value", FILTERS),
    HOSTILE_TEXT,
    st.just(None),
)


def _operation() -> st.SearchStrategy[dict[str, Any]]:
    value = st.one_of(
        JSON_VALUES,
        st.lists(st.fixed_dictionaries({"value": st.one_of(HOSTILE_TEXT, st.just("u-known"))}), max_size=3),
        st.fixed_dictionaries({"active": st.sampled_from([True, False, "False", "true", "yes", 0])}),
        st.fixed_dictionaries({"password": HOSTILE_TEXT}),
    )
    return st.builds(
        lambda op, path, value, extra: {
            **({"op": op} if op is not None else {}),
            **({"path": path} if path is not None else {}),
            **({"value": value} if value is not None else {}),
            **extra,
        },
        st.one_of(st.sampled_from(["add", "remove", "replace", "Add", "REPLACE", "move", "", 7]), st.none()),
        PATCH_PATHS,
        st.one_of(value, st.none()),
        st.dictionaries(HOSTILE_TEXT, JSON_SCALARS, max_size=1),
    )


PATCH_BODIES = st.one_of(
    st.builds(
        lambda ops, schemas: {"schemas": schemas, "Operations": ops},
        st.lists(_operation(), max_size=5),
        st.sampled_from([[PATCH_SCHEMA], [], [USER_SCHEMA], ["x"]]),
    ),
    JSON_VALUES,
)

# --- the system under test -------------------------------------------------------------------------


class Subject:
    """A handler over a fresh Directory holding one user and one group with that user as member."""

    def __init__(self) -> None:
        self.feed = ListFeed()
        self.directory = MemoryDirectory(self.feed)
        self.handler = ScimHandler(self.directory)  # the API's limits: 1 MiB bodies
        user = self.call(
            "POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "bjensen", "password": "pw-1"}
        )
        self.user_id = user.body["id"]
        group = self.call(
            "POST",
            "/Groups",
            {"schemas": [GROUP_SCHEMA], "displayName": "admins", "members": [{"value": self.user_id}]},
        )
        self.group_id = group.body["id"]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = ScimRequest(
            method=method,
            path=path,
            query=query or {},
            headers={"content-type": "application/scim+json"},
            body=payload,
            base_url="https://scim.example/scim/v2",
            request_id="fuzz",
            actor=Actor("fuzz-token", "192.0.2.9", "fuzz"),
        )
        return self.handler.handle(request)

    def snapshot(self) -> str:
        users = self.directory.search_users(lookup=None, predicate=None, start_index=1, count=1000).records
        groups = self.directory.search_groups(lookup=None, predicate=None, start_index=1, count=1000).records
        state = {
            "users": [(u.id, u.version, u.resource, u.password_sha256) for u in users],
            "groups": [
                (g.id, g.version, g.resource, [m.value for m in self.directory.group_members(g.id)])
                for g in groups
            ],
            "changes": len(self.feed.changes),
        }
        return json.dumps(state, sort_keys=True, default=str)


def assert_well_formed(response: Any) -> None:
    """Never a 5xx (but 501 for what /ServiceProviderConfig says is unsupported: /Bulk, /Me,
    .search); every error is a SCIM Error with its status as a string and a known scimType."""
    assert response.status < 500 or response.status == 501, response.body
    assert response.headers["Content-Type"] == "application/scim+json"
    if response.status >= 400:
        body = response.body
        assert body["schemas"] == [ERROR_SCHEMA]
        assert body["status"] == str(response.status)
        assert isinstance(body["detail"], str) and body["detail"]
        assert body.get("scimType") is None or body["scimType"] in SCIM_TYPES
    if response.body is not None:
        json.dumps(response.body)


def check_rejection_changes_nothing(subject: Subject, send: Callable[[], Any]) -> Any:
    before = subject.snapshot()
    response = send()
    assert_well_formed(response)
    if response.status >= 400:
        assert subject.snapshot() == before
    return response


# --- filters ---------------------------------------------------------------------------------------


def fuzz_filter(data: st.DataObject) -> None:
    subject = Subject()
    text = _mutated(data.draw(FILTERS), data) if data.draw(st.booleans()) else data.draw(st.text(max_size=60))
    for endpoint in ("/Users", "/Groups"):
        response = check_rejection_changes_nothing(
            subject, lambda endpoint=endpoint: subject.call("GET", endpoint, query={"filter": text})
        )
        if response.status >= 400:
            assert response.status == 400 and response.body["scimType"] in {"invalidFilter", "invalidValue"}
        else:
            assert response.body["totalResults"] in (0, 1)


def fuzz_patch(data: st.DataObject) -> None:
    subject = Subject()
    body = data.draw(PATCH_BODIES)
    for path in (f"/Users/{subject.user_id}", f"/Groups/{subject.group_id}"):
        check_rejection_changes_nothing(subject, lambda path=path: subject.call("PATCH", path, body))
    # Whatever happened, the stored state still reads back cleanly, password never included.
    user = subject.call("GET", f"/Users/{subject.user_id}")
    assert_well_formed(user)
    assert user.status == 200 and "password" not in json.dumps(user.body).lower().replace('"password":', "")


def fuzz_request(data: st.DataObject) -> None:
    subject = Subject()
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]))
    resource = data.draw(
        st.sampled_from(
            ["/Users", "/Groups", f"/Users/{subject.user_id}", f"/Groups/{subject.group_id}",
             "/Users/unknown", "/ServiceProviderConfig", "/Schemas", "/ResourceTypes/User", "/Bulk", "/Me",
             "/.search", "/", "//", "/Users/a/b", "/%00", "/Users/" + "x" * 2000]
        )
    )  # fmt: skip
    query = data.draw(
        st.dictionaries(
            st.sampled_from(
                ["filter", "count", "startIndex", "attributes", "excludedAttributes", "sortBy", "x"]
            ),
            st.one_of(HOSTILE_TEXT, st.integers().map(str)),
            max_size=3,
        )
    )
    raw = data.draw(
        st.one_of(
            st.none(),
            JSON_VALUES.map(lambda value: json.dumps(value).encode()),
            st.binary(max_size=64),
            st.builds(
                lambda extra: json.dumps({"schemas": [USER_SCHEMA, GROUP_SCHEMA], **extra}).encode(),
                st.dictionaries(ATTRIBUTES, JSON_VALUES, max_size=5),
            ),
        )
    )
    check_rejection_changes_nothing(subject, lambda: subject.call(method, resource, query=query, raw=raw))


test_fuzzed_filters_are_answered_or_refused_as_scim_errors = QUICK(given(st.data())(fuzz_filter))
test_fuzzed_patches_are_applied_or_refused_without_change = QUICK(given(st.data())(fuzz_patch))
test_fuzzed_requests_never_give_a_5xx = QUICK(given(st.data())(fuzz_request))
test_long_filter_fuzz = pytest.mark.slow(slow(LONG(given(st.data())(fuzz_filter))))
test_long_patch_fuzz = pytest.mark.slow(slow(LONG(given(st.data())(fuzz_patch))))
test_long_request_fuzz = pytest.mark.slow(slow(LONG(given(st.data())(fuzz_request))))


# --- limits ----------------------------------------------------------------------------------------


def test_limits_are_scim_errors() -> None:
    subject = Subject()
    user_path, group_path = f"/Users/{subject.user_id}", f"/Groups/{subject.group_id}"
    cases = {
        "body over the limit": (
            lambda: subject.call("POST", "/Users", raw=b'{"userName": "' + b"a" * 1_048_576 + b'"}'),
            413,
            None,
        ),
        "filter over 4 KiB": (
            lambda: subject.call("GET", "/Users", query={"filter": 'userName eq "' + "a" * 5000 + '"'}),
            400,
            "invalidFilter",
        ),
        "filter nested too deep": (
            lambda: subject.call(
                "GET", "/Users", query={"filter": "not(" * 40 + 'userName eq "a"' + ")" * 40}
            ),
            400,
            "invalidFilter",
        ),
        "too many PATCH operations": (
            lambda: subject.call(
                "PATCH",
                user_path,
                {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [{"op": "replace", "path": "title", "value": "x"}] * 1001,
                },
            ),
            400,
            "tooMany",
        ),
        "too many members in a POST": (
            lambda: subject.call(
                "POST",
                "/Groups",
                {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": "big",
                    "members": [{"value": subject.user_id}] * 10_001,
                },
            ),
            400,
            "tooMany",
        ),
        "too many members in a PATCH": (
            lambda: subject.call(
                "PATCH",
                group_path,
                {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": subject.user_id}] * 10_001}
                    ],
                },
            ),
            400,
            "tooMany",
        ),
    }
    for name, (send, status, scim_type) in cases.items():
        response = check_rejection_changes_nothing(subject, send)
        assert (response.status, response.body.get("scimType")) == (status, scim_type), name
