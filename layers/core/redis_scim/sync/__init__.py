"""Convergence: a user's desired state → a plan per target → apply → verify → audit.

One engine for the applier, the reconciler and `redis-scim plan`: `plan.plan_target` compares
(pure), `engine.SyncEngine` reads the Directory, the ownership ledger and the targets, applies and
audits; `applier.AclApplier` turns an SQS change message into `SyncEngine.converge`.
"""

from redis_scim.sync.engine import Convergence, StepResult, SyncEngine
from redis_scim.sync.plan import Drift, Rejection, Step, TargetPlan, describe_nodes, plan_target

__all__ = [
    "Convergence",
    "Drift",
    "Rejection",
    "Step",
    "StepResult",
    "SyncEngine",
    "TargetPlan",
    "describe_nodes",
    "plan_target",
]
