"""The reconciler's tuning from the environment, and the SETUSER rules that disable a ghost as it is."""

from __future__ import annotations

import pytest

from redis_scim.sync.reconcile import ReconcileSettings, ghost_disabled_rules
from redis_scim.targets import NodeAcl, Permissions


def test_settings_come_from_the_environment_with_defaults() -> None:
    assert ReconcileSettings.from_env({}) == ReconcileSettings()
    settings = ReconcileSettings.from_env(
        {
            "RECONCILE_PENDING_GRACE_SECONDS": "60",
            "RECONCILE_RULES_BUDGET_SECONDS": "1.5",
            "RECONCILE_RULES_CYCLE_SECONDS": "7200",
        }
    )
    assert (settings.pending_grace_seconds, settings.rules_budget_seconds, settings.rules_cycle_seconds) == (
        60.0,
        1.5,
        7200.0,
    )
    with pytest.raises(ValueError):
        ReconcileSettings.from_env({"RECONCILE_RULES_BUDGET_SECONDS": "soon"})


def test_a_ghost_is_disabled_with_its_credentials_flags_and_selectors_kept() -> None:
    ghost = NodeAcl(
        enabled=True,
        password_hashes=frozenset({"b" * 64, "a" * 64}),
        nopass=False,
        root=Permissions(commands="+@all", keys="~*", channels="&*"),
        selectors=frozenset({Permissions(commands="-@all +get", keys="~cache:*")}),
        flags=frozenset({"sanitize-payload"}),
    )
    assert ghost_disabled_rules(ghost) == [
        "off",
        "#" + "a" * 64,
        "#" + "b" * 64,
        "sanitize-payload",
        "~*",
        "&*",
        "+@all",
        "(~cache:* -@all +get)",
    ]
    passwordless = NodeAcl(enabled=True, password_hashes=frozenset(), nopass=True, root=Permissions("+@all"))
    assert ghost_disabled_rules(passwordless)[:2] == ["off", "nopass"]
