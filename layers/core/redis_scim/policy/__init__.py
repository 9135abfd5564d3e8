"""The policy: which SCIM groups get which Redis ACL roles on which targets, and the ACL compiler.

Pure code (no Redis, no AWS). Load once with `load_policy`; compile a user with `compile_user`.
"""

from redis_scim.policy.compiler import DesiredAcl, compile_user
from redis_scim.policy.loader import load_policy, load_policy_text
from redis_scim.policy.model import (
    AnyTarget,
    ElastiCacheTargetConfig,
    Policy,
    RedisTargetConfig,
    Role,
    TargetConfig,
)
from redis_scim.policy.usernames import check_username, render_username

__all__ = [
    "AnyTarget",
    "DesiredAcl",
    "ElastiCacheTargetConfig",
    "Policy",
    "RedisTargetConfig",
    "Role",
    "TargetConfig",
    "check_username",
    "compile_user",
    "load_policy",
    "load_policy_text",
    "render_username",
]
