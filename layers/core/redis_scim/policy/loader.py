"""Load the policy file: YAML → validated `Policy`, with `${VAR}` substitution and strict keys.

Every error is a `PolicyError` naming the file, the line and the key, e.g.
`policy.yaml:7: roles.cache-writer: unknown ACL category '@wrtie'`. Unknown keys are errors:
a typo must never silently widen or narrow anybody's access.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import yaml

from redis_scim.errors import InvalidUsername, PolicyError
from redis_scim.policy.model import (
    AnyTarget,
    ElastiCacheTargetConfig,
    Policy,
    RedisTargetConfig,
    Role,
    group_key,
)
from redis_scim.policy.rules import CommandCatalog, RuleError, parse_role_rules, server_catalog
from redis_scim.policy.usernames import check_template, check_username

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_ENV_EXPRESSION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)
_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MODULE_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]*(\|[a-z0-9][a-z0-9._:-]*)?")
_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_USER_GROUP_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")

_TOP_KEYS = {"version", "roles", "groups", "targets", "module_commands", "module_categories"}
_COMMON_TARGET_KEYS = {"kind", "username", "allow", "ghosts", "groups"}
_TARGET_KEYS = {
    "redis": _COMMON_TARGET_KEYS
    | {"url", "nodes", "credentials", "ca_file", "client_cert_file", "client_key_file"},
    "elasticache": _COMMON_TARGET_KEYS | {"region", "engine", "user_group", "auth"},
}
_REQUIRED_TARGET_KEYS = {"redis": {"url"}, "elasticache": {"region", "engine", "user_group"}}


def load_policy(path: str | Path, env: Mapping[str, str] | None = None) -> Policy:
    """Read and validate the policy file at `path`; `env` defaults to the process environment.

    `Policy.warnings` (risks that are valid policy, e.g. a writer role allowing FLUSHALL) are
    logged once here, where every runtime loads its policy."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: cannot read the policy file: {error}") from None
    policy = load_policy_text(text, name=str(path), env=env)
    for warning in policy.warnings:
        logging.getLogger(__name__).warning(warning)
    return policy


def load_policy_text(text: str, name: str = "policy.yaml", env: Mapping[str, str] | None = None) -> Policy:
    """Validate a policy given as YAML text; `name` is used in error messages."""
    return _PolicyReader(name, os.environ if env is None else env).read(text)


