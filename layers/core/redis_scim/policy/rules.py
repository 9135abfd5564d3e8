"""Parse and validate the Redis ACL rules of a policy role.

A role is a set of rules that becomes one ACL *selector*, so only rules that are meaningful inside a
selector are accepted: commands, categories, key patterns and channel patterns. Anything that
touches the user itself (on/off, passwords, reset, selectors) is rejected, because the compiler
owns those and a role must never be able to override them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources


class RuleError(ValueError):
    """A role rule is invalid; the message says why (the loader adds file, line and key)."""


# Rules that act on the user rather than on a selector: the compiler emits these itself.
_USER_LEVEL_RULES = frozenset({"on", "off", "nopass", "resetpass", "reset", "clearselectors"})
# Selector-level rules that take no argument.
_SELECTOR_KEYWORDS = frozenset(
    {"allcommands", "nocommands", "allkeys", "resetkeys", "allchannels", "resetchannels"}
)
_PASSWORD_PREFIXES = (">", "<", "#", "!")
# Names of commands, subcommands and categories as servers and modules spell them.
_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]*")
# Key and channel patterns: printable ASCII except space and the selector delimiters. Patterns
# are globs; keeping them to this set means a pattern can never end or open a selector.
_PATTERN = re.compile(r"[!-'*-~]+")
_KEY_PERMISSION = re.compile(r"%([RW]+)~(.*)", re.S)


@dataclass(frozen=True)
class CommandCatalog:
    """The command, subcommand (`container|sub`) and category names a role may name."""

    commands: frozenset[str]
    categories: frozenset[str]

    def extended(self, module_commands: Iterable[str], module_categories: Iterable[str]) -> CommandCatalog:
        return CommandCatalog(
            commands=self.commands | {name.lower() for name in module_commands},
            categories=self.categories | {name.lower() for name in module_categories},
        )


def _read_names(file_name: str) -> frozenset[str]:
    text = resources.files(__package__).joinpath(file_name).read_text(encoding="ascii")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@cache
def server_catalog() -> CommandCatalog:
    """The names known to the supported servers (Valkey 9.1, Redis OSS 7.0), from the data files."""
    return CommandCatalog(commands=_read_names("commands.txt"), categories=_read_names("categories.txt"))


# Commands that change the whole keyspace but take no key, so a role's key patterns never limit
# them: `+@write ~cache:*` still allows FLUSHALL. Their categories are the same on Redis 7.0 and
# Valkey 9.1 (`ACL CAT <category>`), except SWAPDB, which is @fast instead of @slow.
_KEYLESS_WRITES = {
    "flushall": {"all", "keyspace", "write", "dangerous", "slow"},
    "flushdb": {"all", "keyspace", "write", "dangerous", "slow"},
    "swapdb": {"all", "keyspace", "write", "dangerous", "fast"},
}


def keyless_writes_allowed(rules: Iterable[str]) -> list[str]:
    """The keyspace-wide commands (FLUSHALL, FLUSHDB, SWAPDB) that `rules` allow, in order.

    Rules apply left to right, so `+@write -flushall` allows FLUSHDB and SWAPDB only.
    """
    allowed = dict.fromkeys(_KEYLESS_WRITES, False)
    for rule in rules:
        lowered = rule.lower()
        if lowered in ("allcommands", "nocommands"):
            allowed = dict.fromkeys(allowed, lowered == "allcommands")
            continue
        if lowered[:1] not in "+-" or len(lowered) < 2:
            continue
        grant, name = lowered[0] == "+", lowered[1:]
        for command, categories in _KEYLESS_WRITES.items():
            if name == command or (name.startswith("@") and name[1:] in categories):
                allowed[command] = grant
    return [command for command, is_allowed in allowed.items() if is_allowed]


def parse_role_rules(text: str, catalog: CommandCatalog) -> tuple[str, ...]:
    """Split a role string into rules and validate each; raise RuleError on the first bad one."""
    rules = tuple(text.split())
    if not rules:
        raise RuleError("a role needs at least one rule")
    for rule in rules:
        _check_rule(rule, catalog)
    _check_patterns_after_wildcards(rules)
    return rules


def _check_patterns_after_wildcards(rules: tuple[str, ...]) -> None:
    """Reject a pattern after `allkeys`/`~*` (or `&` after `allchannels`/`&*`) until a reset.

    Redis and Valkey refuse such a selector at SETUSER time ("Adding a pattern after the *
    pattern ... is not valid"); catching it here turns an apply failure into a load error.
    """
    all_keys = all_channels = False
    for rule in rules:
        lowered = rule.lower()
        if lowered in ("allkeys", "~*"):
            all_keys = True
        elif lowered == "resetkeys":
            all_keys = False
        elif lowered in ("allchannels", "&*"):
            all_channels = True
        elif lowered == "resetchannels":
            all_channels = False
        elif all_keys and rule[0] in "~%":
            raise RuleError(
                f"{rule!r} after 'allkeys' (or '~*') is refused by the server; put it first or drop it"
            )
        elif all_channels and rule[0] == "&":
            raise RuleError(
                f"{rule!r} after 'allchannels' (or '&*') is refused by the server; put it first or drop it"
            )


def _check_rule(rule: str, catalog: CommandCatalog) -> None:
    lowered = rule.lower()
    if "(" in rule or ")" in rule:
        raise RuleError(
            f"{rule!r}: parentheses (selectors) are not allowed in a role; each role is one selector"
        )
    if lowered in _USER_LEVEL_RULES:
        raise RuleError(f"{rule!r} is not allowed in a role: the compiler sets state and credentials")
    if rule.startswith(_PASSWORD_PREFIXES):
        raise RuleError(f"{rule[0]!r}: passwords are not allowed in a role")
    if lowered in _SELECTOR_KEYWORDS:
        return
    if rule[0] in "+-":
        _check_command_rule(rule, catalog)
    elif rule.startswith("~"):
        _check_pattern(rule[1:], "key")
    elif rule.startswith("&"):
        _check_pattern(rule[1:], "channel")
    elif rule.startswith("%"):
        match = _KEY_PERMISSION.fullmatch(rule)
        if match is None:
            raise RuleError(f"{rule!r}: key permissions are written %R~, %W~ or %RW~ followed by a pattern")
        _check_pattern(match.group(2), "key")
    else:
        raise RuleError(f"unknown ACL rule {rule!r}")


def _check_command_rule(rule: str, catalog: CommandCatalog) -> None:
    name = rule[1:].lower()
    if name.startswith("@"):
        category = name[1:]
        if category != "all" and category not in catalog.categories:
            raise RuleError(f"unknown ACL category {name!r}")
        return
    if not all(_NAME.fullmatch(part) for part in name.split("|")) or name.count("|") > 1:
        raise RuleError(f"{rule!r}: malformed command name")
    if name not in catalog.commands:
        what = "subcommand" if "|" in name else "command"
        raise RuleError(f"unknown {what} {name!r}")


def _check_pattern(pattern: str, kind: str) -> None:
    if not _PATTERN.fullmatch(pattern):
        raise RuleError(
            f"{kind} pattern {pattern!r} must be non-empty printable ASCII without spaces or parentheses"
        )
