"""Turn a SCIM user into a Redis username through the policy's username template, safely.

The username is the only SCIM-derived value that ever reaches an ACL command, so it is validated
strictly: a conservative ASCII charset (no spaces, control characters, unicode look-alikes or ACL
syntax), bounded length. Invalid names are rejected with a typed error, never "fixed" into
something that could collide with another user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from redis_scim.directory import UserRecord
from redis_scim.errors import InvalidUsername

MAX_USERNAME_LENGTH = 128
# Letters, digits and the punctuation found in e-mail-style names. Excludes everything with a
# meaning in ACL rules or Redis protocol framing (~ & % # ! < > ( ) * ? space, control chars).
_USERNAME_CHARACTERS = re.compile(r"[A-Za-z0-9._@+=,-]+")
# A name starts with a letter or digit, so it never reads like a rule (`+@all`, `-get`, `@admin`).
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=,-]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _user_name(user: UserRecord) -> Any:
    return user.resource.get("userName")


def _user_name_local_part(user: UserRecord) -> Any:
    name = user.resource.get("userName")
    return name.split("@", 1)[0] if isinstance(name, str) else None


def _email_local_part(user: UserRecord) -> Any:
    emails = [email for email in user.resource.get("emails") or [] if isinstance(email, dict)]
    chosen = next((email for email in emails if email.get("primary") is True), emails[0] if emails else None)
    value = chosen.get("value") if chosen else None
    return value.split("@", 1)[0] if isinstance(value, str) else None


PLACEHOLDERS: dict[str, Callable[[UserRecord], Any]] = {
    "userName": _user_name,
    "userNameLocalPart": _user_name_local_part,
    "id": lambda user: user.id,
    "externalId": lambda user: user.resource.get("externalId"),
    "emailLocalPart": _email_local_part,
}


def check_template(template: str) -> None:
    """Raise ValueError unless the template names only known placeholders and safe literal text."""
    if not _PLACEHOLDER.search(template):
        raise ValueError("the template must contain at least one placeholder, e.g. {userName}")
    for name in _PLACEHOLDER.findall(template):
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + known_name + "}" for known_name in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}}; known: {known}")
    literal = _PLACEHOLDER.sub("", template)
    if literal and not _USERNAME_CHARACTERS.fullmatch(literal):
        raise ValueError(f"literal text {literal!r} may only use the characters A-Z a-z 0-9 . _ @ + = , -")


def check_username(username: str) -> None:
    """Raise InvalidUsername unless `username` is a safe Redis username."""
    if not username:
        raise InvalidUsername("the Redis username is empty")
    if len(username) > MAX_USERNAME_LENGTH:
        raise InvalidUsername(f"the Redis username is longer than {MAX_USERNAME_LENGTH} characters")
    if not _USERNAME_CHARACTERS.fullmatch(username):
        bad = next(char for char in username if not _USERNAME_CHARACTERS.fullmatch(char))
        raise InvalidUsername(
            f"the Redis username {_shown(username)} contains U+{ord(bad):04X}; "
            "allowed characters are A-Z a-z 0-9 . _ @ + = , -"
        )
    if not _USERNAME.fullmatch(username):
        raise InvalidUsername(f"the Redis username {_shown(username)} must start with a letter or a digit")


def render_username(template: str, user: UserRecord) -> str:
    """The Redis username for `user`; raise InvalidUsername when it cannot be made safely.

    A malformed template raises ValueError; policy templates are checked at load already.
    """
    parts: list[str] = []
    for literal, placeholder in _template_pieces(template):
        parts.append(literal)
        if placeholder is None:
            continue
        value = PLACEHOLDERS[placeholder](user)
        if not isinstance(value, str) or not value:
            raise InvalidUsername(
                f"user {user.id}: {{{placeholder}}} is not set, so no Redis username can be made"
            )
        parts.append(value)
    username = "".join(parts)
    try:
        check_username(username)
    except InvalidUsername as error:
        raise InvalidUsername(f"user {user.id}: {error.detail}") from None
    return username


@lru_cache(maxsize=64)
def _template_pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """The checked template as (literal text, placeholder or None) pieces, in order.

    Cached: a target's one template renders every one of its users (100,000 per reconciler run).
    """
    check_template(template)
    pieces: list[tuple[str, str | None]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        pieces.append((template[position : match.start()], match.group(1)))
        position = match.end()
    pieces.append((template[position:], None))
    return tuple(pieces)


def check_not_protected(username: str, protected: Iterable[str]) -> None:
    """Raise InvalidUsername if `username` would take over a protected (allow-listed) user.

    Compared case-insensitively: Redis names are case-sensitive, but `Default` next to `default`
    would mislead every human reading ACL LIST.
    """
    folded = username.casefold()
    for name in protected:
        if name.casefold() == folded:
            raise InvalidUsername(f"the Redis username {username!r} is protected on this target (allow list)")


def _shown(username: str) -> str:
    # Hostile names can be huge, hold control characters, or look like ACL credentials (`>pass`,
    # `#<hash>`), which the audit writer refuses to store: show a bounded prefix with every
    # character outside the username charset as a \uXXXX escape.
    prefix = "".join(
        char if _USERNAME_CHARACTERS.fullmatch(char) else f"\\u{ord(char):04x}" for char in username[:40]
    )
    return f"'{prefix}{'…' if len(username) > 40 else ''}'"
