"""The policy loader: the contract's shape loads, and every mistake is a PolicyError naming line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_scim.errors import PolicyError
from redis_scim.policy import ElastiCacheTargetConfig, RedisTargetConfig, load_policy, load_policy_text

ENV = {"REDIS_URL": "redis://scim-controller:s3cret@127.0.0.1:6379"}

CONTRACT = """\
version: 1
roles:
  cache-reader: "+@read +@connection ~cache:*"
  cache-writer: "+@read +@write +@connection ~cache:* &cache-events"
groups:
  "Cache Readers": [cache-reader]
  "Cache Writers": [cache-writer]
targets:
  local:
    kind: redis
    url: ${REDIS_URL}
    credentials: scim-password
    username: "{userName}"
    allow: [default]
    ghosts: report
    groups: {}
  prod-cache:
    kind: elasticache
    region: eu-west-1
    engine: valkey
    user_group: prod-cache-users
    auth: iam
    username: "{userName}"
    allow: [default, app-service]
    ghosts: report
"""


def load(text: str, env: dict[str, str] | None = None):
    return load_policy_text(textwrap.dedent(text), name="policy.yaml", env=ENV if env is None else env)


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(PolicyError) as caught:
        load(text, env)
    return caught.value.detail


def test_the_contract_example_loads_with_every_key() -> None:
    policy = load(CONTRACT)

    assert policy.roles["cache-writer"].rules == (
        "+@read",
        "+@write",
        "+@connection",
        "~cache:*",
        "&cache-events",
    )
    assert policy.groups == {"Cache Readers": ("cache-reader",), "Cache Writers": ("cache-writer",)}
    local = policy.targets["local"]
    assert isinstance(local, RedisTargetConfig)
    assert local.url == ENV["REDIS_URL"]
    assert (local.credentials, local.username, local.allow, local.ghosts) == (
        "scim-password",
        "{userName}",
        ("default",),
        "report",
    )
    prod = policy.targets["prod-cache"]
    assert isinstance(prod, ElastiCacheTargetConfig)
    assert (prod.region, prod.engine, prod.user_group, prod.auth) == (
        "eu-west-1",
        "valkey",
        "prod-cache-users",
        "iam",
    )
    assert prod.protected_usernames == {"default", "app-service"}


def test_the_shipped_example_loads(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "policy.yaml"
    policy = load_policy(example, env={"REDIS_URL": "redis://127.0.0.1:6379"})
    assert set(policy.targets) == {"local"}


def test_load_policy_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 2\nroles: {}\ntargets: {}\n")
    with pytest.raises(PolicyError, match=r"broken\.yaml:1: version: only version 1"):
        load_policy(path, env={})
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml", env={})


def test_defaults_protect_default_and_the_controller_user() -> None:
    policy = load(
        """\
        version: 1
        roles: {r: "+get ~k"}
        targets:
          local: {kind: redis, url: "rediss://scim-controller:pw@cache.internal:6380"}
        """
    )
    local = policy.targets["local"]
    assert isinstance(local, RedisTargetConfig)
    assert (local.username, local.allow, local.ghosts, local.credentials) == (
        "{userName}",
        ("default",),
        "report",
        "scim-password",
    )
    assert local.protected_usernames == {"default", "scim-controller"}
    assert local.redacted_url == "rediss://scim-controller:***@cache.internal:6380"
    assert "pw" not in repr(local)


def test_env_substitution_with_default_and_escaping_nothing_else() -> None:
    policy = load(
        """\
        version: 1
        roles: {r: "+get ~${PREFIX:-app}:*"}
        targets:
          local: {kind: redis, url: "redis://${HOST}:${PORT:-6379}"}
        """,
        env={"HOST": "10.0.0.5"},
    )
    assert policy.roles["r"].rules == ("+get", "~app:*")
    assert policy.targets["local"].url == "redis://10.0.0.5:6379"  # type: ignore[union-attr]


def test_env_values_are_validated_like_literals() -> None:
    # A variable cannot smuggle a forbidden rule into a role: substitution happens before validation.
    text = """\
    version: 1
    roles: {r: "+get ~${PATTERN}"}
    targets: {local: {kind: redis, url: "redis://h"}}
    """
    expected = (
        "policy.yaml:2: roles.r: 'on' is not allowed in a role: the compiler sets state and credentials"
    )
    assert error_of(text, env={"PATTERN": "k on nopass"}) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nroles: [\n", "policy.yaml:3: invalid YAML"),
        ("", "policy.yaml:1: the policy file is empty"),
        ("- a\n", "policy.yaml:1: (top level): expected a mapping"),
        ("version: 1\nroles: {}\n", "policy.yaml:1: (top level): missing required key 'targets'"),
        (
            "version: 1\nrole: {}\nroles: {}\ntargets: {}\n",
            "policy.yaml:2: role: unknown key (expected one of: groups, module_categories, module_commands, "
            "roles, targets, version)",
        ),
        ("version: '1'\nroles: {}\ntargets: {}\n", "policy.yaml:1: version: only version 1 is supported"),
        ("version: 1\nversion: 1\n", "policy.yaml:2: version: duplicate key"),
        ("version: 1\nroles: {}\ntargets: {}\n", "policy.yaml:3: targets: at least one target is required"),
        ("[" * 5000 + "]" * 5000, "policy.yaml:1: invalid YAML: nested too deeply"),
        ("roles: " + "{a: " * 5000, "policy.yaml:1: invalid YAML: nested too deeply"),
    ],
)
def test_document_errors(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


BASE = """\
version: 1
roles:
  cache-reader: "+@read ~cache:*"
