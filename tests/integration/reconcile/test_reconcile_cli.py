"""`redis-scim plan` and `redis-scim reconcile` against the Directory on moto (DynamoDB, reached the
way the CLI always does: boto3 with the normal AWS configuration) and real Valkey targets."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
from reconcile_world import PASSWORD, Node, password_sha256, policy_text

from redis_scim import cli
from redis_scim.directory import Cause, Member
from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.local.resources import LocalResources


@pytest.fixture
def cli_env(
    aws: boto3.Session, resources: LocalResources, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Path:
    monkeypatch.setenv("DIRECTORY_TABLE", resources.tables["DirectoryTable"])
    monkeypatch.setenv("AUDIT_TABLE", resources.tables["AuditTable"])
    return tmp_path


def test_plan_prints_a_table_and_json_and_reconcile_applies_only_with_apply(
    cli_env: Path,
    aws: boto3.Session,
    resources: LocalResources,
    nodes: dict[str, Node],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = uuid.uuid4().hex[:8]
    policy = cli_env / "policy.yaml"
    policy.write_text(policy_text(nodes, ghosts="delete"))
    directory = DynamoDirectory(resources.tables["DirectoryTable"], aws.client("dynamodb"), None)
    cause = Cause(request_id="req-cli", operation="POST /Users")
    user = directory.create_user(
        {"userName": f"clitest-{run}-bob"}, password_sha256=password_sha256(PASSWORD), cause=cause
    )
    directory.create_group({"displayName": "Readers"}, members=[Member(user.id)], cause=cause)
    ghost = f"clitest-{run}-ghost"
    nodes["main"].acl("SETUSER", ghost, "on", f">{PASSWORD}", "+@all", "~*")
    try:
        assert cli.main(["plan", "--policy", str(policy), "--target", "main"]) == cli.EXIT_CHECK_FAILED
        table = capsys.readouterr().out
        assert "TARGET  FINDING" in table
        assert f"main    missing  {user.user_name}" in table
        assert f"main    ghost    {ghost}" in table
        assert "target main: 2 node(s)" in table

        assert cli.main(["plan", "--policy", str(policy), "--json"]) == cli.EXIT_CHECK_FAILED
        planned = json.loads(capsys.readouterr().out)
        assert planned["applied"] is False
        found = {
            (d["target"], d["username"], d["finding"]) for t in planned["targets"] for d in t["discrepancies"]
        }
        assert {("main", user.user_name, "missing"), ("second", user.user_name, "missing")} <= found
        assert ("main", ghost, "ghost") in found

        assert cli.main(["reconcile", "--policy", str(policy), "--target", "main"]) == cli.EXIT_CHECK_FAILED
        dry = capsys.readouterr()
        assert "dry run" in dry.err and "missing" in dry.out
        assert not nodes["main"].can_login(user.user_name, PASSWORD) and ghost in nodes["main"].users()

        assert cli.main(["reconcile", "--apply", "--policy", str(policy), "--target", "main"]) == cli.EXIT_OK
        applied = capsys.readouterr().out
        assert "SUBJECT" in applied and "create" in applied and "delete" in applied
        assert all(node.can_login(user.user_name, PASSWORD) for node in (nodes["main"], nodes["replica"]))
        assert not nodes["second"].can_login(user.user_name, PASSWORD)  # only the target asked for
        assert ghost not in nodes["main"].users()

        assert cli.main(["plan", "--policy", str(policy), "--target", "main"]) == cli.EXIT_OK
        assert "no differences found" in capsys.readouterr().out
    finally:
        for node in nodes.values():
            ours = [name for name in node.users() if run in name]
            if ours:
                node.acl("DELUSER", *ours)


def test_an_unknown_target_is_a_usage_error(
    cli_env: Path, nodes: dict[str, Node], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = cli_env / "policy.yaml"
    policy.write_text(policy_text(nodes))
    assert cli.main(["plan", "--policy", str(policy), "--target", "nope"]) == cli.EXIT_USAGE
    assert "unknown target 'nope'" in capsys.readouterr().err
