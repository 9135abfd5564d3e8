"""The API Gateway adapter (`redis_scim.apigateway.ScimApi`): REST proxy events from events/ in,
proxy results out, with authentication in front of every endpoint."""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from redis_scim import errors
from redis_scim.apigateway import ScimApi, scim_request
from redis_scim.auth import BearerAuthenticator, TokenEntry
from redis_scim.directory import Actor
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.scim.handler import ScimHandler
from redis_scim.scim.http import ScimRequest, ScimResponse

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_TOKEN = "example-token-for-the-sample-events"
EXECUTE_API = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/scim/v2"


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


class StaticTokens:
    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        self._entries = list(entries)

    def entries(self) -> Sequence[TokenEntry]:
        return self._entries


class UnreadableTokens:
    def entries(self) -> Sequence[TokenEntry]:
        raise errors.ServiceUnavailable("The token store is unavailable; retry later.")


class RecordingHandler:
    """Records the `ScimRequest` the adapter builds and answers 200 with an empty body."""

    def __init__(self) -> None:
        self.requests: list[ScimRequest] = []

    def handle(self, request: ScimRequest) -> ScimResponse:
        self.requests.append(request)
        return ScimResponse(status=200, body={}, headers={})

    def error_response(self, exc: errors.RedisScimError) -> ScimResponse:
        return ScimHandler(MemoryDirectory()).error_response(exc)


@pytest.fixture
def feed() -> ListFeed:
    return ListFeed()


@pytest.fixture
def directory(feed: ListFeed) -> MemoryDirectory:
    return MemoryDirectory(feed)


@pytest.fixture
def authenticator() -> BearerAuthenticator:
    return BearerAuthenticator(StaticTokens([TokenEntry.for_token(SAMPLE_TOKEN, token_id="tok-sample")]))


@pytest.fixture
def api(directory: MemoryDirectory, authenticator: BearerAuthenticator) -> ScimApi:
    return ScimApi(ScimHandler(directory), authenticator)


def mapped(event: dict[str, Any]) -> ScimRequest:
    return scim_request(event, actor=Actor())


def body_of(result: dict[str, Any]) -> Any:
    assert result["headers"]["Content-Type"] == "application/scim+json"
    return json.loads(result["body"]) if result["body"] else None


# --- event → ScimRequest ---------------------------------------------------------------------------


def test_get_users_event_mapping() -> None:
    request = mapped(sample("scim_get_users"))
    assert request.method == "GET"
    assert request.path == "/Users"
    assert request.query == {
        "filter": 'userName eq "ada.lovelace@example.com"',
        "startIndex": "1",
        "count": "100",
    }
    assert request.base_url == EXECUTE_API  # the stage `/v1` is part of the URL the client used
    assert request.request_id == "5f0c8a52-7c1e-4f5b-9d3e-2a6b1c0d9e11"
    assert request.body is None
    assert all(name == name.lower() for name in request.headers)
    assert request.headers["authorization"] == f"Bearer {SAMPLE_TOKEN}"


def test_multi_value_query_keeps_the_first_value() -> None:
    event = sample("scim_get_users")
    event["multiValueQueryStringParameters"]["count"] = ["5", "500"]
    event["queryStringParameters"]["count"] = "500"  # API Gateway puts the last value here
    assert mapped(event).query["count"] == "5"


def test_single_value_query_alone_is_used() -> None:
    event = sample("scim_get_users")
    event["multiValueQueryStringParameters"] = None
    assert mapped(event).query["startIndex"] == "1"


def test_valueless_query_parameter_is_kept_empty() -> None:
    assert mapped(sample("scim_patch_group")).query == {"aadOptscim062020": ""}


def test_text_and_base64_bodies_give_the_same_bytes() -> None:
    event = sample("scim_post_user")
    text = mapped(event).body
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert mapped(event).body == text
    assert json.loads(text or b"")["userName"] == "ada.lovelace@example.com"


def test_invalid_base64_body_is_invalid_syntax() -> None:
    event = sample("scim_post_user")
    event["body"], event["isBase64Encoded"] = "%%% not base64", True
    with pytest.raises(errors.InvalidSyntax):
        mapped(event)