groups:
  "Cache Readers": [cache-reader]
targets:
  local:
    kind: redis
    url: redis://127.0.0.1:6379
"""


@pytest.mark.parametrize(
    ("line", "replacement", "expected"),
    [
        (
            3,
            '  cache-writer: "+@read +@wrtie ~cache:*"',
            "policy.yaml:3: roles.cache-writer: unknown ACL category '@wrtie'",
        ),
        (3, '  w: "+gett ~cache:*"', "policy.yaml:3: roles.w: unknown command 'gett'"),
        (3, '  w: "+client|kil"', "policy.yaml:3: roles.w: unknown subcommand 'client|kil'"),
        (3, '  w: "+get on"', "policy.yaml:3: roles.w: 'on' is not allowed in a role"),
        (3, '  w: "+get OFF"', "policy.yaml:3: roles.w: 'OFF' is not allowed in a role"),
        (3, '  w: "+get >secret"', "policy.yaml:3: roles.w: '>': passwords are not allowed"),
        (3, '  w: "+get <secret"', "policy.yaml:3: roles.w: '<': passwords are not allowed"),
        (3, '  w: "+get #abc"', "policy.yaml:3: roles.w: '#': passwords are not allowed"),
        (3, '  w: "+get !abc"', "policy.yaml:3: roles.w: '!': passwords are not allowed"),
        (3, '  w: "nopass +get"', "policy.yaml:3: roles.w: 'nopass' is not allowed"),
        (3, '  w: "resetpass"', "policy.yaml:3: roles.w: 'resetpass' is not allowed"),
        (3, '  w: "reset +get"', "policy.yaml:3: roles.w: 'reset' is not allowed"),
        (3, '  w: "clearselectors"', "policy.yaml:3: roles.w: 'clearselectors' is not allowed"),
        (3, '  w: "(+get ~a)"', "policy.yaml:3: roles.w: '(+get': parentheses (selectors) are not allowed"),
        (3, '  w: "+get ~a)"', "policy.yaml:3: roles.w: '~a)': parentheses"),
        (3, '  w: "+get ~"', "policy.yaml:3: roles.w: key pattern '' must be non-empty"),
        (3, '  w: "+get %X~a"', "policy.yaml:3: roles.w: '%X~a': key permissions are written"),
        (3, '  w: "+get sanitize-payload"', "policy.yaml:3: roles.w: unknown ACL rule 'sanitize-payload'"),
        (3, '  w: ""', "policy.yaml:3: roles.w: a role needs at least one rule"),
        (3, '  w: "+get allkeys ~a"', "policy.yaml:3: roles.w: '~a' after 'allkeys' (or '~*') is refused"),
        (3, '  w: "+get ~* %R~a"', "policy.yaml:3: roles.w: '%R~a' after 'allkeys' (or '~*') is refused"),
        (3, '  w: "+get &* &a"', "policy.yaml:3: roles.w: '&a' after 'allchannels' (or '&*') is refused"),
        (3, "  w:", "policy.yaml:3: roles.w: expected a string"),
        (3, "  w bad: '+get'", 'policy.yaml:3: roles."w bad": role names use letters'),
        (
            5,
            '  "Cache Readers": [cache-raeder]',
            "policy.yaml:5: groups.\"Cache Readers\": unknown role 'cache-raeder'",
        ),
        (5, '  "Cache Readers": cache-reader', 'policy.yaml:5: groups."Cache Readers": expected a list'),
        (
            5,
            '  "Cache Readers": []\n  "cache readers": []',
            'policy.yaml:6: groups."cache readers": same group as',
        ),
        (7, "  Local:", "policy.yaml:7: targets.Local: target names use lower-case"),
        (
            8,
            "    kind: memcached",
            "policy.yaml:8: targets.local.kind: 'memcached' is not one of: redis, elasticache",
        ),
        (8, "    knd: redis", "policy.yaml:7: targets.local: missing required key 'kind'"),
        (9, "    url: http://127.0.0.1", "policy.yaml:9: targets.local.url: the URL scheme must be redis://"),
        (9, "    url: redis://", "policy.yaml:9: targets.local.url: the URL has no host"),
        (9, "    url: redis://h:99999", "policy.yaml:9: targets.local.url: not a valid URL"),
        (
            9,
            "    url: redis://h/cache",
            "policy.yaml:9: targets.local.url: the URL path may only be a database",
        ),
        (
            9,
            "    url: ${MISSING_URL}",
            "policy.yaml:9: targets.local.url: environment variable MISSING_URL is not set",
        ),
        (
            9,
            "    url: ${bad-name}",
            "policy.yaml:9: targets.local.url: malformed environment reference '${bad-name}'",
        ),
        (9, "    uri: redis://h", "policy.yaml:9: targets.local.uri: unknown key"),
        (
            9,
            "    url: redis://h\n    credentials: ldap",
            "policy.yaml:10: targets.local.credentials: 'ldap' is not one",
        ),
        (
            9,
            "    url: redis://h\n    ghosts: purge",
            "policy.yaml:10: targets.local.ghosts: 'purge' is not one of",
        ),
        (
            9,
            "    url: redis://h\n    username: {userName}",
            "policy.yaml:10: targets.local.username: expected a string",
        ),
        (
            9,
            "    url: redis://h\n    username: '{name}'",
            "policy.yaml:10: targets.local.username: unknown placeholder",
        ),
        (
            9,
            "    url: redis://h\n    username: 'u {id}'",
            "policy.yaml:10: targets.local.username: literal text",
        ),
        (
            9,
            "    url: redis://h\n    username: 'fixed'",
            "policy.yaml:10: targets.local.username: the template must",
        ),
        (
            9,
            '    url: redis://h\n    allow: ["bad name"]',
            "policy.yaml:10: targets.local.allow: the Redis username",
        ),
        (9, "    url: redis://h\n    region: eu-west-1", "policy.yaml:10: targets.local.region: unknown key"),
        (
            9,
            "    url: redis://h\n    nodes: redis://r",
            "policy.yaml:10: targets.local.nodes: expected a list",
        ),
        (
            9,
            "    url: redis://h\n    nodes: [ftp://r]",
            "policy.yaml:10: targets.local.nodes: the URL scheme",
        ),
        (
            9,
            "    url: redis://h\n    ca_file: /ca.pem",
            "policy.yaml:10: targets.local.ca_file: TLS files need rediss://",
        ),
        (
            9,
            "    url: rediss://h\n    client_cert_file: /c.pem",
            "policy.yaml:10: targets.local.client_cert_file: client_cert_file and client_key_file go",
        ),
        (
            9,
            "    url: redis://h\n    groups: {G: [nope]}",
            "policy.yaml:10: targets.local.groups.G: unknown role 'nope'",
        ),
    ],
)
def test_errors_name_the_line_and_the_key(line: int, replacement: str, expected: str) -> None:
    lines = BASE.splitlines()
    lines[line - 1] = replacement
    assert error_of("\n".join(lines) + "\n").startswith(expected)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "{kind: elasticache, engine: valkey, user_group: g}",
            "policy.yaml:4: targets.ec: missing required key 'region'",
        ),
        (
            "{kind: elasticache, region: eu-west-1, engine: memcached, user_group: g}",
            "policy.yaml:4: targets.ec.engine: 'memcached' is not one of: valkey, redis",
        ),
        (
            "{kind: elasticache, region: europe, engine: valkey, user_group: g}",
            "policy.yaml:4: targets.ec.region: 'europe' is not an AWS region name",
        ),
        (
            "{kind: elasticache, region: eu-west-1, engine: valkey, user_group: '1g'}",
            "policy.yaml:4: targets.ec.user_group: user group ids match",
        ),
        (
            "{kind: elasticache, region: eu-west-1, engine: valkey, user_group: g_1}",
            "policy.yaml:4: targets.ec.user_group: user group ids match",
        ),
        (
            "{kind: elasticache, region: eu-west-1, engine: valkey, user_group: g, auth: none}",
            "policy.yaml:4: targets.ec.auth: 'none' is not one of: iam, password",
        ),
        (
            "{kind: elasticache, region: eu-west-1, engine: valkey, user_group: g, url: 'redis://h'}",
            "policy.yaml:4: targets.ec.url: unknown key",
        ),
    ],
)
def test_elasticache_target_errors(target: str, expected: str) -> None:
    text = f'version: 1\nroles: {{r: "+get ~k"}}\ntargets:\n  ec: {target}\n'
    assert error_of(text).startswith(expected)


def test_elasticache_user_group_is_stored_lower_case() -> None:
    policy = load(
        'version: 1\nroles: {r: "+get ~k"}\ntargets:\n'
        "  ec: {kind: elasticache, region: us-east-1, engine: redis, user_group: Prod-Users}\n"
    )
    target = policy.targets["ec"]
    assert isinstance(target, ElastiCacheTargetConfig)
    assert (target.user_group, target.auth) == ("prod-users", "iam")


def test_module_commands_and_categories_are_declared_not_guessed() -> None:
    text = 'version: 1\nroles: {search: "+ft.search +@search ~idx:*"}\ntargets: {local: {kind: redis, url: "redis://h"}}\n'
    assert error_of(text) == "policy.yaml:2: roles.search: unknown command 'ft.search'"
    policy = load("module_commands: [ft.search]\nmodule_categories: [search]\n" + text)
    assert policy.roles["search"].rules == ("+ft.search", "+@search", "~idx:*")
    assert error_of("module_commands: ['FT SEARCH']\n" + text).startswith(
        "policy.yaml:1: module_commands: 'FT SEARCH'"
    )


def test_patterns_after_a_reset_or_before_a_wildcard_are_accepted() -> None:
    policy = load(
        'version: 1\nroles: {r: "+get allkeys resetkeys ~a ~b allkeys ~* &a allchannels &*"}\n'
        "targets: {local: {kind: redis, url: 'redis://h'}}\n"
    )
    assert len(policy.roles["r"].rules) == 10


def test_commands_subcommands_and_key_permissions_are_accepted() -> None:
    policy = load(
        'version: 1\nroles: {r: "+GET -client|kill +client|id %R~ro:* %W~wo:* %RW~rw:* allchannels"}\n'
        "targets: {local: {kind: redis, url: 'redis://h'}}\n"
    )
    assert policy.roles["r"].rules[0] == "+GET"


# Fuzzing: whatever the text, loading either succeeds or raises PolicyError — never anything else.
_FRAGMENTS = st.sampled_from(
    [
        "version: 1\n",
        "roles:\n",
        "  r: '+get ~k'\n",
        '  w: "+@write on"\n',
        "groups:\n",
        "  G: [r]\n",
        "  H: r\n",
        "targets:\n",
        "  t:\n",
        "    kind: redis\n",
        "    kind: elasticache\n",
        "    url: ${X}\n",
        "    url: redis://h\n",
        "    username: '{userName}'\n",
        "    allow: [default]\n",
        "    groups: {G: []}\n",
        "- item\n",
        "&a [*a, *a]\n",
        "? complex\n",
        "!!python/object:os.system {}\n",
        "\t\x00\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragments=st.lists(_FRAGMENTS, max_size=12), noise=st.text(max_size=40))
def test_fuzzed_policies_fail_only_with_policy_error(fragments: list[str], noise: str) -> None:
    for text in ("".join(fragments), "".join(fragments) + noise, noise):
        try:
            load_policy_text(text, env={})
        except PolicyError as error:
            assert error.detail.startswith("policy.yaml:")


def test_a_writer_role_that_allows_keyspace_wide_writes_is_loaded_with_a_warning(caplog):
    text = """
