"""What the applier's and the reconciler's cold start leave out because their invocations never need it.

pydantic (and with it powertools' batch parser models, which load only when pydantic already is)
is needed by the SCIM API alone; a backend is loaded only for a policy with a target of its kind
(docs/performance.md). Checked in fresh interpreters, as Lambda imports the module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARSER = "aws_lambda_powertools.utilities.parser"


def loaded_modules(code: str, cwd: Path, **variables: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code` in `cwd`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))}
    env |= {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: a cold start makes no AWS call
        "LAMBDA_TASK_ROOT": str(cwd),  # as in Lambda: the X-Ray SDK builds no sampling client
        "POLICY": str(ROOT / "examples" / "policy.yaml"),  # Redis targets only
        "REDIS_URL": "redis://127.0.0.1:9",
    } | variables
    command = [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"]
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return set(completed.stdout.splitlines()[-1].split())


@pytest.mark.parametrize("function", ["acl_applier", "reconciler"])
def test_the_sync_functions_load_no_pydantic(function: str) -> None:
    loaded = loaded_modules("import app", ROOT / "functions" / function)
    assert "redis_scim.targets.redis" in loaded  # the policy's Redis target was opened
    assert not {name for name in loaded if name.startswith(("pydantic", PARSER))}


def test_a_redis_only_policy_does_not_load_the_elasticache_backend() -> None:
    loaded = loaded_modules("import app", ROOT / "functions" / "reconciler")
    assert "redis_scim.targets.elasticache" not in loaded


def test_an_elasticache_only_policy_does_not_load_redis_py(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nroles: {reader: '+@read ~cache:*'}\ngroups: {Readers: [reader]}\n"
        "targets:\n  prod-cache: {kind: elasticache, region: eu-west-1, engine: valkey, user_group: users,"
        " auth: iam, username: '{userName}', allow: [default], ghosts: report}\n"
    )
    code = f"""
import boto3
from redis_scim.policy import load_policy
from redis_scim.sync.runtime import open_targets
targets = open_targets(load_policy({str(policy)!r}), session=boto3.Session(), directory_table="directory")
assert type(targets["prod-cache"]).__name__ == "ElastiCacheTarget"
"""
    loaded = loaded_modules(code, tmp_path)
    assert "redis_scim.targets.elasticache" in loaded
    assert not {name for name in loaded if name == "redis" or name.startswith("redis.")}
