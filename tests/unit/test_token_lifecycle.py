"""Token lifecycle: `redis-scim token create|list|revoke` on moto, revoked and expired tokens refused
by the API, "last used" recorded at most once per interval without the token, and token age metrics."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from redis_scim import cli
from redis_scim.apigateway import ScimApi
from redis_scim.auth import (
    AuthenticationFailed,
    BearerAuthenticator,
    RejectionReason,
    SecretsManagerTokens,
    TokenAdminError,
    TokenEntry,
    hash_token,
    parse_duration,
    parse_token_list,
)
from redis_scim.auth import tokens as tokens_module
from redis_scim.auth.usage import DynamoTokenUsage
from redis_scim.directory.memory import ListFeed, MemoryDirectory
from redis_scim.local.resources import create_resources
from redis_scim.observability import MetricName
from redis_scim.scim.handler import ScimHandler

SECRET = "redis-scim/scim-tokens"
TABLE = "redis-scim-directory"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class RecordingMetrics:
    """Stands in for the powertools `Metrics` object: keeps what was added."""

    def __init__(self) -> None:
        self.added: list[tuple[str, float]] = []

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.added.append((name, value))


class CountingDynamoDB:
    """A real (moto) DynamoDB client that counts the writes made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.update_calls = 0

    def update_item(self, **kwargs: Any) -> Any:
        self.update_calls += 1
        return self._client.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[boto3.Session]:
    """The template's resources (the token secret starts as `[]`) on in-process moto, with the
    environment the CLI sees against the local stack: credentials and region only."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "TOKEN_SECRET_ID", "DIRECTORY_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        resources = create_resources(session)
        assert resources.tables["DirectoryTable"] == TABLE
        yield session


def store_entries(session: boto3.Session, entries: list[TokenEntry]) -> None:
    value = json.dumps([entry.to_json() for entry in entries])
    session.client("secretsmanager").put_secret_value(SecretId=SECRET, SecretString=value)


def stored_secret(session: boto3.Session) -> str:
    return str(session.client("secretsmanager").get_secret_value(SecretId=SECRET)["SecretString"])


def create(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """Run `token create`; (the token printed on stdout, what went to stderr)."""
    assert cli.main(["token", "create", *args]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    return out.strip(), err


def listing(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert cli.main(["token", "list", "--json"]) == cli.EXIT_OK
    return {row["id"]: row for row in json.loads(capsys.readouterr().out)}


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        (" 1D ", timedelta(1)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "90", "d", "-1d", "1.5d", "90m", "never", "1d2h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(TokenAdminError, match="not a duration"):
        parse_duration(text)


# --- create ----------------------------------------------------------------------------------------


def test_create_prints_the_token_once_and_stores_only_its_hash(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    token, notice = create(capsys, "--expires", "90d", "--id", "okta-prod")
    assert len(token) >= 43 and "\n" not in token  # 256 random bits, alone on stdout for scripts
    assert "okta-prod" in notice and "only this once" in notice and token not in notice
    secret = stored_secret(aws)
    assert token not in secret
    (entry,) = parse_token_list(json.loads(secret))
    assert entry.id == "okta-prod" and entry.sha256 == hash_token(token)
    assert entry.expires is not None and entry.expires - entry.created == timedelta(days=90)
    assert abs(datetime.now(UTC) - entry.created) < timedelta(minutes=1)
    # The API accepts it as soon as it reads the list.
    authenticator = BearerAuthenticator(SecretsManagerTokens(SECRET, aws.client("secretsmanager"), max_age=0))
    assert authenticator.authenticate(f"Bearer {token}") == "okta-prod"


def test_create_defaults_to_90_days_and_a_generated_id(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = create(capsys)
    second, _ = create(capsys)
    assert first != second
    entries = parse_token_list(json.loads(stored_secret(aws)))
    assert len({entry.id for entry in entries}) == 2
    for entry in entries:
        assert entry.id.startswith("tok-") and entry.expires is not None
        assert entry.expires - entry.created == timedelta(days=90)


def test_create_refuses_a_taken_id_a_bad_id_and_a_bad_duration(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    create(capsys, "--id", "okta")
    before = stored_secret(aws)
    assert cli.main(["token", "create", "--id", "okta"]) == cli.EXIT_CHECK_FAILED
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["token", "create", "--id", "bad id\nwith newline"]) == cli.EXIT_CHECK_FAILED
    assert "is not a token id" in capsys.readouterr().err
    assert cli.main(["token", "create", "--expires", "forever"]) == cli.EXIT_USAGE
    assert "not a duration" in capsys.readouterr().err
    assert stored_secret(aws) == before


# --- list and revoke -------------------------------------------------------------------------------


def test_list_shows_created_expires_last_used_and_state(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    token, _ = create(capsys, "--id", "okta", "--expires", "30d")
    create(capsys, "--id", "entra")
    usage = DynamoTokenUsage(TABLE, aws.client("dynamodb"), metrics=RecordingMetrics())
    (okta,) = [e for e in parse_token_list(json.loads(stored_secret(aws))) if e.id == "okta"]
    used_at = datetime.now(UTC).replace(microsecond=0)
    usage.record(okta, used_at)

    rows = listing(capsys)
    assert set(rows) == {"okta", "entra"}
    assert rows["okta"]["last_used"] == used_at.isoformat() and rows["entra"]["last_used"] is None
    assert rows["okta"]["state"] == rows["entra"]["state"] == "live"
    assert datetime.fromisoformat(rows["okta"]["expires"]) - datetime.fromisoformat(
        rows["okta"]["created"]
    ) == timedelta(days=30)
    assert token not in json.dumps(rows) and hash_token(token) not in json.dumps(rows)

    assert cli.main(["token", "list"]) == cli.EXIT_OK
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "CREATED", "EXPIRES", "LAST", "USED", "STATE"]
    okta_line = next(line for line in lines if line.startswith("okta "))
    assert used_at.isoformat() in okta_line and okta_line.endswith("live")
    assert next(line for line in lines if line.startswith("entra ")).split()[3] == "-"


def test_revoked_and_expired_tokens_are_refused_by_the_api(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    old, _ = create(capsys, "--id", "old")
    new, _ = create(capsys, "--id", "new")
    client = aws.client("secretsmanager")
    authenticator = BearerAuthenticator(SecretsManagerTokens(SECRET, client, max_age=0))
    # Rotation: both live at once.
    assert authenticator.authenticate(f"Bearer {old}") == "old"
    assert authenticator.authenticate(f"Bearer {new}") == "new"

    assert cli.main(["token", "revoke", "old"]) == cli.EXIT_OK
    assert "token old revoked at" in capsys.readouterr().out
    with pytest.raises(AuthenticationFailed) as refused:
        authenticator.authenticate(f"Bearer {old}")
    assert refused.value.reason is RejectionReason.REVOKED and refused.value.token_id == "old"
    assert refused.value.status == 401 and "revoked" in refused.value.detail
    assert authenticator.authenticate(f"Bearer {new}") == "new"
    rows = listing(capsys)
    assert rows["old"]["state"] == "revoked" and rows["old"]["revoked"] is not None
    assert rows["new"]["state"] == "live"

    # Revoking again keeps the first time; an unknown id is an error that changes nothing.
    first_revocation = rows["old"]["revoked"]
    assert cli.main(["token", "revoke", "old"]) == cli.EXIT_OK
    assert first_revocation in capsys.readouterr().out
    assert listing(capsys)["old"]["revoked"] == first_revocation
    before = stored_secret(aws)
    assert cli.main(["token", "revoke", "nope"]) == cli.EXIT_CHECK_FAILED
    assert "no token with id 'nope'" in capsys.readouterr().err
    assert stored_secret(aws) == before

    # Expiry: the same token, seen a day after it expired.
    (entry,) = [e for e in parse_token_list(json.loads(before)) if e.id == "new"]
    assert entry.expires is not None
    a_day_after_expiry = entry.expires + timedelta(days=1)
    later = BearerAuthenticator(
        SecretsManagerTokens(SECRET, client, max_age=0), clock=lambda: a_day_after_expiry
    )
    with pytest.raises(AuthenticationFailed) as expired:
        later.authenticate(f"Bearer {new}")
    assert expired.value.reason is RejectionReason.EXPIRED


def test_token_commands_report_aws_errors_with_exit_3(
    aws: boto3.Session, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKEN_SECRET_ID", "no/such/secret")
    for argv in (["token", "create"], ["token", "list"], ["token", "revoke", "x"]):
        assert cli.main(argv) == cli.EXIT_AWS_ERROR
        assert "cannot reach the token list" in capsys.readouterr().err


def test_malformed_token_list_is_reported_not_overwritten(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.client("secretsmanager").put_secret_value(SecretId=SECRET, SecretString='{"not": "a list"}')
    assert cli.main(["token", "create"]) == cli.EXIT_CHECK_FAILED
    assert "malformed" in capsys.readouterr().err
    assert stored_secret(aws) == '{"not": "a list"}'


# --- last used and age -----------------------------------------------------------------------------


def api_with_usage(
    aws: boto3.Session, dynamodb: Any, metrics: RecordingMetrics, clock: list[datetime]
) -> ScimApi:
    usage = DynamoTokenUsage(TABLE, dynamodb, metrics=metrics, interval=timedelta(minutes=5))
    authenticator = BearerAuthenticator(
        SecretsManagerTokens(SECRET, aws.client("secretsmanager"), max_age=0),
        clock=lambda: clock[0],
        usage=usage,
    )
    return ScimApi(ScimHandler(MemoryDirectory(ListFeed())), authenticator)


def event(token: str) -> dict[str, Any]:
    return {"httpMethod": "GET", "path": "/scim/v2/Users", "headers": {"Authorization": f"Bearer {token}"}}


def test_last_use_is_written_at_most_once_per_interval_and_never_holds_the_token(
    aws: boto3.Session,
) -> None:
    token = "a-token-under-test-0123456789"
    entry = TokenEntry.for_token(
        token, token_id="okta", created=NOW - timedelta(days=80), expires=NOW + timedelta(days=10)
    )
    store_entries(aws, [entry])
    dynamodb = CountingDynamoDB(aws.client("dynamodb"))
    metrics, clock = RecordingMetrics(), [NOW]
    api = api_with_usage(aws, dynamodb, metrics, clock)

    for _ in range(20):
        assert api(event(token))["statusCode"] == 200
    assert dynamodb.update_calls == 1
    clock[0] = NOW + timedelta(minutes=6)
    assert api(event(token))["statusCode"] == 200
    assert dynamodb.update_calls == 2

    # A second warm function (its own memory) is held back by the conditional write.
    other_dynamodb = CountingDynamoDB(aws.client("dynamodb"))
    other = api_with_usage(aws, other_dynamodb, RecordingMetrics(), clock)
    assert other(event(token))["statusCode"] == 200
    usage = DynamoTokenUsage(TABLE, aws.client("dynamodb"), metrics=metrics)
    assert usage.last_used(["okta", "unused"]) == {"okta": clock[0].replace(microsecond=0)}

    items = aws.client("dynamodb").scan(TableName=TABLE)["Items"]
    assert [item["pk"]["S"] for item in items] == ["TOKEN#okta"]
    assert token not in json.dumps(items) and hash_token(token) not in json.dumps(items)
    # Failed authentications record nothing.
    assert api(event("wrong-token"))["statusCode"] == 401


def test_age_and_days_to_expiry_are_metrics_on_each_success(aws: boto3.Session) -> None:
    token = "a-token-under-test-0123456789"
    entry = TokenEntry.for_token(
        token, token_id="okta", created=NOW - timedelta(days=80), expires=NOW + timedelta(days=10)
    )
    store_entries(aws, [entry])
    metrics = RecordingMetrics()
    api = api_with_usage(aws, aws.client("dynamodb"), metrics, [NOW])
    api(event(token))
    api(event(token))
    assert metrics.added == [(MetricName.TOKEN_AGE_DAYS, 80.0), (MetricName.TOKEN_DAYS_TO_EXPIRY, 10.0)] * 2
    api(event("wrong-token"))
    assert len(metrics.added) == 4


def test_a_failed_usage_write_never_refuses_the_request(
    aws: boto3.Session, caplog: pytest.LogCaptureFixture
) -> None:
    token = "a-token-under-test-0123456789"
    store_entries(aws, [TokenEntry.for_token(token, token_id="okta")])
    usage = DynamoTokenUsage("no-such-table", aws.client("dynamodb"), metrics=RecordingMetrics())
    authenticator = BearerAuthenticator(
        SecretsManagerTokens(SECRET, aws.client("secretsmanager"), max_age=0), usage=usage
    )
    api = ScimApi(ScimHandler(MemoryDirectory(ListFeed())), authenticator)
    assert api(event(token))["statusCode"] == 200
    assert "cannot record the use of token okta" in caplog.text
    assert token not in caplog.text


def test_every_request_compares_against_every_entry_with_compare_digest(
    aws: boto3.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = ["token-one-0123456789", "token-two-0123456789", "token-three-0123456789"]
    store_entries(aws, [TokenEntry.for_token(token, token_id=f"t{n}") for n, token in enumerate(tokens)])
    api = api_with_usage(aws, aws.client("dynamodb"), RecordingMetrics(), [datetime.now(UTC)])
    compared: list[str] = []
    compare_digest = hmac.compare_digest

    def counting_compare_digest(presented: str, stored: str) -> bool:
        compared.append(stored)
        return compare_digest(presented, stored)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting_compare_digest)
    for presented, status in [(tokens[0], 200), (tokens[2], 200), ("not-a-token-0123456789", 401)]:
        compared.clear()
        assert api(event(presented))["statusCode"] == status
        # The full adapter path: one constant-time comparison per stored entry, hit or miss.
        assert compared == [hash_token(token) for token in tokens]
