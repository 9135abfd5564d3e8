"""Replays recorded Okta, Entra ID, JumpCloud, OneLogin and Ping request sequences against the local stack.

Each file in `recordings/` is one IdP conversation paraphrased from IDP_BEHAVIOURS.md (its `source` names
the section). The replay checks every status, `application/scim+json` on every response, the SCIM Error
shape of every error, that no response carries a `password` or a null, the assertions the recording
states, and afterwards reads the Directory straight from DynamoDB to prove no membership dangles and no
password or bearer token was stored.

Recording format (JSON):
  title, idp, source    what the conversation is and where it comes from
  variables             {name: template} resolved once per replay, like Okta's Runscope initial script
  headers               headers every request carries (an IdP's User-Agent, Content-Type, Accept)
  steps                 a list of request steps and import steps

A request step: {"name", "request": {"method", "path", "query", "headers", "body"}, "status": 200 or
[200, 204], "save": "alice", "expect": ["active == false", ...]}. A query value of null sends the bare key
(`?aadOptscim062020`); a header value of null removes a default header. Instead of a JSON `body`, a
request may send `raw_body` (text, sent as is) or `oversized_body_bytes` (a User whose displayName pads the
body past that size); `auth` is "token" (default), "wrong" (a random token) or "none" (no Authorization).
`expect_headers` maps a response header to the prefix its value must start with.
An import step pages a collection the way Okta imports and Ping matches groups: {"name", "import":
{"path", "count"}, "save", "expect"}: it pages with `count`, then with `count + 1`, and requires integer
counters, no id twice, every id once and the same order both times; its document is {"totalResults", "ids"}.

Placeholders `{{...}}` may appear in paths, query values, headers, bodies and expectation operands:
`{{run}}` (unique per replay, so replays never collide), `{{guid}}` (a random GUID per replay), a variable,
or a path into a saved response (`{{alice.id}}`, `{{first.Resources[0].id}}`); `|upper` and `|lower`
transform the value. A JSON string that is exactly one placeholder takes the value's own type (`"meta":
"{{alice.meta}}"` sends the object).

Expectations are `PATH OP OPERAND`, `PATH absent`, `PATH present` or `PATH is TYPE`:
  PATH     dotted keys; 'quoted' keys for URNs; [n] to index; [*] to map over a list; a final `length`
           counts a list (an absent multi-valued attribute counts 0)
  OP       == != <= >= (strict: "false" is not false), contains / excludes (list membership)
  OPERAND  a JSON literal; TYPE one of integer, string, boolean, list, object
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx
import pytest

from redis_scim.directory.dynamodb import GROUP_SK, MEMBER_PREFIX, UNIQUE_SK, USER_SK
from redis_scim.local.stack import DUMMY_CREDENTIALS
from redis_scim.local.stack import REGION as LOCAL_REGION

RECORDINGS = Path(__file__).parent / "recordings"
SCIM_MEDIA_TYPE = "application/scim+json"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


class _Missing:
    """An attribute the document does not have (distinct from an explicit JSON null)."""

    def __repr__(self) -> str:
        return "<absent>"


MISSING = _Missing()
_STAR = object()
_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "string": (str,),
    "boolean": (bool,),
    "list": (list,),
    "object": (dict,),
}

# --- the path and expectation language -------------------------------------------------------------

_PATH_TOKEN = re.compile(r"'(?P<quoted>[^']*)'|(?P<key>[A-Za-z0-9_$-]+)|\[(?P<index>\d+|\*)\]|(?P<dot>\.)")


def parse_path(path: str) -> list[Any]:
    """Split `a.b[0]['urn:x'].c[*].d` into segments: str keys, int indexes and the map marker."""
    segments: list[Any] = []
    position = 0
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            raise ValueError(f"cannot parse path {path!r} at {path[position:]!r}")
        position = match.end()
        if match["quoted"] is not None:
            segments.append(match["quoted"])
        elif match["key"] is not None:
            segments.append(match["key"])
        elif match["index"] is not None:
            segments.append(_STAR if match["index"] == "*" else int(match["index"]))
    if not segments:
        raise ValueError(f"empty path {path!r}")
    return segments


def resolve(document: Any, path: str) -> Any:
    """The value at `path` in `document`, or MISSING."""
    return _walk(document, parse_path(path))


def _walk(node: Any, segments: list[Any]) -> Any:
    if not segments:
        return node
    if node is MISSING and segments != ["length"]:
        return MISSING
    segment, rest = segments[0], segments[1:]
    if segment is _STAR:
        items = node if isinstance(node, list) else []
        walked = [value for value in (_walk(item, rest) for item in items) if value is not MISSING]
        # A nested [*] yields one list per item: flatten them, as JSONPath does.
        return [value for values in walked for value in values] if _STAR in rest else walked
    if segment == "length" and not rest:
        # An absent multi-valued attribute is an empty one (RFC 7643 §2.5).
        if node is MISSING:
            return 0
        if isinstance(node, list):
            return len(node)
    if isinstance(segment, int):
        found = isinstance(node, list) and segment < len(node)
        return _walk(node[segment] if found else MISSING, rest)
    return _walk(node[segment] if isinstance(node, dict) and segment in node else MISSING, rest)


def strictly_equal(left: Any, right: Any) -> bool:
    """JSON equality that does not let `1 == true` or `"false" == false` through."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(strictly_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(strictly_equal(left[k], right[k]) for k in left)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


