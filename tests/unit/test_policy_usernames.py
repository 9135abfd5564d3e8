"""Username templates and the ACL-injection corpus: hostile SCIM values never become ACL syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_scim.directory import UserRecord
from redis_scim.errors import InvalidUsername, InvalidValue
from redis_scim.policy import check_username, render_username
from redis_scim.policy.usernames import MAX_USERNAME_LENGTH, check_not_protected


def user(**resource: object) -> UserRecord:
    return UserRecord("u-1", 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", dict(resource))


@pytest.mark.parametrize(
    ("template", "resource", "expected"),
    [
        ("{userName}", {"userName": "bjensen@example.com"}, "bjensen@example.com"),
        ("{userNameLocalPart}", {"userName": "bjensen@example.com"}, "bjensen"),
        ("scim-{id}", {"userName": "x"}, "scim-u-1"),
        ("{externalId}", {"userName": "x", "externalId": "00u1abcd"}, "00u1abcd"),
        (
            "{emailLocalPart}",
            {
                "userName": "x",
                "emails": [{"value": "b@work.example"}, {"value": "babs@example.com", "primary": True}],
            },
            "babs",
        ),
        ("{emailLocalPart}", {"userName": "x", "emails": [{"value": "first@example.com"}]}, "first"),
    ],
)
def test_placeholders(template: str, resource: dict[str, object], expected: str) -> None:
    assert render_username(template, user(**resource)) == expected


@pytest.mark.parametrize(
    ("template", "resource", "message"),
    [
        ("{externalId}", {"userName": "x"}, "{externalId} is not set"),
        ("{emailLocalPart}", {"userName": "x"}, "{emailLocalPart} is not set"),
        ("{userName}", {"userName": 42}, "{userName} is not set"),
    ],
)
def test_missing_values_are_refused(template: str, resource: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidUsername, match=message):
        render_username(template, user(**resource))


# The hardening corpus: every one of these must be refused, never mapped to something else.
INJECTION_CORPUS = [
    "b jensen",
    "bjensen\r\n",
    "bjensen\nACL SETUSER x on",
    "bjensen\x00",
    "\x00",
    ">password",
    "<password",
    "#" + "a" * 64,
    "!" + "a" * 64,
    "~*",
    "%R~*",
    "&*",
    "(+@all)",
    "bjensen)",
    "+@all",
    "-@all",
    "@admin",
    "=x",
    "bjensen on +@all ~*",
    "bjensen\t",
    "bjensén",
    "bj\u0435nsen",  # Cyrillic small ie looks like e
    "\uff42\uff4a\uff45\uff4e\uff53\uff45\uff4e",  # full-width letters
    "bjensen\u200b",  # zero-width space
    "bjensen\u202e",  # right-to-left override
    "a" * 10_000,
    "",
    "*",
    "bjensen?",
    "bjensen:x",
    "bjensen/x",
    "bjensen\\x",
    '"bjensen"',
    "'bjensen'",
]


@pytest.mark.parametrize("hostile", INJECTION_CORPUS)
def test_injection_corpus_is_refused(hostile: str) -> None:
    with pytest.raises(InvalidUsername) as caught:
        render_username("{userName}", user(userName=hostile))
    assert caught.value.status == 400
    assert caught.value.scim_type == "invalidValue"
    assert isinstance(caught.value, InvalidValue)
    # The message stays readable: bounded and escaped, whatever the input.
    assert len(caught.value.detail) < 200
    assert "\n" not in caught.value.detail and "\x00" not in caught.value.detail


def test_length_limit() -> None:
    check_username("a" * MAX_USERNAME_LENGTH)
    with pytest.raises(InvalidUsername, match="longer than 128"):
        check_username("a" * (MAX_USERNAME_LENGTH + 1))


def test_literal_text_and_placeholders_combine() -> None:
    assert (
        render_username("sso.{userNameLocalPart}", user(userName="Bob.Smith@example.com")) == "sso.Bob.Smith"
    )


def test_format_string_tricks_are_not_placeholders() -> None:
    # Templates are never passed to str.format: attribute access or format specs are unknown names.
    for template in ("{userName.__class__}", "{userName!r}", "{userName:>20}", "{0}"):
        with pytest.raises(ValueError, match="unknown placeholder"):
            render_username(template, user(userName="bjensen"))


def test_protection_is_case_insensitive() -> None:
    check_not_protected("defaults", {"default"})
    for name in ("default", "Default", "DEFAULT"):
        with pytest.raises(InvalidUsername, match="protected"):
            check_not_protected(name, {"default"})


@given(st.text(max_size=200))
def test_any_accepted_username_is_plain_safe_ascii(candidate: str) -> None:
    try:
        name = render_username("{userName}", user(userName=candidate))
    except InvalidUsername:
        return
    assert name == candidate
    assert 1 <= len(name) <= MAX_USERNAME_LENGTH
    assert name.isascii() and name.isprintable()
    assert not set(name) & set(" ~&%#!<>()*?\"'\\/:;{}[]|$`")
