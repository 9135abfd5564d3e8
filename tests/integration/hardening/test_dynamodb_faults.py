"""DynamoDB faults under the SCIM API: throttling storms and conditional-check failures injected
into a real (moto) DynamoDB client with botocore event hooks, seen through the SCIM handler.

What must hold: the client only ever sees 2xx, the 4xx the protocol calls for (409 uniqueness,
412 If-Match), or 503 (retry later) — never a 500; and whatever was refused left no partial
write: users, groups, memberships (both directions) and uniqueness guards always agree.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from redis_scim.directory import Actor
from redis_scim.directory.dynamodb import DynamoDirectory
from redis_scim.directory.memory import ListFeed
from redis_scim.local.resources import create_resources, load_template
from redis_scim.scim.handler import ScimHandler
from redis_scim.scim.http import ScimRequest

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
THROTTLING_CODES = ("ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded")


@pytest.fixture
def dynamodb() -> Iterator[tuple[Any, str]]:
    """The Directory's client (faults are injected into it) and table, on moto."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        with mock_aws():
            session = boto3.Session(region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
            template = load_template()
            template["Resources"] = {"DirectoryTable": template["Resources"]["DirectoryTable"]}
            table = create_resources(session, template=template).tables["DirectoryTable"]
            yield session.client("dynamodb"), table


class Api:
    """The SCIM handler over a DynamoDirectory; `send` answers like the API would."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table
        # Inspection goes through a client of its own, untouched by the injected faults.
        self.inspector = boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        self.feed = ListFeed()
        self.handler = ScimHandler(DynamoDirectory(table, client, self.feed))
        self.statuses: list[int] = []

    def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """`headers` in lower case, as the API Gateway adapter hands them on."""
        request = ScimRequest(
            method=method,
            path=path,
            query={},
            headers={"content-type": "application/scim+json", **(headers or {})},
            body=None if body is None else json.dumps(body).encode(),
            base_url="https://scim.example/scim/v2",
            request_id=uuid.uuid4().hex,
            actor=Actor("tok", "192.0.2.1", "pytest"),
        )
        response = self.handler.handle(request)
        self.statuses.append(response.status)
        assert response.status < 500 or response.status == 503, response.body
        if response.status >= 400:
            assert response.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
            assert response.body["status"] == str(response.status)
        return response

    def until_answered(self, method: str, path: str, body: Any = None) -> Any:
        """What an IdP does with a 503: try again (bounded)."""
        for _ in range(50):
            response = self.send(method, path, body)
            if response.status != 503:
                return response
        raise AssertionError(f"{method} {path} never got past 503")

    def items(self) -> list[dict[str, Any]]:
        return list(self.inspector.scan(TableName=self.table)["Items"])


def inject(client: Any, event: str, fault: Callable[..., None]) -> Callable[[], None]:
    client.meta.events.register(event, fault)
    return lambda: client.meta.events.unregister(event, fault)


WRITES = frozenset({"TransactWriteItems", "UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem"})


def throttling_storm(rate: float, seed: int, operations: frozenset[str] | None = None) -> Callable[..., None]:
    """Throttle `rate` of the calls (of `operations`, or of every operation), reproducibly."""
    chance = random.Random(seed)

    def throttle(model: Any, **_: Any) -> None:
        if (operations is None or model.name in operations) and chance.random() < rate:
            code = chance.choice(THROTTLING_CODES)
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, model.name)

    return throttle


def assert_consistent(api: Api) -> dict[str, Any]:
    """The table agrees with itself: memberships in both directions, one guard per unique value."""
    users, groups, members, guards = {}, {}, set(), []
    for item in api.items():
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        if pk.startswith("USER#") and not item.get("deleted", {}).get("BOOL"):
            users[pk[5:]] = {*item.get("group_ids", {}).get("SS", [])}
        elif pk.startswith("GROUP#") and sk.startswith("MEMBER#"):
            members.add((pk[6:], sk[7:]))
        elif pk.startswith("GROUP#"):
            groups[pk[6:]] = json.loads(item["resource"]["S"])["displayName"]
        elif pk.startswith("UNIQUE#"):
            _, kind, attribute, _digest = pk.split("#", 3)
            guards.append((kind, attribute, item["owner"]["S"]))
    from_users = {(group, user) for user, group_ids in users.items() for group in group_ids}
    assert from_users == members, "user -> groups and group -> members disagree"
    assert {group for group, _ in members} <= set(groups) and {user for _, user in members} <= set(users)
    assert {owner for _, _, owner in guards} <= set(users) | set(groups), "a guard outlives its resource"
    # Exactly one name guard per live resource: none lost, none left over from an old name.
    assert sorted(owner for kind, attribute, owner in guards if attribute == "userName") == sorted(users)
    assert sorted(owner for kind, attribute, owner in guards if attribute == "displayName") == sorted(groups)
    return {"users": users, "groups": groups, "members": members}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_throttling_storm_gives_503s_and_no_partial_writes(dynamodb: tuple[Any, str], seed: int) -> None:
    client, table = dynamodb
    api = Api(client, table)
    stop = inject(client, "before-call.dynamodb.*", throttling_storm(0.3, seed))
    try:
        user_ids = []
        for n in range(6):
            response = api.until_answered(
                "POST", "/Users", {"schemas": [USER_SCHEMA], "userName": f"user{n}"}
            )
            if response.status == 409:  # an earlier attempt committed before a throttled read-back
                found = api.until_answered("GET", f'/Users?filter=userName eq "user{n}"')
                response = found
                user_ids.append(found.body["Resources"][0]["id"] if "Resources" in found.body else None)
            else:
                assert response.status == 201
                user_ids.append(response.body["id"])
            assert_consistent(api)
        group = api.until_answered(
            "POST",
            "/Groups",
            {"schemas": [GROUP_SCHEMA], "displayName": "team", "members": [{"value": user_ids[0]}]},
        )
        assert group.status == 201
        group_id = group.body["id"]
        add = [{"op": "add", "path": "members", "value": [{"value": u} for u in user_ids[1:4]]}]
        assert (
            api.until_answered(
                "PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA], "Operations": add}
            ).status
            == 204
        )
        assert_consistent(api)
        assert api.until_answered("DELETE", f"/Users/{user_ids[1]}").status in (204, 404)
        assert_consistent(api)
        remove = [{"op": "remove", "path": f'members[value eq "{user_ids[2]}"]'}]
        assert (
            api.until_answered(
                "PATCH", f"/Groups/{group_id}", {"schemas": [PATCH_SCHEMA], "Operations": remove}
            ).status
            == 204
        )
        rename = [{"op": "replace", "path": "userName", "value": "renamed"}]
        assert (
            api.until_answered(
                "PATCH", f"/Users/{user_ids[3]}", {"schemas": [PATCH_SCHEMA], "Operations": rename}
            ).status
            == 200
        )
        assert_consistent(api)
    finally:
        stop()
    assert 503 in api.statuses  # the storm did reach the client
    state = assert_consistent(api)
    # Once the storm is over, what the client was finally told is what is stored.
    assert len(state["users"]) == 5 and user_ids[1] not in state["users"]
    assert state["members"] == {(group_id, user_ids[0]), (group_id, user_ids[3])}
    renamed = api.send("GET", f"/Users/{user_ids[3]}").body
    assert renamed["userName"] == "renamed"
    assert (
        api.send("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "user3"}).status == 201
    )  # guard released


def test_throttled_writes_leave_nothing_behind(dynamodb: tuple[Any, str]) -> None:
    client, table = dynamodb
    api = Api(client, table)
    user = api.send("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "alice"}).body["id"]
    before = api.items()
    stop = inject(client, "before-call.dynamodb.*", throttling_storm(1.0, 0, WRITES))
    try:
        requests = [
            ("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "bob"}),
            (
                "POST",
                "/Groups",
                {"schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{"value": user}]},
            ),
            ("PUT", f"/Users/{user}", {"schemas": [USER_SCHEMA], "userName": "alice2"}),
            (
                "PATCH",
                f"/Users/{user}",
                {
                    "schemas": [PATCH_SCHEMA],
                    "Operations": [{"op": "replace", "path": "active", "value": False}],
                },
            ),
            ("DELETE", f"/Users/{user}", None),
        ]
        for method, path, body in requests:
            assert api.send(method, path, body).status == 503, (method, path)
    finally:
        stop()
    assert api.items() == before and len(api.feed.changes) == 1


def test_a_lost_race_is_412_with_if_match_and_reapplied_without(dynamodb: tuple[Any, str]) -> None:
    client, table = dynamodb
    api = Api(client, table)
    created = api.send("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "carol"})
    user_id, etag = created.body["id"], created.headers["ETag"]
    other = Api(client, table)
    raced: list[bool] = []

    def concurrent_writer(model: Any, **_: Any) -> None:
        # Another request changes the user between this request's read and its write.
        if model.name in WRITES and not raced:
            raced.append(True)
            stop()
            operations = [{"op": "replace", "path": "title", "value": "set by the other request"}]
            assert (
                other.send(
                    "PATCH", f"/Users/{user_id}", {"schemas": [PATCH_SCHEMA], "Operations": operations}
                ).status
                == 200
            )

    operations = [{"op": "replace", "path": "displayName", "value": "Carol"}]
    body = {"schemas": [PATCH_SCHEMA], "Operations": operations}
    stop = inject(client, "before-call.dynamodb.*", concurrent_writer)
    refused = api.send("PATCH", f"/Users/{user_id}", body, headers={"if-match": etag})
    assert refused.status == 412
    current = api.send("GET", f"/Users/{user_id}").body
    assert current["title"] == "set by the other request" and "displayName" not in current

    raced.clear()
    stop = inject(client, "before-call.dynamodb.*", concurrent_writer)
    applied = api.send("PATCH", f"/Users/{user_id}", body)
    stop()
    assert applied.status == 200
    assert applied.body["displayName"] == "Carol" and applied.body["title"] == "set by the other request"


def test_endless_conflicts_are_503_not_500(dynamodb: tuple[Any, str]) -> None:
    client, table = dynamodb
    api = Api(client, table)
    user_id = api.send("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "dave"}).body["id"]

    def cancelled(model: Any, **_: Any) -> None:
        # Every conditional write is refused, single-item (condition check) or transactional.
        if model.name not in WRITES:
            return
        if model.name != "TransactWriteItems":
            failed = {"Error": {"Code": "ConditionalCheckFailedException", "Message": "injected"}}
            raise ClientError(failed, model.name)  # type: ignore[arg-type]
        error = {
            "Error": {
                "Code": "TransactionCanceledException",
                "Message": "Transaction cancelled [TransactionConflict]",
            },
            "CancellationReasons": [{"Code": "TransactionConflict"}],
        }
        raise ClientError(error, model.name)  # type: ignore[arg-type]

    before = api.items()
    stop = inject(client, "before-call.dynamodb.*", cancelled)
    try:
        operations = [{"op": "replace", "path": "title", "value": "x"}]
        response = api.send(
            "PATCH", f"/Users/{user_id}", {"schemas": [PATCH_SCHEMA], "Operations": operations}
        )
    finally:
        stop()
    assert response.status == 503
    assert api.items() == before
