"""API Gateway REST (v1) proxy events in front of the SCIM handler, with bearer authentication first.

`ScimApi` is what functions/scim_api/app.py calls: it checks the token, turns the event into a
`ScimRequest` (path relative to /scim/v2, the base URL the client actually used), asks the
handler, and shapes the `ScimResponse` into a proxy result. The local stack feeds it the same events.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Protocol

from redis_scim import errors
from redis_scim.auth import AuthenticationFailed, BearerAuthenticator
from redis_scim.directory import Actor
from redis_scim.observability import MetricName, count_event, logger
from redis_scim.scim.http import SCIM_CONTENT_TYPE, ScimRequest, ScimResponse

SCIM_ROOT = "/scim/v2"


class ScimRequestHandler(Protocol):
    def handle(self, request: ScimRequest) -> ScimResponse: ...

    def error_response(self, exc: errors.RedisScimError) -> ScimResponse: ...


class ScimApi:
    """Authenticates API Gateway proxy events and answers them with a SCIM handler."""

    def __init__(self, handler: ScimRequestHandler, authenticator: BearerAuthenticator) -> None:
        self._handler = handler
        self._authenticator = authenticator

    def __call__(self, event: Mapping[str, Any]) -> dict[str, Any]:
        headers = lower_case_headers(event)
        identity = (event.get("requestContext") or {}).get("identity") or {}
        source_ip, user_agent = identity.get("sourceIp"), headers.get("user-agent")
        try:
            # Every endpoint, discovery included, needs a valid token: checked before anything else.
            token_id = self._authenticator.authenticate(headers.get("authorization"))
            request = scim_request(event, actor=Actor(token_id, source_ip, user_agent))
            response = self._handler.handle(request)
        except AuthenticationFailed as failure:
            logger.warning(
                "SCIM request rejected: no valid bearer token",
                extra={"reason": failure.reason.value, "token_id": failure.token_id,
                       "source_ip": source_ip, "user_agent": user_agent},
            )
            count_event(MetricName.AUTH_FAILURES, reason=failure.reason.value)
            response = self._handler.error_response(failure)
            response.headers["WWW-Authenticate"] = failure.challenge
        except errors.RedisScimError as exc:
            response = self._handler.error_response(exc)
        return proxy_result(response)


def lower_case_headers(event: Mapping[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in (event.get("headers") or {}).items()}


def scim_request(event: Mapping[str, Any], *, actor: Actor) -> ScimRequest:
    """The `ScimRequest` of an API Gateway REST proxy event."""
    path = event.get("path") or ""
    if path != SCIM_ROOT and not path.startswith(SCIM_ROOT + "/"):
        raise errors.NotFound(f"{path} is not a SCIM endpoint")
    headers = lower_case_headers(event)
    context = event.get("requestContext") or {}
    base_path = _base_path(path, headers, context)
    return ScimRequest(
        method=str(event.get("httpMethod", "GET")).upper(),
        path=path[len(SCIM_ROOT):] or "/",
        query=_query(event),
        headers=headers,
        body=_body(event),
        base_url=f"{_scheme(headers)}://{_host(headers, context)}{base_path}{SCIM_ROOT}",
        request_id=str(context.get("requestId", "")),
        actor=actor,
    )


def proxy_result(response: ScimResponse) -> dict[str, Any]:
    """The Lambda proxy result of a `ScimResponse`: every response is `application/scim+json`."""
    headers = {**response.headers, "Content-Type": SCIM_CONTENT_TYPE}
    body = "" if response.body is None else json.dumps(response.body, separators=(",", ":"))
    return {"statusCode": response.status, "headers": headers, "body": body, "isBase64Encoded": False}


def _query(event: Mapping[str, Any]) -> dict[str, str]:
    # A repeated parameter (?filter=a&filter=b) keeps its first value, like most web frameworks.
    multi = event.get("multiValueQueryStringParameters") or {}
    single = event.get("queryStringParameters") or {}
    query = {name: values[0] for name, values in multi.items() if values}
    return {**single, **query}


def _body(event: Mapping[str, Any]) -> bytes | None:
    body = event.get("body")
    if body is None:
        return None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise errors.InvalidSyntax("the request body is not valid base64") from None
    return str(body).encode()


def _scheme(headers: Mapping[str, str]) -> str:
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded if forwarded in ("http", "https") else "https"


def _host(headers: Mapping[str, str], context: Mapping[str, Any]) -> str:
    return headers.get("host") or str(context.get("domainName", "localhost"))


def _base_path(path: str, headers: Mapping[str, str], context: Mapping[str, Any]) -> str:
    """What precedes the resource path in the URL the client used: the stage (`/v1`) on the
    execute-api domain, a custom domain's base path mapping, or nothing at all.

    `requestContext.path` is the full path the client sent; `path` is the resource path.
    """
    full_path = str(context.get("path") or path)
    if full_path.endswith(path):
        return full_path[: len(full_path) - len(path)].rstrip("/")
    # The two differ in encoding (a percent-escaped id): on execute-api the prefix is the stage.
    if ".execute-api." in _host(headers, context) and context.get("stage"):
        return f"/{context['stage']}"
    return ""