_EXPECTATION = re.compile(
    r"^(?P<path>\S+)\s+(?:(?P<unary>absent|present)|(?P<op>==|!=|<=|>=|contains|excludes|is)\s+(?P<operand>.+))$"
)


def check_expectation(document: Any, expectation: str, scope: Scope) -> str | None:
    """None when `expectation` holds on `document`, else a sentence saying what was found instead."""
    match = _EXPECTATION.match(expectation.strip())
    if match is None:
        raise ValueError(f"cannot parse expectation {expectation!r}")
    actual = resolve(document, match["path"])
    unary = match["unary"]
    if unary == "absent":
        return None if actual is MISSING else f"expected {match['path']} absent, found {actual!r}"
    if unary == "present":
        return None if actual is not MISSING else f"expected {match['path']} present, it is absent"
    op, operand_text = match["op"], match["operand"].strip()
    if op == "is":
        if operand_text not in _TYPES:
            raise ValueError(f"unknown type {operand_text!r} in {expectation!r}")
        is_type = isinstance(actual, _TYPES[operand_text]) and not (
            operand_text == "integer" and isinstance(actual, bool)
        )
        return None if is_type else f"expected {match['path']} to be a JSON {operand_text}, found {actual!r}"
    operand = scope.substitute(json.loads(operand_text))
    if op == "==":
        holds = strictly_equal(actual, operand)
    elif op == "!=":
        holds = actual is not MISSING and not strictly_equal(actual, operand)
    elif op in ("<=", ">="):
        holds = (
            isinstance(actual, int | float)
            and not isinstance(actual, bool)
            and (actual <= operand if op == "<=" else actual >= operand)
        )
    else:
        items = actual if isinstance(actual, list) else [] if actual is MISSING else None
        if items is None:
            return f"expected {match['path']} to be a list, found {actual!r}"
        found = any(strictly_equal(item, operand) for item in items)
        holds = found if op == "contains" else not found
    return None if holds else f"expected {match['path']} {op} {operand!r}, found {actual!r}"


# --- placeholders ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*(?P<reference>[^}|]+?)\s*(?:\|\s*(?P<transform>upper|lower)\s*)?\}\}")


@dataclass
class Scope:
    """The values placeholders resolve to: built-ins, recording variables and saved responses."""

    values: dict[str, Any] = field(default_factory=dict)

    def lookup(self, reference: str) -> Any:
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", reference)
        if name is None or name[0] not in self.values:
            raise KeyError(f"unknown placeholder {{{{{reference}}}}}; known: {sorted(self.values)}")
        rest = reference[name.end() :].lstrip(".")
        value = self.values[name[0]]
        if rest:
            value = resolve(value, rest)
        if value is MISSING:
            raise KeyError(f"placeholder {{{{{reference}}}}} points at nothing in the saved response")
        return value

    def _render(self, match: re.Match[str]) -> Any:
        value = self.lookup(match["reference"])
        if match["transform"] == "upper":
            return str(value).upper()
        if match["transform"] == "lower":
            return str(value).lower()
        return value

    def substitute(self, value: Any) -> Any:
        if isinstance(value, str):
            whole = _PLACEHOLDER.fullmatch(value)
            if whole is not None:
                return self._render(whole)
            return _PLACEHOLDER.sub(lambda m: str(self._render(m)), value)
        if isinstance(value, list):
            return [self.substitute(item) for item in value]
        if isinstance(value, dict):
            return {self.substitute(key): self.substitute(item) for key, item in value.items()}
        return value