def test_custom_domain_base_path_is_kept_in_the_base_url() -> None:
    event = sample("scim_get_users")
    event["headers"]["Host"] = "scim.example.com"
    event["requestContext"]["path"] = "/identity/scim/v2/Users"
    assert mapped(event).base_url == "https://scim.example.com/identity/scim/v2"


def test_stage_less_http_event_has_no_prefix() -> None:
    event = sample("scim_get_users")
    event["headers"].update({"Host": "127.0.0.1:8080", "X-Forwarded-Proto": "http"})
    event["requestContext"]["path"] = event["path"]
    assert mapped(event).base_url == "http://127.0.0.1:8080/scim/v2"


def test_stage_is_used_when_the_paths_differ_in_encoding() -> None:
    event = sample("scim_patch_group")
    event["requestContext"]["path"] = "/v1/scim/v2/Groups/7d2c9f04%2D3b6a-4e1d-9c8b-5a4f3e2d1c0b"
    assert mapped(event).base_url == EXECUTE_API


def test_missing_host_falls_back_to_the_domain_name() -> None:
    event = sample("scim_get_users")
    del event["headers"]["Host"]
    assert mapped(event).base_url == EXECUTE_API


def test_path_outside_the_scim_root_is_not_found() -> None:
    event = sample("scim_get_users")
    event["path"] = "/scimv2/Users"
    with pytest.raises(errors.NotFound):
        mapped(event)


def test_actor_and_request_id_reach_the_handler(authenticator: BearerAuthenticator) -> None:
    handler = RecordingHandler()
    ScimApi(handler, authenticator)(sample("scim_patch_group"))
    (request,) = handler.requests
    assert request.method == "PATCH"
    assert request.path == "/Groups/7d2c9f04-3b6a-4e1d-9c8b-5a4f3e2d1c0b"
    assert request.request_id == "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e13"
    assert request.actor == Actor("tok-sample", "198.51.100.23", "Microsoft.Identity.Provisioning")


def test_header_names_of_any_case_are_found(authenticator: BearerAuthenticator) -> None:
    handler = RecordingHandler()
    event = sample("scim_get_users")
    event["headers"] = {"AUTHORIZATION": f"bearer {SAMPLE_TOKEN}", "host": "h.example", "USER-AGENT": "Okta"}
    assert ScimApi(handler, authenticator)(event)["statusCode"] == 200
    assert handler.requests[0].actor.user_agent == "Okta"
    assert handler.requests[0].headers["authorization"] == f"bearer {SAMPLE_TOKEN}"


# --- whole requests through the real handler ---------------------------------------------------------


def test_post_user_gives_201_with_location_equal_to_meta_location(api: ScimApi, feed: ListFeed) -> None:
    result = api(sample("scim_post_user"))
    assert result["statusCode"] == 201
    created = body_of(result)
    assert created["meta"]["location"] == f"{EXECUTE_API}/Users/{created['id']}"
    assert result["headers"]["Location"] == created["meta"]["location"]
    assert result["isBase64Encoded"] is False
    (change,) = feed.changes
    assert change.cause.request_id == "0b7e4c2d-9a1f-4e3b-8c5d-6f7a8b9c0d12"
    assert change.cause.actor == Actor("tok-sample", "198.51.100.23", "Okta SCIM Client 1.0.0")


def test_get_users_filter_through_the_adapter(api: ScimApi) -> None:
    api(sample("scim_post_user"))
    listed = body_of(api(sample("scim_get_users")))
    assert listed["totalResults"] == 1
    assert listed["Resources"][0]["userName"] == "ada.lovelace@example.com"


def test_patch_group_sample_adds_the_member(api: ScimApi, directory: MemoryDirectory) -> None:
    user = body_of(api(sample("scim_post_user")))
    group_event = sample("scim_post_user")
    group_event["path"] = "/scim/v2/Groups"
    group_event["requestContext"]["path"] = "/v1/scim/v2/Groups"
    group_event["body"] = json.dumps(
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "cache-readers"}
    )
    group = body_of(api(group_event))
    event = sample("scim_patch_group")
    event["path"] = f"/scim/v2/Groups/{group['id']}"
    event["requestContext"]["path"] = f"/v1{event['path']}"
    event["body"] = event["body"].replace("2f9a1c3e-8b7d-4e6f-a5c4-3b2a1d0e9f8c", user["id"])
    assert api(event)["statusCode"] in (200, 204)
    assert [m.value for m in directory.group_members(group["id"])] == [user["id"]]


