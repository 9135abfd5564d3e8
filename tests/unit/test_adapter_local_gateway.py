"""The local API Gateway: an HTTP request becomes the REST proxy event API Gateway would send, and
the SCIM adapter reads the stage-less base URL from it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from redis_scim.apigateway import scim_request
from redis_scim.directory import Actor
from redis_scim.local.gateway import ApiGatewayServer, proxy_event
from redis_scim.local.stack import DEFAULT_POLICY, StackConfig, _without_password

HEADERS = [
    ("Host", "127.0.0.1:8080"),
    ("User-Agent", "curl/8.5.0"),
    ("Authorization", "Bearer t"),
    ("Accept", "application/scim+json"),
]


def test_event_shape_for_a_query_with_repeated_and_valueless_parameters() -> None:
    event = proxy_event(
        "GET", "/scim/v2/Users?filter=userName%20eq%20%22a%22&count=5&count=7&aadOptscim062020", HEADERS, b"",
        source_ip="127.0.0.1",
    )
    assert event["httpMethod"] == "GET"
    assert event["path"] == "/scim/v2/Users"
    assert event["pathParameters"] == {"proxy": "Users"}
    assert event["multiValueQueryStringParameters"] == {
        "filter": ['userName eq "a"'], "count": ["5", "7"], "aadOptscim062020": [""]
    }
    assert event["queryStringParameters"]["count"] == "7"  # API Gateway keeps the last one here
    assert event["body"] is None and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["path"] == event["path"]  # stage-less
    assert context["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "curl/8.5.0"}
    another = proxy_event("GET", "/scim/v2/Users", HEADERS, b"", source_ip="127.0.0.1")
    assert context["requestId"] and context["requestId"] != another["requestContext"]["requestId"]


def test_the_adapter_reads_the_local_base_url_and_query_from_the_event() -> None:
    event = proxy_event("GET", "/scim/v2/Users?count=5&count=7", HEADERS, b"", source_ip="127.0.0.1")
    request = scim_request(event, actor=Actor())
    assert request.base_url == "http://127.0.0.1:8080/scim/v2"
    assert request.path == "/Users"
    assert request.query == {"count": "5"}


def test_forwarding_headers_come_from_the_gateway_not_the_client() -> None:
    spoofed = [*HEADERS, ("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "203.0.113.9")]
    event = proxy_event("GET", "/scim/v2/Users", spoofed, b"", source_ip="127.0.0.1")
    assert event["multiValueHeaders"]["X-Forwarded-Proto"] == ["http"]
    assert event["multiValueHeaders"]["X-Forwarded-For"] == ["127.0.0.1"]
    assert scim_request(event, actor=Actor()).base_url.startswith("http://")


def test_text_body_is_passed_as_text_and_binary_as_base64() -> None:
    text = proxy_event("POST", "/scim/v2/Users", HEADERS, '{"userName": "zoë"}'.encode(), source_ip="::1")
    assert (text["body"], text["isBase64Encoded"]) == ('{"userName": "zoë"}', False)
    binary = proxy_event("POST", "/scim/v2/Users", HEADERS, b"\xff\xfe", source_ip="::1")
    assert binary["isBase64Encoded"] is True
    assert scim_request(binary, actor=Actor()).body == b"\xff\xfe"
    assert base64.b64decode(binary["body"]) == b"\xff\xfe"


def test_percent_encoded_path_is_decoded_like_api_gateway() -> None:
    event = proxy_event("GET", "/scim/v2/Users/a%20b", HEADERS, b"", source_ip="127.0.0.1")
    assert event["path"] == "/scim/v2/Users/a b"
    assert scim_request(event, actor=Actor()).path == "/Users/a b"


def test_stack_config_from_the_environment() -> None:
    assert StackConfig.from_env({}) == StackConfig()
    assert StackConfig().policy == DEFAULT_POLICY and StackConfig().port == 8080
    config = StackConfig.from_env(
        {"PORT": "9090", "SCIM_TOKEN": "tok", "POLICY": "examples/other.yaml", "REDIS_URL": "redis://h:1/0"}
    )
    assert (config.port, config.scim_token, config.redis_url) == (9090, "tok", "redis://h:1/0")
    assert config.policy == Path("examples/other.yaml").resolve()


def test_a_redis_url_password_is_never_printed() -> None:
    assert _without_password("redis://ops:s3cret@cache.internal:6380/0") == "redis://ops:***@cache.internal:6380/0"
    assert _without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# --- the HTTP server -----------------------------------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[tuple[ApiGatewayServer, list[dict[str, Any]]]]:
    events: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        assert context.function_name == "ScimApiFunction" and context.get_remaining_time_in_millis() > 0
        if event["path"].endswith("/boom"):
            raise RuntimeError("the function crashed")
        if event["path"].endswith("/binary"):
            return {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"},
                    "body": base64.b64encode(b"\x00\x01").decode(), "isBase64Encoded": True}
        return {"statusCode": 201, "headers": {"Content-Type": "application/scim+json", "Location": "http://x/1"},
                "body": '{"id": "1"}', "isBase64Encoded": False}

    server = ApiGatewayServer(handler, port=0)
    server.start()
    yield server, events
    server.stop()


def test_the_handler_result_becomes_the_http_response(gateway: tuple[ApiGatewayServer, list[Any]]) -> None:
    server, events = gateway
    response = httpx.post(f"http://127.0.0.1:{server.port}/scim/v2/Users", content=b'{"a": 1}', timeout=10)
    assert response.status_code == 201
    assert response.headers["location"] == "http://x/1"
    assert response.json() == {"id": "1"}
    assert events[0]["body"] == '{"a": 1}' and events[0]["httpMethod"] == "POST"


def test_base64_results_are_decoded(gateway: tuple[ApiGatewayServer, list[Any]]) -> None:
    server, _ = gateway
    assert httpx.get(f"http://127.0.0.1:{server.port}/scim/v2/binary", timeout=10).content == b"\x00\x01"


def test_head_gets_headers_only(gateway: tuple[ApiGatewayServer, list[Any]]) -> None:
    server, _ = gateway
    response = httpx.head(f"http://127.0.0.1:{server.port}/scim/v2/Users", timeout=10)
    assert response.status_code == 201 and response.content == b""


def test_paths_outside_the_scim_resource_never_reach_the_function(
    gateway: tuple[ApiGatewayServer, list[Any]],
) -> None:
    server, events = gateway
    for path in ("/", "/scim/v2", "/scim/v1/Users"):
        response = httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}
    assert events == []


def test_a_crashing_function_is_a_502_like_api_gateway(
    gateway: tuple[ApiGatewayServer, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = gateway
    response = httpx.get(f"http://127.0.0.1:{server.port}/scim/v2/boom", timeout=10)
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    assert "the function crashed" in capsys.readouterr().err