# --- the replay ------------------------------------------------------------------------------------


def find_key(document: Any, key: str) -> list[str]:
    """JSON paths of every object key equal to `key` (case-insensitively), at any depth."""
    found: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, child in node.items():
                if str(name).lower() == key:
                    found.append(f"{where}.{name}")
                visit(child, f"{where}.{name}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                visit(child, f"{where}[{index}]")

    visit(document, "$")
    return found


def find_nulls(document: Any, where: str = "$") -> list[str]:
    """JSON paths of every null value in the document."""
    if document is None:
        return [where]
    if isinstance(document, dict):
        return [path for name, child in document.items() for path in find_nulls(child, f"{where}.{name}")]
    if isinstance(document, list):
        return [path for i, child in enumerate(document) for path in find_nulls(child, f"{where}[{i}]")]
    return []


@dataclass
class Replay:
    """One replay of one recording over HTTP; collects the secrets it sent for the Directory audit."""

    recording: dict[str, Any]
    client: httpx.Client
    base_url: str
    token: str
    scope: Scope = field(default_factory=Scope)
    passwords_sent: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.scope.values.update(run=secrets.token_hex(4), guid=str(uuid.uuid4()))
        for name, template in self.recording.get("variables", {}).items():
            self.scope.values[name] = self.scope.substitute(template)

    def run(self) -> None:
        for number, step in enumerate(self.recording["steps"], start=1):
            where = f"{self.recording['title']} — step {number} {step['name']!r}"
            if "import" in step:
                document = self.import_collection(step["import"], where)
            else:
                document = self.request_step(step, where)
            if "save" in step:
                self.scope.values[step["save"]] = document
            for expectation in step.get("expect", []):
                problem = check_expectation(document, expectation, self.scope)
                assert problem is None, f"{where}: {problem}\nresponse: {json.dumps(document, indent=1)}"

    def url(self, path: str, query: dict[str, Any] | None) -> str:
        url = self.base_url.rstrip("/") + self.scope.substitute(path)
        if query:
            # Encoded the way the IdPs send it (%20, %22), with bare keys for flags.
            parts = [
                quote(name, safe="")
                if value is None
                else f"{quote(name, safe='')}={quote(str(value), safe='')}"
                for name, value in self.scope.substitute(query).items()
            ]
            url += "?" + "&".join(parts)
        return url

    def send(
        self, method: str, url: str, headers: dict[str, Any], content: bytes | None, auth: str = "token"
    ) -> httpx.Response:
        merged = {**self.recording.get("headers", {}), **headers}
        sent_headers = {
            name: value for name, value in self.scope.substitute(merged).items() if value is not None
        }
        if content is None:
            sent_headers = {k: v for k, v in sent_headers.items() if k.lower() != "content-type"}
        if auth == "token":
            sent_headers["Authorization"] = f"Bearer {self.token}"
        elif auth == "wrong":
            sent_headers["Authorization"] = f"Bearer {secrets.token_urlsafe(32)}"
        else:
            assert auth == "none", f"unknown auth {auth!r}"
        return self.client.request(method, url, headers=sent_headers, content=content)

    def request_content(self, request: dict[str, Any]) -> bytes | None:
        if "body" in request:
            body = self.scope.substitute(request["body"])
            self.passwords_sent.update(_password_values(body))
            return json.dumps(body).encode()
        if "raw_body" in request:
            return str(self.scope.substitute(request["raw_body"])).encode()
        if "oversized_body_bytes" in request:
            padding = "x" * int(request["oversized_body_bytes"])
            return json.dumps({"schemas": [USER_SCHEMA], "userName": "big", "displayName": padding}).encode()
        return None

    def request_step(self, step: dict[str, Any], where: str) -> Any:
        request = step["request"]
        content = self.request_content(request)
        url = self.url(request["path"], request.get("query"))
        response = self.send(
            request["method"], url, request.get("headers", {}), content, request.get("auth", "token")
        )
        expected = step["status"] if isinstance(step["status"], list) else [step["status"]]
        context = f"{where}: {request['method']} {url}"
        sent = (content or b"")[:2000].decode(errors="replace")
        assert response.status_code in expected, (
            f"{context}\nexpected {expected}, got {response.status_code}: {response.text}\nsent: {sent}"
        )
        for name, prefix in step.get("expect_headers", {}).items():
            value = response.headers.get(name, "")
            assert value.startswith(prefix), f"{context}: header {name} is {value!r}, expected {prefix!r}..."
        return check_response(response, context)

    def import_collection(self, spec: dict[str, Any], where: str) -> dict[str, Any]:
        """Page through a collection with `count`, then again with `count + 1`: same order both times."""
        first = self._page_through(spec, spec["count"], where)
        second = self._page_through(spec, spec["count"] + 1, where)
        assert first == second, f"{where}: the order changed with the page size\n{first}\n{second}"
        return {"totalResults": len(first), "ids": first}

    def _page_through(self, spec: dict[str, Any], count: int, where: str) -> list[str]:
        ids: list[str] = []
        start_index, total = 1, None
        while total is None or start_index <= total:
            url = self.url(spec["path"], {**spec.get("query", {}), "startIndex": start_index, "count": count})
            response = self.send("GET", url, {}, None)
            context = f"{where}: GET {url}"
            assert response.status_code == 200, f"{context}\n{response.status_code}: {response.text}"
            page = check_response(response, context)
            for attribute in ("totalResults", "startIndex", "itemsPerPage"):
                assert type(page.get(attribute)) is int, (
                    f"{context}: {attribute} is not a JSON integer: {page}"
                )
            assert page["startIndex"] == start_index, f"{context}: startIndex {page['startIndex']}"
            assert total is None or page["totalResults"] == total, (
                f"{context}: totalResults changed mid-import"
            )
            total = page["totalResults"]
            resources = page.get("Resources", [])
            assert page["itemsPerPage"] == len(resources) <= count, f"{context}: page holds {len(resources)}"
            if not resources:
                break
            ids.extend(resource["id"] for resource in resources)
            start_index += count
        assert len(ids) == len(set(ids)), f"{where}: an import with count={count} returned an id twice: {ids}"
        assert len(ids) == total, f"{where}: imported {len(ids)} of totalResults {total} with count={count}"
        return ids


def _password_values(document: Any) -> set[str]:
    values: set[str] = set()
    if isinstance(document, dict):
        for name, child in document.items():
            if str(name).lower() == "password" and isinstance(child, str):
                values.add(child)
            values |= _password_values(child)
    elif isinstance(document, list):
        for child in document:
            values |= _password_values(child)
    return values


def check_response(response: httpx.Response, context: str) -> Any:
    """The invariants every response keeps, whatever the IdP; returns the parsed body (None when empty)."""
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == SCIM_MEDIA_TYPE, f"{context}: Content-Type {content_type!r}"
    if response.status_code == 204:
        assert not response.content, f"{context}: 204 with a body: {response.text}"
        return None
    body = response.json()
    # RFC 7643 §2.5: an unassigned attribute is omitted; Entra asks for no nulls (IDP_BEHAVIOURS.md §2.1).
    assert not find_nulls(body), f"{context}: response carries null at {find_nulls(body)}"
    assert not find_key(body, "password"), (
        f"{context}: response carries a password at {find_key(body, 'password')}"
    )
    if response.status_code >= 400:
        assert ERROR_SCHEMA in body.get("schemas", []), f"{context}: error without the Error schema: {body}"
        assert body.get("status") == str(response.status_code), (
            f"{context}: status must be the string: {body}"
        )
    if "Resources" in body or LIST_RESPONSE_SCHEMA in body.get("schemas", []):
        for resource in body.get("Resources", []):
            assert "id" in resource, f"{context}: a listed resource has no id: {resource}"
    if response.status_code == 201:
        assert body.get("id"), f"{context}: 201 without an id: {body}"
        location = resolve(body, "meta.location")
        assert response.headers.get("location") == location, (
            f"{context}: Location {response.headers.get('location')!r} != meta.location {location!r}"
        )
    return body


# --- the Directory audit ---------------------------------------------------------------------------


def scan_tables(endpoint_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every item of every table on the local AWS endpoint, as plain Python values."""
    session = boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=LOCAL_REGION,
    )
    dynamodb = session.resource("dynamodb", endpoint_url=endpoint_url)
    items: dict[str, list[dict[str, Any]]] = {}
    for table in dynamodb.tables.all():
        scanned: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = table.scan(**kwargs)
            scanned.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        items[table.name] = scanned
    return items


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield str(key)
            yield from _strings(child)
    elif isinstance(node, list | set | tuple):
        for child in node:
            yield from _strings(child)


def audit_secrets(tables: dict[str, list[dict[str, Any]]], secrets_sent: set[str]) -> None:
    """No item of any table stores a password attribute or a secret the replay sent (passwords, the token)."""
    for table, items in tables.items():
        for item in map(_decode_json_strings, items):
            keys = find_key(item, "password")
            assert not keys, f"{table}: item {item.get('pk')!r} stores {keys}"
            leaked = any(secret in text for secret in secrets_sent for text in _strings(item))
            assert not leaked, f"{table}: item {item.get('pk')!r} stores a secret the IdP sent in clear"


def _decode_json_strings(node: Any) -> Any:
    """The item with attributes that hold JSON documents (the stored SCIM `resource`) parsed."""
    if isinstance(node, str) and node.startswith(("{", "[")):
        try:
            return _decode_json_strings(json.loads(node))
        except ValueError:
            return node
    if isinstance(node, dict):
        return {key: _decode_json_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_decode_json_strings(value) for value in node]
    return node


def audit_memberships(tables: dict[str, list[dict[str, Any]]]) -> None:
    """Both directions of every membership agree and name live resources; guards name live owners.

    Reads the Directory's item layout (directory/dynamodb.py): a deleted user is a tombstone that
    belongs to no group; a membership item `GROUP#<gid>`/`MEMBER#<uid>` mirrors the user's `group_ids`.
    """
    for table, items in tables.items():
        users = {_id(item): item for item in items if item.get("sk") == USER_SK and not item.get("deleted")}
        tombstones = {_id(item): item for item in items if item.get("sk") == USER_SK and item.get("deleted")}
        groups = {_id(item) for item in items if item.get("sk") == GROUP_SK}
        memberships = {
            (_id(item), str(item["sk"])[len(MEMBER_PREFIX) :])
            for item in items
            if str(item.get("sk", "")).startswith(MEMBER_PREFIX)
        }
        for group_id, user_id in memberships:
            assert group_id in groups, f"{table}: membership of {user_id} in a group that no longer exists"
            assert user_id in users, (
                f"{table}: group {group_id} keeps a member {user_id} that no longer exists"
            )
            assert group_id in users[user_id].get("group_ids", set()), (
                f"{table}: user {user_id} is a member of {group_id} but its group_ids miss it"
            )
        for user_id, user in users.items():
            for group_id in user.get("group_ids", set()):
                assert (group_id, user_id) in memberships, (
                    f"{table}: user {user_id} lists group {group_id} without a membership item"
                )
        for user_id, tombstone in tombstones.items():
            assert not tombstone.get("group_ids"), f"{table}: deleted user {user_id} still lists groups"
        owners = set(users) | groups
        for item in items:
            if item.get("sk") == UNIQUE_SK:
                assert item.get("owner") in owners, (
                    f"{table}: uniqueness guard {item['pk']} of a deleted owner"
                )


def _id(item: dict[str, Any]) -> str:
    return str(item["pk"]).split("#", 1)[1]


# --- tests -----------------------------------------------------------------------------------------


def _recordings() -> list[Path]:
    return sorted(RECORDINGS.glob("*.json"))


@pytest.mark.e2e
@pytest.mark.parametrize("path", _recordings(), ids=lambda path: path.stem)
def test_idp_conversation_replays_correctly(path: Path, local_stack: Any) -> None:
    recording = json.loads(path.read_text())
    with httpx.Client(timeout=30) as client:
        replay = Replay(recording, client, local_stack.base_url, local_stack.token)
        replay.run()
    tables = scan_tables(local_stack.aws_endpoint_url)
    # template.yaml names it "<stack>-directory"; finding none means the audit looked in the wrong place.
    assert any(name.endswith("-directory") for name in tables), (
        f"no Directory table at {local_stack.aws_endpoint_url}: {list(tables)}"
    )
    audit_secrets(tables, replay.passwords_sent | {local_stack.token})
    audit_memberships(tables)


@pytest.mark.parametrize("path", _recordings(), ids=lambda path: path.stem)
def test_recording_is_well_formed(path: Path) -> None:
    recording = json.loads(path.read_text())
    assert recording["source"].startswith("IDP_BEHAVIOURS.md"), (
        "each recording names the section it paraphrases"
    )
    assert {"title", "idp", "steps"} <= recording.keys()
    for step in recording["steps"]:
        assert ("request" in step) != ("import" in step), step
        if "request" in step:
            assert isinstance(step["status"], int | list), step
        for expectation in step.get("expect", []):
            assert _EXPECTATION.match(expectation.strip()), expectation
            parse_path(_EXPECTATION.match(expectation.strip())["path"])  # type: ignore[index]


_USER = {
    "Resources": [{"emails": [{"type": "work"}]}, {"emails": [{"type": "home"}]}],
    "id": "u1",
    "active": False,
    "emails": [{"type": "work", "value": "a@x"}],
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "42"},
    "totalResults": 1,
}


@pytest.mark.parametrize(
    "expectation",
    [
        "active == false",
        'id == "u1"',
        'emails[0].value == "a@x"',
        'emails[*].type contains "work"',
        'Resources[*].emails[*].type contains "home"',
        'emails[*].type excludes "home"',
        "emails.length == 1",
        "groups.length == 0",
        "'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'.employeeNumber == \"42\"",
        "password absent",
        "id present",
        "totalResults is integer",
        "totalResults >= 1",
        "totalResults <= 1",
        'id != "u2"',
    ],
)
def test_expectation_holds(expectation: str) -> None:
    assert check_expectation(_USER, expectation, Scope()) is None


@pytest.mark.parametrize(
    "expectation",
    [
        'active == "False"',  # a string boolean is not a boolean
        "totalResults == true",
        "active is integer",
        'emails[*].type contains "home"',
        'emails[*].type excludes "work"',
        "id absent",
        "password present",
        'nickName != "x"',  # an absent attribute does not differ: it is absent
        'id contains "u1"',  # contains needs a list
        "totalResults >= 2",
    ],
)
def test_expectation_fails_with_what_was_found(expectation: str) -> None:
    problem = check_expectation(_USER, expectation, Scope())
    assert problem is not None and "expected" in problem


def test_find_nulls_names_every_null() -> None:
    assert find_nulls({"a": None, "b": [1, None], "c": {"d": None}, "e": 0}) == ["$.a", "$.b[1]", "$.c.d"]


def test_placeholders_keep_types_and_transform() -> None:
    scope = Scope({"alice": {"id": "abc", "meta": {"version": 'W/"1"'}}, "name": "Ada@Corp"})
    assert scope.substitute({"meta": "{{alice.meta}}", "path": "/Users/{{alice.id}}"}) == {
        "meta": {"version": 'W/"1"'},
        "path": "/Users/abc",
    }
    assert scope.substitute('userName eq "{{name|upper}}"') == 'userName eq "ADA@CORP"'
    with pytest.raises(KeyError):
        scope.substitute("{{bob.id}}")
    with pytest.raises(KeyError):
        scope.substitute("{{alice.missing}}")


def _directory(*extra: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        "directory": [
            {"pk": "USER#u1", "sk": USER_SK, "group_ids": {"g1"}},
            {"pk": "USER#u2", "sk": USER_SK, "deleted": True},
            {"pk": "GROUP#g1", "sk": GROUP_SK},
            {"pk": "GROUP#g1", "sk": f"{MEMBER_PREFIX}u1", "display": "u1"},
            {"pk": "UNIQUE#User#userName#abc", "sk": UNIQUE_SK, "owner": "u1"},
            *extra,
        ]
    }


def test_membership_audit_accepts_a_consistent_directory() -> None:
    audit_memberships(_directory())


@pytest.mark.parametrize(
    "dangling",
    [
        {"pk": "GROUP#g1", "sk": f"{MEMBER_PREFIX}u2"},  # a deleted user still a member
        {"pk": "GROUP#g9", "sk": f"{MEMBER_PREFIX}u1"},  # a member of a deleted group
        {"pk": "USER#u3", "sk": USER_SK, "group_ids": {"g1"}},  # one direction only
        {"pk": "USER#u4", "sk": USER_SK, "deleted": True, "group_ids": {"g1"}},
        {"pk": "UNIQUE#User#userName#def", "sk": UNIQUE_SK, "owner": "u2"},  # a guard never released
    ],
)
def test_membership_audit_finds_dangling_items(dangling: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        audit_memberships(_directory(dangling))


def test_secret_audit_finds_a_clear_password_anywhere() -> None:
    tables = {"audit": [{"pk": "a", "detail": {"body": ["x tmp-Pa55word y"]}}]}
    audit_secrets(tables, {"other"})
    with pytest.raises(AssertionError):
        audit_secrets(tables, {"tmp-Pa55word"})
    with pytest.raises(AssertionError):
        audit_secrets({"directory": [{"pk": "USER#u1", "resource": '{"Password": "h"}'}]}, set())