class _PolicyReader:
    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    # --- reporting ---

    def fail(self, node: yaml.Node, path: str, message: str) -> NoReturn:
        raise PolicyError(f"{self.source}:{node.start_mark.line + 1}: {path or '(top level)'}: {message}")

    # --- typed access to YAML nodes ---

    def mapping(
        self,
        node: yaml.Node,
        path: str,
        allowed: set[str] | None = None,
        required: frozenset[str] = frozenset(),
        owner: yaml.Node | None = None,
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key, with key and value nodes; checks unknown/duplicate keys.

        A missing key is reported on the `owner` line (the key holding this mapping) if given.
        """
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, "expected a mapping")
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.value:
                self.fail(key_node, path, "keys must be non-empty scalars")
            key = key_node.value
            if key in entries:
                self.fail(key_node, join(path, key), "duplicate key")
            if allowed is not None and key not in allowed:
                self.fail(
                    key_node, join(path, key), f"unknown key (expected one of: {', '.join(sorted(allowed))})"
                )
            entries[key] = (key_node, value_node)
        for key in sorted(required - entries.keys()):
            self.fail(owner or node, path, f"missing required key {key!r}")
        return entries

    def string(self, node: yaml.Node, path: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            self.fail(node, path, "expected a string (quote values such as {userName})")
        return self.substitute(node, path, node.value)

    def choice(self, node: yaml.Node, path: str, choices: tuple[str, ...]) -> str:
        value = self.string(node, path)
        if value not in choices:
            self.fail(node, path, f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def string_list(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, "expected a list")
        return [(self.string(item, path), item) for item in node.value]

    def substitute(self, node: yaml.Node, path: str, value: str) -> str:
        """Replace `${VAR}` / `${VAR:-default}` from the environment (values only, never keys)."""

        def replace(match: re.Match[str]) -> str:
            expression = _ENV_EXPRESSION.fullmatch(match.group(1))
            if expression is None:
                self.fail(node, path, f"malformed environment reference {match.group(0)!r}")
            variable, default = expression.group(1), expression.group(2)
            if variable in self.env:
                return self.env[variable]
            if default is not None:
                return default
            self.fail(node, path, f"environment variable {variable} is not set")

        return _ENV_REFERENCE.sub(replace, value)

    # --- the document ---

    def read(self, text: str) -> Policy:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark else 1
            raise PolicyError(
                f"{self.source}:{line}: invalid YAML: {error.problem or error.context}"
            ) from None
        except yaml.YAMLError as error:
            raise PolicyError(f"{self.source}:1: invalid YAML: {error}") from None
        except RecursionError:
            # PyYAML's composer recurses once per nesting level; no valid policy nests deeply.
            raise PolicyError(f"{self.source}:1: invalid YAML: nested too deeply") from None
        if root is None:
            raise PolicyError(f"{self.source}:1: the policy file is empty")
        top = self.mapping(root, "", _TOP_KEYS, frozenset({"version", "roles", "targets"}))

        version_node = top["version"][1]
        if not (
            isinstance(version_node, yaml.ScalarNode)
            and version_node.tag == _INT
            and version_node.value == "1"
        ):
            self.fail(version_node, "version", "only version 1 is supported")

        module_commands = self.module_names(top, "module_commands")
        module_categories = self.module_names(top, "module_categories")
        catalog = server_catalog().extended(module_commands, module_categories)
        roles = self.roles(top["roles"][1], catalog)
        groups = self.groups(top["groups"][1], "groups", roles) if "groups" in top else {}
        targets = self.targets(top["targets"][1], roles)
        return Policy(
            source=self.source,
            roles=roles,
            groups=groups,
            targets=targets,
            module_commands=tuple(module_commands),
            module_categories=tuple(module_categories),
        )

    def module_names(self, top: dict[str, tuple[yaml.Node, yaml.Node]], key: str) -> list[str]:
        if key not in top:
            return []
        names = []
        for name, node in self.string_list(top[key][1], key):
            if not _MODULE_NAME.fullmatch(name):
                self.fail(
                    node, key, f"{name!r} is not a lower-case command, container|subcommand or category name"
                )
            names.append(name)
        return names

    def roles(self, node: yaml.Node, catalog: CommandCatalog) -> dict[str, Role]:
        roles = {}
        for name, (key_node, value_node) in self.mapping(node, "roles").items():
            path = join("roles", name)
            if not _ROLE_NAME.fullmatch(name):
                self.fail(key_node, path, "role names use letters, digits, '.', '_' and '-'")
            try:
                rules = parse_role_rules(self.string(value_node, path), catalog)
            except RuleError as error:
                self.fail(value_node, path, str(error))
            roles[name] = Role(name=name, rules=rules)
        return roles

    def groups(self, node: yaml.Node, path: str, roles: Mapping[str, Role]) -> dict[str, tuple[str, ...]]:
        groups: dict[str, tuple[str, ...]] = {}
        seen: dict[str, str] = {}
        for name, (key_node, value_node) in self.mapping(node, path).items():
            group_path = join(path, name)
            folded = group_key(name)
            if folded in seen:
                self.fail(key_node, group_path, f"same group as {seen[folded]!r} (group names ignore case)")
            seen[folded] = name
            role_names = []
            for role_name, item in self.string_list(value_node, group_path):
                if role_name not in roles:
                    self.fail(item, group_path, f"unknown role {role_name!r}")
                role_names.append(role_name)
            groups[name] = tuple(dict.fromkeys(role_names))
        return groups

    def targets(self, node: yaml.Node, roles: Mapping[str, Role]) -> dict[str, AnyTarget]:
        entries = self.mapping(node, "targets")
        if not entries:
            self.fail(node, "targets", "at least one target is required")
        targets: dict[str, AnyTarget] = {}
        for name, (key_node, value_node) in entries.items():
            path = join("targets", name)
            if not _TARGET_NAME.fullmatch(name):
                self.fail(key_node, path, "target names use lower-case letters, digits, '_' and '-'")
            targets[name] = self.target(name, key_node, value_node, path, roles)
        return targets

    def target(
        self, name: str, key_node: yaml.Node, node: yaml.Node, path: str, roles: Mapping[str, Role]
    ) -> AnyTarget:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, "expected a mapping")
        kind_node = next((value for key, value in node.value if key.value == "kind"), None)
        if kind_node is None:
            self.fail(key_node, path, "missing required key 'kind' (redis or elasticache)")
        kind = self.choice(kind_node, join(path, "kind"), ("redis", "elasticache"))
        entries = self.mapping(
            node, path, _TARGET_KEYS[kind], frozenset(_REQUIRED_TARGET_KEYS[kind]), key_node
        )
        values = {key: value for key, (_, value) in entries.items()}

        common: dict = {"name": name}
        if "username" in values:
            template = self.string(values["username"], join(path, "username"))
            try:
                check_template(template)
            except ValueError as error:
                self.fail(values["username"], join(path, "username"), str(error))
            common["username"] = template
        if "allow" in values:
            allow = []
            for username, item in self.string_list(values["allow"], join(path, "allow")):
                try:
                    check_username(username)
                except InvalidUsername as error:
                    self.fail(item, join(path, "allow"), error.detail)
                allow.append(username)
            common["allow"] = tuple(allow)
        if "ghosts" in values:
            common["ghosts"] = self.choice(
                values["ghosts"], join(path, "ghosts"), ("report", "disable", "delete")
            )
        if "groups" in values:
            common["groups"] = self.groups(values["groups"], join(path, "groups"), roles)

        if kind == "redis":
            return self.redis_target(values, path, common)
        return self.elasticache_target(values, path, common)

    def redis_target(self, values: dict[str, yaml.Node], path: str, common: dict) -> RedisTargetConfig:
        url = self.redis_url(values["url"], join(path, "url"))
        nodes = tuple(
            self.redis_url(item, join(path, "nodes")) for item in self.sequence(values, "nodes", path)
        )
        credentials = "scim-password"
        if "credentials" in values:
            credentials = self.choice(
                values["credentials"], join(path, "credentials"), ("scim-password", "external")
            )
        files = {
            key: self.string(values[key], join(path, key))
            for key in ("ca_file", "client_cert_file", "client_key_file")
            if key in values
        }
        if files and any(urlsplit(address).scheme != "rediss" for address in (url, *nodes)):
            key = next(iter(files))
            self.fail(values[key], join(path, key), "TLS files need rediss:// in url and every node")
        if ("client_cert_file" in files) != ("client_key_file" in files):
            key = "client_cert_file" if "client_cert_file" in files else "client_key_file"
            self.fail(values[key], join(path, key), "client_cert_file and client_key_file go together")
        return RedisTargetConfig(url=url, nodes=nodes, credentials=credentials, **files, **common)  # type: ignore[arg-type]

    def elasticache_target(
        self, values: dict[str, yaml.Node], path: str, common: dict
    ) -> ElastiCacheTargetConfig:
        region = self.string(values["region"], join(path, "region"))
        if not _AWS_REGION.fullmatch(region):
            self.fail(values["region"], join(path, "region"), f"{region!r} is not an AWS region name")
        user_group = self.string(values["user_group"], join(path, "user_group"))
        if not _USER_GROUP_ID.fullmatch(user_group):
            self.fail(
                values["user_group"], join(path, "user_group"), "user group ids match [a-zA-Z][a-zA-Z0-9-]*"
            )
        engine = self.choice(values["engine"], join(path, "engine"), ("valkey", "redis"))
        auth = "iam"
        if "auth" in values:
            auth = self.choice(values["auth"], join(path, "auth"), ("iam", "password"))
        return ElastiCacheTargetConfig(
            region=region,
            engine=engine,  # type: ignore[arg-type]
            user_group=user_group.lower(),
            auth=auth,  # type: ignore[arg-type]
            **common,
        )

    def sequence(self, values: dict[str, yaml.Node], key: str, path: str) -> list[yaml.Node]:
        if key not in values:
            return []
        node = values[key]
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, join(path, key), "expected a list")
        return list(node.value)

    def redis_url(self, node: yaml.Node, path: str) -> str:
        # Messages never echo the URL: it may carry the controller's password.
        url = self.string(node, path)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            self.fail(node, path, "not a valid URL")
        if parts.scheme not in ("redis", "rediss"):
            self.fail(node, path, "the URL scheme must be redis:// or rediss://")
        if not parts.hostname:
            self.fail(node, path, "the URL has no host")
        if port == 0:
            self.fail(node, path, "the URL port must be 1-65535")
        if parts.path not in ("", "/") and not parts.path[1:].isdigit():
            self.fail(node, path, "the URL path may only be a database number, e.g. /0")
        return url


def join(path: str, key: str) -> str:
    """`roles.cache-writer`, `groups."Cache Readers"`: dotted, quoting keys that need it."""
    part = key if _PLAIN_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{path}.{part}" if path else part
