"""SCIM protocol edges through ScimHandler.handle: discovery, routing, errors, limits, concurrency."""

from __future__ import annotations

import json
from typing import Any

import pytest

from redis_scim import errors
from redis_scim.scim.handler import ScimHandler

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def assert_error(response: Any, status: int, scim_type: str | None = None) -> None:
    assert response.status == status, response.body
    assert response.body["schemas"] == [ERROR_SCHEMA]
    assert response.body["status"] == str(status)
    assert response.body.get("scimType") == scim_type
    assert response.body["detail"]


def users_snapshot(scim: Any) -> list[dict[str, Any]]:
    return scim.get("/Users", query={"attributes": "groups,userName,name,emails,active,title"}).body[
        "Resources"
    ]


@pytest.fixture
def user(scim: Any) -> dict[str, Any]:
    return scim.post("/Users", {"userName": "ada@corp.example", "name": {"givenName": "Ada"}}).body


# --- discovery -----------------------------------------------------------------------------------


def test_service_provider_config_advertises_what_is_supported(scim):
    body = scim.get("/ServiceProviderConfig").body
    assert body["patch"] == {"supported": True}
    assert body["bulk"]["supported"] is False
    assert body["filter"] == {"supported": True, "maxResults": 1000}
    assert body["sort"] == {"supported": False}
    assert body["etag"] == {"supported": True}
    assert body["changePassword"] == {"supported": True}
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    assert None not in body.values()


def test_resource_types_and_schemas_are_list_responses_and_gettable_by_id(scim):
    types = scim.get("/ResourceTypes").body
    assert types["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
    assert {item["id"] for item in types["Resources"]} == {"User", "Group"}
    assert types["totalResults"] == 2
    assert scim.get("/ResourceTypes/User").body["endpoint"] == "/Users"
    schemas = scim.get("/Schemas").body
    ids = {item["id"] for item in schemas["Resources"]}
    assert ids == {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Group",
    }
    group_schema = scim.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group").body
    assert {attribute["name"] for attribute in group_schema["attributes"]} >= {"displayName", "members"}
    assert_error(scim.get("/Schemas/urn:nope"), 404)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"])
def test_writes_on_discovery_are_405(scim, method, path):
    assert_error(scim.request(method, path, {}), 405)


def test_unknown_paths_and_unsupported_features(scim):
    assert_error(scim.get("/Nope"), 404)
    assert_error(scim.get("/"), 404)
    assert_error(scim.get("/Users/a/b"), 404)
    assert_error(scim.request("POST", "/Bulk", {}), 501)
    assert_error(scim.request("POST", "/.search", {}), 501)
    assert_error(scim.request("POST", "/Users/.search", {}), 501)
    assert_error(scim.request("DELETE", "/Users", None), 405)
    assert_error(scim.request("POST", "/Users/abc", {}), 405)


# --- error mapping -------------------------------------------------------------------------------


def test_malformed_json_is_invalid_syntax(scim, user):
    before = users_snapshot(scim)
    assert_error(scim.request("POST", "/Users", raw=b'{"userName": '), 400, "invalidSyntax")
    assert_error(scim.request("POST", "/Users", raw=b"[1, 2]"), 400, "invalidSyntax")
    assert_error(scim.request("POST", "/Users", raw=b""), 400, "invalidSyntax")
    assert_error(scim.request("PATCH", f"/Users/{user['id']}", raw=b"\xff\xfe"), 400, "invalidSyntax")
    assert users_snapshot(scim) == before


def test_invalid_values_are_400_invalid_value_and_change_nothing(scim, user):
    before = users_snapshot(scim)
    assert_error(scim.post("/Users", {"name": {"givenName": "no username"}}), 400, "invalidValue")
    assert_error(scim.post("/Users", {"userName": "x", "active": "maybe"}), 400, "invalidValue")
    assert_error(scim.post("/Users", {"userName": "x", "emails": [{"value": 42}]}), 400, "invalidValue")
    assert_error(scim.post("/Users", {"userName": "x", "password": 42}), 400, "invalidValue")
    assert_error(
        scim.patch(f"/Users/{user['id']}", [{"op": "Move", "path": "title", "value": "x"}]),
        400,
        "invalidValue",
    )
    assert_error(
        scim.patch(f"/Users/{user['id']}", [{"op": "replace", "path": "active", "value": "maybe"}]),
        400,
        "invalidValue",
    )
    assert_error(scim.request("PATCH", f"/Users/{user['id']}", {"schemas": []}), 400, "invalidValue")
    assert users_snapshot(scim) == before


def test_bad_patch_paths_and_targets(scim, user):
    before = users_snapshot(scim)
    assert_error(
        scim.patch(f"/Users/{user['id']}", [{"op": "replace", "path": "name..x", "value": "y"}]),
        400,
        "invalidPath",
    )
    assert_error(scim.patch(f"/Users/{user['id']}", [{"op": "remove"}]), 400, "noTarget")
    assert_error(
        scim.patch(f"/Users/{user['id']}", [{"op": "replace", "path": "id", "value": "new"}]),
        400,
        "mutability",
    )
    assert users_snapshot(scim) == before


def test_a_failing_operation_rolls_back_the_whole_patch(scim, user):
    operations = [
        {"op": "replace", "path": "title", "value": "changed"},
        {"op": "replace", "path": "id", "value": "new"},
    ]
    assert_error(scim.patch(f"/Users/{user['id']}", operations), 400, "mutability")
    assert "title" not in scim.get(f"/Users/{user['id']}").body


def test_filter_errors(scim):
    assert_error(scim.get("/Users", query={"filter": 'userName xx "a"'}), 400, "invalidFilter")
    assert_error(scim.get("/Users", query={"filter": 'userName eq "a'}), 400, "invalidFilter")
    assert_error(
        scim.get("/Users", query={"filter": 'userName eq "' + "a" * 5000 + '"'}), 400, "invalidFilter"
    )
    assert_error(scim.get("/Users", query={"filter": 'groups[value eq "g"]'}), 400, "invalidFilter")
    assert scim.get("/Users", query={"filter": 'userName eq "a"', "AADOPTSCIM062020": "true"}).status == 200


def test_body_over_the_limit_is_413_and_creates_nothing(directory, scim_for):
    scim = scim_for(directory, max_body_bytes=200)
    response = scim.post("/Users", {"userName": "big@corp.example", "title": "x" * 300})
    assert_error(response, 413)
    assert scim.get("/Users").body["totalResults"] == 0


def test_unsupported_media_type_is_415(scim):
    response = scim.request("POST", "/Users", raw=b"userName=x", headers={"content-type": "text/plain"})
    assert_error(response, 415)


def test_too_many_operations_and_members(scim, user):
    operations = [{"op": "replace", "path": "title", "value": str(index)} for index in range(1001)]
    assert_error(scim.patch(f"/Users/{user['id']}", operations), 400, "tooMany")
    group = scim.post("/Groups", {"displayName": "g"}).body
    members = [{"value": f"id{index}"} for index in range(10_001)]
    assert_error(
        scim.patch(f"/Groups/{group['id']}", [{"op": "add", "path": "members", "value": members}]),
        400,
        "tooMany",
    )


def test_unauthorized_error_response_is_a_scim_error():
    response = ScimHandler(directory=None).error_response(errors.Unauthorized("missing bearer token"))  # type: ignore[arg-type]
    assert response.status == 401
    assert response.body == {"schemas": [ERROR_SCHEMA], "status": "401", "detail": "missing bearer token"}
    assert response.headers["Content-Type"] == "application/scim+json"


class ExplodingDirectory:
    def search_users(self, **_: Any) -> Any:
        raise RuntimeError("connection string postgres://secret@db")


def test_unexpected_exception_is_500_without_internals(scim_for):
    response = scim_for(ExplodingDirectory()).get("/Users")
    assert_error(response, 500)
    assert "secret" not in json.dumps(response.body)
    assert response.body["detail"] == "internal error"


# --- concurrency ---------------------------------------------------------------------------------


class RacingDirectory:
    """Loses the first `conflicts` conditional writes to a concurrent writer."""

    def __init__(self, inner: Any, conflicts: int) -> None:
        self.inner = inner
        self.conflicts = conflicts
        self.writes = 0
        self.arguments: list[dict[str, Any]] = []

    def replace_user(self, user_id: str, resource: Any, **kwargs: Any) -> Any:
        self.writes += 1
        self.arguments.append(kwargs)
        if self.conflicts:
            self.conflicts -= 1
            # A concurrent writer bumps the version, then our conditional write fails.
            current = self.inner.get_user(user_id)
            self.inner.replace_user(
                user_id,
                {**current.resource, "nickName": "other writer"},
                expected_version=None,
                password_sha256=None,
                keep_password=True,
                cause=kwargs["cause"],
            )
        return self.inner.replace_user(user_id, resource, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_patch_without_if_match_retries_on_conflict_and_keeps_both_writes(directory, scim_for):
    racing = RacingDirectory(directory, conflicts=2)
    scim = scim_for(racing)
    created = scim.post("/Users", {"userName": "race@corp.example"}).body
    response = scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "title", "value": "mine"}])
    assert response.status == 200
    assert response.body["title"] == "mine" and response.body["nickName"] == "other writer"
    assert racing.writes == 3


