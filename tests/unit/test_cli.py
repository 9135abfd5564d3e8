"""The `redis-scim` command line, run in-process: `audit --user` against moto, exit codes, AWS defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger
from moto import mock_aws

from redis_scim import cli
from redis_scim.audit import Action, AuditEntry, AuditTrail, Outcome
from redis_scim.audit.store import to_item
from redis_scim.directory import Actor, Cause
from redis_scim.local.resources import create_resources

USER_ID = "2819c223-7f76-453a-919d-413861904646"
_AWS_ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AUDIT_TABLE",
)


def entry(**overrides: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "user_id": USER_ID,
        "user_name": "bjensen@example.com",
        "redis_username": "bjensen",
        "target": "local",
        "node_count": 1,
        "action": Action.CREATE,
        "outcome": Outcome.APPLIED,
        "verified": True,
        "cause": Cause("req-1", "POST /Users", Actor("tok-1", "203.0.113.7", "Okta SCIM Client 1.0")),
        "acl_after": "on resetpass (+@read ~cache:*)",
    }
    return AuditEntry(**{**values, **overrides})


@pytest.fixture
def clean_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS configuration at all: no variables, no config files, no instance metadata."""
    for name in _AWS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def trail(clean_aws_environment: pytest.MonkeyPatch) -> Iterator[AuditTrail]:
    """The template's tables on moto (in-process: moto intercepts AWS hostnames, not AWS_ENDPOINT_URL;
    tests/integration/audit runs the installed CLI against a moto server with AWS_ENDPOINT_URL)."""
    clean_aws_environment.setenv("AWS_ACCESS_KEY_ID", "testing")
    clean_aws_environment.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        session = cli.aws_session()
        table = create_resources(session).tables["AuditTable"]
        assert table == "redis-scim-audit"  # the CLI's default
        yield AuditTrail(
            table, session.client("dynamodb"), logger=Logger(service="cli-test", stream=sys.stderr)
        )


def history_of_bjensen(trail: AuditTrail) -> None:
    trail.append(entry())
    trail.append(
        entry(
            action=Action.UPDATE,
            acl_before="on resetpass (+@read ~cache:*)",
            acl_after="on resetpass (+@read ~cache:*) (+@write ~sessions:*)",
            cause=Cause("req-2", "PATCH /Groups/g1", Actor("tok-1", "203.0.113.7", None)),
        )
    )
    trail.append(
        entry(
            action=Action.DISABLE,
            acl_before="on resetpass (+@read ~cache:*) (+@write ~sessions:*)",
            acl_after="off resetpass (+@read ~cache:*) (+@write ~sessions:*)",
            cause=Cause("run-7", "reconciler"),
        )
    )


