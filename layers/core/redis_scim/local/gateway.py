"""A local stand-in for API Gateway: HTTP requests become REST proxy events for a Lambda handler.

Only `/scim/v2/...` is routed (as the template's `{proxy+}` resource), stage-less: the event's
`requestContext.path` equals its `path`, so the SCIM base URL is `http://<host>/scim/v2`.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis_scim.local.lambda_runtime import InvocationContext

SCIM_ROOT = "/scim/v2"
_GATEWAY_HEADERS = ("x-forwarded-proto", "x-forwarded-for")
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def proxy_event(
    method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes, *, source_ip: str
) -> dict[str, Any]:
    """The API Gateway REST proxy event of one HTTP request (`target` is the raw request-target)."""
    url = urlsplit(target)
    path = unquote(url.path)
    query = parse_qs(url.query, keep_blank_values=True)
    header_values: dict[str, list[str]] = {}
    for name, value in headers:
        if name.lower() not in _GATEWAY_HEADERS:
            header_values.setdefault(name, []).append(value)
    # Like API Gateway, the gateway (not the client) says how the request arrived.
    header_values.update({"X-Forwarded-Proto": ["http"], "X-Forwarded-For": [source_ip]})
    single_headers = {name: values[-1] for name, values in header_values.items()}
    lower_headers = {name.lower(): value for name, value in single_headers.items()}
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    request_id = str(uuid.uuid4())
    return {
        "resource": f"{SCIM_ROOT}/{{proxy+}}",
        "path": path,
        "httpMethod": method,
        "headers": single_headers,
        "multiValueHeaders": header_values,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path[len(SCIM_ROOT) + 1:]},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": f"{SCIM_ROOT}/{{proxy+}}",
            "httpMethod": method,
            "path": path,
            "stage": "local",
            "requestId": request_id,
            "identity": {"sourceIp": source_ip, "userAgent": lower_headers.get("user-agent")},
            "domainName": lower_headers.get("host", "127.0.0.1"),
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


class ApiGatewayServer:
    """A threaded HTTP server on `host:port` that invokes `handler` for each SCIM request."""

    def __init__(self, handler: LambdaHandler, *, host: str = "127.0.0.1", port: int = 8080,
                 function_name: str = "ScimApiFunction") -> None:
        self._handler = handler
        self._function_name = function_name
        self._server = ThreadingHTTPServer((host, port), self._request_handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="api-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._handler(event, InvocationContext(function_name=self._function_name))

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class ProxyRequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _proxy(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not urlsplit(self.path).path.startswith(SCIM_ROOT + "/"):
                    # API Gateway answers unrouted paths itself; the function never sees them.
                    self._send(403, {"Content-Type": "application/json"},
                               json.dumps({"message": "Missing Authentication Token"}).encode())
                    return
                event = proxy_event(self.command, self.path, self.headers.items(), body,
                                    source_ip=self.client_address[0])
                try:
                    result = gateway.invoke(event)
                except Exception:
                    # What API Gateway answers when the function itself fails (not a SCIM error).
                    traceback.print_exc()
                    self._send(502, {"Content-Type": "application/json"},
                               json.dumps({"message": "Internal server error"}).encode())
                    return
                payload = result.get("body") or ""
                data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
                self._send(int(result["statusCode"]), result.get("headers") or {}, data)

            def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy

            def log_message(self, format: str, *args: Any) -> None:
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

        return ProxyRequestHandler
