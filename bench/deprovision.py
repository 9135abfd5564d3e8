"""Deprovisioning latency on the local stack: from the acknowledged `active: false` PATCH to the
user's live, authenticated connection being dropped by the server.

The stack runs as `make run` runs it (`python -m redis_scim.local` in its own process: SCIM API on
moto, the applier's SQS poller, embedded Valkey). 100 users (20 in quick mode) are created with a
password and put in a mapped group; once all are provisioned, each in turn opens a connection as
itself, is deactivated over HTTP, and the connection is pinged until the server closes it.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench._common import QUICK, free_port, report

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PASSWORD = "bench-Passw0rd"  # noqa: S105 - the benchmark users' password
BASE_URL_LINE = re.compile(r"SCIM base URL: (http://127\.0\.0\.1:\d+/scim/v2)")
VALKEY_LINE = re.compile(r"Valkey: redis://127\.0\.0\.1:(\d+)")
START_TIMEOUT_SECONDS = 180


class Stack:
    """`python -m redis_scim.local` in its own process, with its own Valkey and moto."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AWS_ENDPOINT_URL", "POLICY")}
        env |= {"PORT": str(free_port()), "SCIM_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "redis_scim.local"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.base_url = ""
        self.valkey_port = 0
        self._serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(START_TIMEOUT_SECONDS) or not self.base_url:
            self.stop()
            raise RuntimeError("the local stack did not start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # drained to the end, so the stack never blocks on a full pipe
            if match := VALKEY_LINE.fullmatch(line.strip()):
                self.valkey_port = int(match.group(1))
            elif match := BASE_URL_LINE.fullmatch(line.strip()):
                self.base_url = match.group(1)
                self._serving.set()
        self._serving.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def provision(scim: httpx.Client, valkey: redis.Redis, users: int) -> list[tuple[str, str]]:
    run = uuid.uuid4().hex[:6]
    created = []
    for index in range(users):
        name = f"cut-{run}-{index}"
        response = scim.post(
            "/Users", json={"schemas": [USER_SCHEMA], "userName": name, "password": PASSWORD}
        )
        response.raise_for_status()
        created.append((response.json()["id"], name))
    members = [{"value": user_id} for user_id, _ in created]
    group = {"schemas": [GROUP_SCHEMA], "displayName": "Cache Readers", "members": members}
    scim.post("/Groups", json=group).raise_for_status()
    deadline = time.monotonic() + 300
    while {name for _, name in created} - set(valkey.execute_command("ACL", "USERS")):
        if time.monotonic() > deadline:
            raise RuntimeError("the users were not provisioned within 300 s")
        time.sleep(0.1)
    return created


def cut_off_ms(scim: httpx.Client, port: int, user_id: str, name: str) -> tuple[float, float]:
    """Milliseconds from the PATCH's acknowledgement, and from its sending, to the connection's end."""
    session = redis.Redis(
        host="127.0.0.1",
        port=port,
        username=name,
        password=PASSWORD,
        single_connection_client=True,
        retry=Retry(NoBackoff(), 0),  # measure the server closing it, not redis-py reconnecting
    )
    session.ping()
    deactivate = {"op": "replace", "path": "active", "value": False}
    sent = time.perf_counter()
    scim.patch(
        f"/Users/{user_id}", json={"schemas": [PATCH_SCHEMA], "Operations": [deactivate]}
    ).raise_for_status()
    acknowledged = time.perf_counter()
    try:
        while time.perf_counter() - acknowledged < 30:
            try:
                session.ping()
            except redis.ConnectionError:
                closed = time.perf_counter()
                return (closed - acknowledged) * 1000, (closed - sent) * 1000
            time.sleep(0.002)
        raise RuntimeError(f"{name}: connection still open 30 s after deactivation")
    finally:
        session.close()


def measure(users: int) -> dict[str, Any]:
    stack = Stack()
    try:
        valkey = redis.Redis(host="127.0.0.1", port=stack.valkey_port, decode_responses=True)
        headers = {"Authorization": f"Bearer {stack.token}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as scim:
            created = provision(scim, valkey, users)
            measured = [cut_off_ms(scim, stack.valkey_port, uid, name) for uid, name in created]
    finally:
        stack.stop()
    acknowledged = sorted(after_ack for after_ack, _ in measured)
    sent = sorted(after_send for _, after_send in measured)
    return {
        "deprovision_p50_ms": round(statistics.median(acknowledged), 1),
        "deprovision_p99_ms": percentile_99(acknowledged),
        "deprovision_max_ms": round(acknowledged[-1], 1),
        "deprovision_from_request_p50_ms": round(statistics.median(sent), 1),
        "deprovision_from_request_p99_ms": percentile_99(sent),
        "deprovision_users": users,
    }


def percentile_99(ordered: list[float]) -> float:
    """The nearest-rank 99th percentile (the maximum below 100 samples)."""
    return round(ordered[math.ceil(0.99 * len(ordered)) - 1], 1)


def main() -> None:
    report(measure(20 if QUICK else 100))


if __name__ == "__main__":
    main()