def test_no_content_responses_still_carry_the_scim_content_type(api: ScimApi) -> None:
    user = body_of(api(sample("scim_post_user")))
    event = sample("scim_get_users")
    event.update(
        httpMethod="DELETE",
        path=f"/scim/v2/Users/{user['id']}",
        queryStringParameters=None,
        multiValueQueryStringParameters=None,
    )
    event["requestContext"]["path"] = f"/v1{event['path']}"
    result = api(event)
    assert (result["statusCode"], result["body"]) == (204, "")
    assert result["headers"]["Content-Type"] == "application/scim+json"


# --- authentication ------------------------------------------------------------------------------


def test_discovery_without_a_token_is_401_with_a_bearer_challenge(api: ScimApi) -> None:
    result = api(sample("scim_unauthorized"))
    assert result["statusCode"] == 401
    assert result["headers"]["WWW-Authenticate"] == 'Bearer realm="redis-scim"'
    error = body_of(result)
    assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert error["status"] == "401"


@pytest.mark.parametrize(
    "endpoint", ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas", "/Users", "/Groups/some-id"]
)
def test_every_endpoint_rejects_a_wrong_token(api: ScimApi, endpoint: str) -> None:
    event = sample("scim_get_users")
    event["path"] = f"/scim/v2{endpoint}"
    event["headers"]["Authorization"] = "Bearer wrong-token"
    result = api(event)
    assert result["statusCode"] == 401
    assert result["headers"]["WWW-Authenticate"] == 'Bearer realm="redis-scim", error="invalid_token"'


def test_rejected_request_changes_nothing(api: ScimApi, directory: MemoryDirectory, feed: ListFeed) -> None:
    event = sample("scim_post_user")
    event["headers"]["Authorization"] = "Bearer wrong-token"
    assert api(event)["statusCode"] == 401
    assert directory.search_users(lookup=None, predicate=None, start_index=1, count=10).total == 0
    assert feed.changes == []


def test_rejection_is_logged_with_its_reason_and_counted_never_with_the_token(
    api: ScimApi, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    event = sample("scim_get_users")
    event["headers"]["Authorization"] = "Bearer a-guessed-secret-token"
    with caplog.at_level(logging.WARNING):
        api(event)
    (record,) = caplog.records
    assert record.reason == "unknown"  # type: ignore[attr-defined]
    assert record.source_ip == "198.51.100.23"  # type: ignore[attr-defined]
    emitted = capsys.readouterr().out
    (metric,) = [json.loads(line) for line in emitted.splitlines() if '"_aws"' in line]
    assert metric["AuthFailures"] == [1.0] and metric["reason"] == "unknown"
    assert metric["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RedisScim"
    assert "a-guessed-secret-token" not in caplog.text + emitted + json.dumps(record.__dict__, default=str)


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [(None, "missing"), ("Basic dXNlcjpwYXNz", "malformed"), ("Bearer nope", "unknown")],
)
def test_each_reason_is_its_own_metric_dimension(
    api: ScimApi, capsys: pytest.CaptureFixture[str], authorization: str | None, reason: str
) -> None:
    event = sample("scim_get_users")
    event["headers"].pop("Authorization")
    if authorization:
        event["headers"]["Authorization"] = authorization
    api(event)
    (metric,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metric["reason"] == reason


def test_unreadable_token_store_is_503_without_internals(directory: MemoryDirectory) -> None:
    api = ScimApi(ScimHandler(directory), BearerAuthenticator(UnreadableTokens()))
    result = api(sample("scim_get_users"))
    assert result["statusCode"] == 503
    assert body_of(result) == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "503",
        "detail": "The token store is unavailable; retry later.",
    }
    assert "WWW-Authenticate" not in result["headers"]


def test_sample_events_are_not_changed_by_the_adapter(api: ScimApi) -> None:
    event = sample("scim_post_user")
    original = copy.deepcopy(event)
    api(event)
    assert event == original
