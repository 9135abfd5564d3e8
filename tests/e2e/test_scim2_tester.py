"""Runs scim2-tester's conformance checks (discovery, CRUD, PATCH of every attribute) on the local stack.

The server passes when no check ends in ERROR or CRITICAL, except checks of a feature that
/ServiceProviderConfig advertises as unsupported: those are listed in `UNSUPPORTED_FEATURE_CHECKS` with the
reason they may fail. scim2-tester does not cover filters, paging, ETags, uniqueness or the IdP quirks; the
recorded IdP conversations (test_idp_replay.py) do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server

FAILED = {Status.ERROR, Status.CRITICAL}


def _patched_attribute(result: CheckResult) -> str:
    return str(result.data.get("urn", "")) if isinstance(result.data, dict) else ""


# ServiceProviderConfig feature -> (which checks exercise it, why they may fail when it is unsupported).
UNSUPPORTED_FEATURE_CHECKS: dict[str, tuple[Callable[[CheckResult], bool], str]] = {
    "patch": (
        lambda result: any(tag.startswith("patch:") for tag in result.tags),
        "PATCH is advertised as unsupported, so PATCH checks cannot pass",
    ),
    "changePassword": (
        lambda result: _patched_attribute(result).rsplit(":", 1)[-1] == "password",
        "password changes are advertised as unsupported, so PATCHing `password` may be refused",
    ),
}


def excluded_because(result: CheckResult, service_provider_config: dict[str, Any]) -> str | None:
    """Why a failed check does not count, when it exercises a feature the server says it lacks."""
    for feature, (exercises, reason) in UNSUPPORTED_FEATURE_CHECKS.items():
        supported = (service_provider_config.get(feature) or {}).get("supported", False)
        if not supported and exercises(result):
            return reason
    return None


def summarise(results: list[CheckResult]) -> str:
    by_tag: Counter[tuple[str, str]] = Counter()
    for result in results:
        for tag in result.tags - {"*"}:
            by_tag[(tag, result.status.name)] += 1
    return "\n".join(f"{tag:28} {status:10} {count}" for (tag, status), count in sorted(by_tag.items()))


def describe(result: CheckResult) -> str:
    return f"[{result.status.name}] {result.resource_type or '-'} {result.title}: {result.reason}"


@pytest.mark.e2e
def test_scim2_tester_finds_no_failure(local_stack: Any) -> None:
    headers = {"Authorization": f"Bearer {local_stack.token}"}
    service_provider_config = httpx.get(
        f"{local_stack.base_url}/ServiceProviderConfig", headers=headers, timeout=30
    ).json()

    with httpx2.Client(base_url=local_stack.base_url, headers=headers, timeout=30) as http:
        results = check_server(SyncSCIMClient(http))
    print(f"scim2-tester: {len(results)} checks\n{summarise(results)}")

    failures = [result for result in results if result.status in FAILED]
    excused = {describe(r): excluded_because(r, service_provider_config) for r in failures}
    unexcused = [text for text, reason in excused.items() if reason is None]
    assert not unexcused, (
        "scim2-tester failures:\n" + "\n".join(unexcused) + "\n\nstack errors:\n" + local_stack.errors()
    )
    for text, reason in excused.items():
        print(f"excluded: {text} — {reason}")

    # Guard against a vacuous pass (discovery failing stops the run early): both resource types were
    # created, read, replaced, deleted and patched.
    passed = {(r.resource_type, tag) for r in results if r.status == Status.SUCCESS for tag in r.tags}
    expected_tags = ["crud:create", "crud:read", "crud:update", "crud:delete"]
    if (service_provider_config.get("patch") or {}).get("supported"):
        expected_tags += ["patch:add", "patch:replace", "patch:remove"]
    missing = [(rt, tag) for rt in ("User", "Group") for tag in expected_tags if (rt, tag) not in passed]
    assert not missing, f"no successful check for {missing}"


def _result(status: Status, tags: set[str], urn: str | None = None) -> CheckResult:
    return CheckResult(status=status, title="check", tags=tags, data={"urn": urn} if urn else None)


def test_failures_are_excused_only_for_features_advertised_as_unsupported() -> None:
    no_password_change = {"patch": {"supported": True}, "changePassword": {"supported": False}}
    password_patch = _result(Status.ERROR, {"patch:replace"}, "password")
    assert excluded_because(password_patch, no_password_change) is not None
    password_change = {**no_password_change, "changePassword": {"supported": True}}
    assert excluded_because(password_patch, password_change) is None
    assert excluded_because(_result(Status.ERROR, {"patch:replace"}, "nickName"), no_password_change) is None
    assert excluded_because(_result(Status.ERROR, {"patch:add"}), {"patch": {"supported": False}}) is not None
    assert excluded_because(_result(Status.ERROR, {"crud:create"}), {"patch": {"supported": False}}) is None