def test_put_and_patch_write_from_the_record_they_read(directory, scim_for):
    """The Directory is handed the record the handler read, so it need not read it again."""
    recording = RacingDirectory(directory, conflicts=0)
    scim = scim_for(recording)
    created = scim.post("/Users", {"userName": "once@corp.example"}).body
    scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "title", "value": "t"}])
    scim.put(f"/Users/{created['id']}", {"userName": "once@corp.example"})
    patched, replaced = recording.arguments
    assert patched["current"].version == patched["expected_version"] == 1
    assert "title" not in patched["current"].resource  # as read, before the PATCH
    assert replaced["current"].version == replaced["expected_version"] == 2


def test_patch_gives_up_with_503_after_repeated_conflicts(directory, scim_for):
    scim = scim_for(RacingDirectory(directory, conflicts=100))
    created = scim.post("/Users", {"userName": "race@corp.example"}).body
    response = scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "title", "value": "mine"}])
    assert_error(response, 503)
    assert "title" not in scim.get(f"/Users/{created['id']}").body


def test_conflict_with_if_match_is_412(directory, scim_for):
    scim = scim_for(RacingDirectory(directory, conflicts=1))
    created = scim.post("/Users", {"userName": "race@corp.example"}).body
    response = scim.patch(
        f"/Users/{created['id']}",
        [{"op": "replace", "path": "title", "value": "mine"}],
        headers={"if-match": created["meta"]["version"]},
    )
    assert_error(response, 412)