def test_audit_prints_the_history_and_verifies_the_chain(
    trail: AuditTrail, capsys: pytest.CaptureFixture[str]
) -> None:
    history_of_bjensen(trail)
    assert cli.main(["audit", "--user", "BJensen@example.com"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"user bjensen@example.com (SCIM id {USER_ID})"
    assert lines[1].endswith("#1  local  create  applied  verified")
    assert (
        lines[2]
        == "    by POST /Users (request req-1, token tok-1, from 203.0.113.7, agent Okta SCIM Client 1.0)"
    )
    assert lines[3] == "    acl: (none) -> on resetpass (+@read ~cache:*)"
    assert "    by reconciler (request run-7)" in lines
    assert (
        "    acl: on resetpass (+@read ~cache:*) (+@write ~sessions:*) -> off resetpass (+@read ~cache:*) "
        "(+@write ~sessions:*)" in lines
    )
    assert lines[-1] == "chain verified: 3 records"


def test_audit_json(trail: AuditTrail, capsys: pytest.CaptureFixture[str]) -> None:
    history_of_bjensen(trail)
    assert cli.main(["audit", "--user", "bjensen@example.com", "--json"]) == cli.EXIT_OK
    output = json.loads(capsys.readouterr().out)
    assert output["verified"] is True
    (user,) = output["users"]
    assert user["user_id"] == USER_ID
    assert [r["action"] for r in user["records"]] == ["create", "update", "disable"]
    assert user["chain"] == {"ok": True, "count": 3, "broken_at": None, "reason": None, "expired_before": 0}


def test_audit_finds_a_user_by_scim_id_and_by_a_former_name(
    trail: AuditTrail, capsys: pytest.CaptureFixture[str]
) -> None:
    history_of_bjensen(trail)
    trail.append(entry(user_name="barbara.jensen@example.com", action=Action.DELETE, acl_after=None))
    assert cli.main(["audit", "--user", USER_ID]) == cli.EXIT_OK
    by_id = capsys.readouterr().out
    assert cli.main(["audit", "--user", "bjensen@example.com"]) == cli.EXIT_OK
    assert capsys.readouterr().out == by_id
    assert "user bjensen@example.com / barbara.jensen@example.com" in by_id
    assert by_id.splitlines()[-1] == "chain verified: 4 records"


def test_audit_of_an_unknown_user_fails(trail: AuditTrail, capsys: pytest.CaptureFixture[str]) -> None:
    history_of_bjensen(trail)
    assert cli.main(["audit", "--user", "nobody@example.com"]) == cli.EXIT_CHECK_FAILED
    assert capsys.readouterr().out == "no audit records for user nobody@example.com\n"
    assert cli.main(["audit", "--user", "nobody@example.com", "--json"]) == cli.EXIT_CHECK_FAILED
    assert json.loads(capsys.readouterr().out) == {
        "user": "nobody@example.com",
        "verified": False,
        "users": [],
    }


def test_audit_of_a_tampered_history_fails(trail: AuditTrail, capsys: pytest.CaptureFixture[str]) -> None:
    history_of_bjensen(trail)
    forged = to_item(trail.history(USER_ID)[1])
    forged["verified"] = {"BOOL": False}
    trail.client.put_item(TableName=trail.table_name, Item=forged)
    assert cli.main(["audit", "--user", "bjensen@example.com"]) == cli.EXIT_CHECK_FAILED
    assert capsys.readouterr().out.splitlines()[-1] == (
        "chain BROKEN at record 2: seq 2: content does not match its hash"
    )


def test_audit_of_an_unreadable_record_fails(trail: AuditTrail, capsys: pytest.CaptureFixture[str]) -> None:
    history_of_bjensen(trail)
    trail.client.put_item(
        TableName=trail.table_name, Item={"pk": {"S": f"USER#{USER_ID}"}, "sk": {"S": "SEQ#0000000002"}}
    )
    assert cli.main(["audit", "--user", USER_ID]) == cli.EXIT_CHECK_FAILED
    assert capsys.readouterr().out.splitlines()[-1].startswith("chain BROKEN at record 2: unreadable record")


def test_audit_table_can_be_overridden_and_aws_errors_exit_3(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_TABLE", "no-such-table")
    assert cli.main(["audit", "--user", "bjensen@example.com"]) == cli.EXIT_AWS_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot read the audit trail" in captured.err and "ResourceNotFoundException" in captured.err


@pytest.mark.parametrize("argv", [[], ["audit"], ["audit", "--user"], ["frobnicate"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_USAGE
    assert "usage: redis-scim" in capsys.readouterr().err


def test_a_subcommand_is_one_function_and_one_registration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def add_hello_command(subparsers: Any) -> None:
        subparsers.add_parser("hello", help="say hello").set_defaults(run=lambda args: print("hello") or 0)

    monkeypatch.setattr(cli, "SUBCOMMANDS", (*cli.SUBCOMMANDS, add_hello_command))
    assert cli.main(["hello"]) == cli.EXIT_OK
    assert capsys.readouterr().out == "hello\n"
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "audit" in help_text and "hello" in help_text


def test_aws_session_defaults_for_the_local_stack(clean_aws_environment: pytest.MonkeyPatch) -> None:
    clean_aws_environment.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    session = cli.aws_session()
    credentials = session.get_credentials()
    assert session.region_name == "us-east-1"
    assert credentials is not None and credentials.access_key == "local"


def test_aws_session_keeps_configured_region_and_credentials(
    clean_aws_environment: pytest.MonkeyPatch,
) -> None:
    clean_aws_environment.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    clean_aws_environment.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    clean_aws_environment.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    clean_aws_environment.setenv("AWS_SECRET_ACCESS_KEY", "example")
    session = cli.aws_session()
    credentials = session.get_credentials()
    assert session.region_name == "eu-west-1"
    assert credentials is not None and credentials.access_key == "AKIAEXAMPLE"


def test_aws_session_never_invents_credentials_for_real_aws(
    clean_aws_environment: pytest.MonkeyPatch,
) -> None:
    session = cli.aws_session()
    assert session.region_name == "us-east-1"
    assert session.get_credentials() is None


def test_importing_the_cli_stays_light() -> None:
    code = "import sys, redis_scim.cli; print(sorted({'boto3', 'botocore', 'pydantic'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_boto3_is_what_the_cli_uses() -> None:
    assert isinstance(cli.aws_session(), boto3.Session)
