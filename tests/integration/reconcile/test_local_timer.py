"""The local stack runs the ReconcilerFunction handler every RECONCILE_INTERVAL seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from reconcile_world import PASSWORD, free_port

from redis_scim.local.reconciler_timer import ReconcilerTimer, interval_from_env, reconciler_timer
from redis_scim.local.stack import LocalStack, StackConfig

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

POLICY = """\
version: 1
roles:
  reader: "+@read +@connection ~cache:*"
groups:
  Readers: [reader]
targets:
  local:
    kind: redis
    url: ${REDIS_URL}
    ghosts: delete
"""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    monkeypatch.setenv("RECONCILE_INTERVAL", "0.3")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    running = LocalStack(StackConfig(port=free_port(), policy=policy), service_factories=(reconciler_timer,))
    running.start()
    yield running
    running.stop()
    sys.modules.pop("functions.reconciler.app", None)  # the next test's stack gets its own cold start


def test_the_local_stack_reconciles_on_its_timer(stack: LocalStack) -> None:
    [timer] = stack.services
    assert isinstance(timer, ReconcilerTimer) and timer.interval == 0.3
    valkey = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    valkey.execute_command("ACL", "SETUSER", "hand-made", "on", f">{PASSWORD}", "+@all", "~*")

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        timer.runs < 1 or "hand-made" in valkey.execute_command("ACL", "USERS")
    ):
        time.sleep(0.1)

    assert "hand-made" not in valkey.execute_command("ACL", "USERS")  # a ghost, deleted per policy
    assert timer.runs >= 1


def test_reconcile_interval_defaults_to_a_minute_and_must_be_a_positive_number() -> None:
    assert interval_from_env({}) == 60.0
    assert interval_from_env({"RECONCILE_INTERVAL": "5"}) == 5.0
    with pytest.raises(ValueError, match="RECONCILE_INTERVAL"):
        interval_from_env({"RECONCILE_INTERVAL": "soon"})
    with pytest.raises(ValueError, match="positive"):
        ReconcilerTimer(lambda event, context: None, interval=0)
