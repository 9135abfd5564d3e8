"""The runtime settings from the environment: defaults for what is unset, a clear error for a bad number."""

from __future__ import annotations

import dataclasses
import re

import pytest

from redis_scim.config import Settings


def test_unset_and_empty_variables_keep_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    empty = {"DIRECTORY_TABLE": "", "AUDIT_RETENTION_DAYS": "", "CHANGE_QUEUE_URL": ""}
    assert Settings.from_env(empty) == Settings()
    assert Settings().change_queue_url is None


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "DIRECTORY_TABLE": "dir",
            "AUDIT_TABLE": "audit",
            "AUDIT_RETENTION_DAYS": "30",
            "CHANGE_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/changes.fifo",
            "TOKEN_SECRET_ID": "tokens",
            "POLICY": "/opt/policy.yaml",
            "TARGET_SECRETS": "arn:a,arn:b",
        }
    )
    assert settings == Settings(
        directory_table="dir",
        audit_table="audit",
        audit_retention_days=30,
        change_queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/changes.fifo",
        token_secret_id="tokens",
        policy="/opt/policy.yaml",
        target_secrets="arn:a,arn:b",
    )


@pytest.mark.parametrize("value", ["a year", "30.5", "3e1"])
def test_a_retention_that_is_not_a_whole_number_names_the_variable(value: str) -> None:
    expected = f"AUDIT_RETENTION_DAYS must be a whole number of days, not '{value}'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Settings.from_env({"AUDIT_RETENTION_DAYS": value})


def test_settings_are_read_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().policy = "elsewhere.yaml"  # type: ignore[misc]