version: 1
roles:
  cache-writer: "+@read +@write +@connection ~cache:*"
  careful-writer: "+@read +@write -flushall -flushdb -swapdb ~cache:*"
  reader: "+@read ~cache:*"
  admin: "allcommands allkeys"
targets:
  local: {kind: redis, url: "redis://127.0.0.1:6379"}
"""
    policy = load_policy_text(text, name="p.yaml", env={})
    warned = {warning.split("'")[1]: warning for warning in policy.warnings}
    assert set(warned) == {"cache-writer", "admin"}
    assert "FLUSHALL, FLUSHDB, SWAPDB" in warned["cache-writer"]
    assert "-flushall -flushdb -swapdb" in warned["cache-writer"]


def test_keyless_writes_follow_rule_order():
    from redis_scim.policy.rules import keyless_writes_allowed

    assert keyless_writes_allowed(["+@write", "-flushall"]) == ["flushdb", "swapdb"]
    assert keyless_writes_allowed(["-@all", "+flushdb"]) == ["flushdb"]
    assert keyless_writes_allowed(["+@fast"]) == ["swapdb"]
    assert keyless_writes_allowed(["+@slow", "nocommands"]) == []
    assert keyless_writes_allowed(["+@read", "+@connection"]) == []


def test_load_policy_logs_each_warning_once(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    path.write_text('version: 1\nroles:\n  w: "+@write ~k:*"\ntargets:\n  local: {kind: redis, url: "redis://h:1"}\n')
    with caplog.at_level("WARNING"):
        load_policy(path, env={})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "role 'w' allows FLUSHALL, FLUSHDB, SWAPDB" in warnings[0]
