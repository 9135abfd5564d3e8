"""SCIM /Groups through ScimHandler.handle: every member-PATCH form, folding, O(k) membership."""

from __future__ import annotations

from typing import Any

import pytest

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTRA_GROUP_SCHEMA = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"


@pytest.fixture
def users(scim: Any) -> list[str]:
    return [scim.post("/Users", {"userName": f"user{index}@corp.example"}).body["id"] for index in range(4)]


def make_group(scim: Any, name: str = "Ops Team", members: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "displayName": name, "members": []}
    if members:
        body["members"] = [{"value": member} for member in members]
    response = scim.post("/Groups", body)
    assert response.status == 201, response.body
    return response.body


def member_ids(scim: Any, group_id: str) -> list[str]:
    return sorted(member["value"] for member in scim.get(f"/Groups/{group_id}").body.get("members", []))


def test_entra_group_create_with_extra_schema_uri(scim):
    body = {
        "schemas": [GROUP_SCHEMA, ENTRA_GROUP_SCHEMA],
        "externalId": "8aa1a0c0-0000-4a4a-9c9c-000000000002",
        "displayName": "Engineering",
        "meta": {"resourceType": "Group"},
    }
    response = scim.post("/Groups", body)
    assert response.status == 201
    assert response.body["schemas"] == [GROUP_SCHEMA]
    assert response.headers["Location"] == response.body["meta"]["location"]
    assert response.body["meta"]["location"] == f"{scim.base_url}/Groups/{response.body['id']}"
    assert "members" not in response.body


def test_group_with_members_returns_member_references(scim, users):
    group = scim.post(
        "/Groups", {"displayName": "ops", "members": [{"value": users[0], "display": "u0"}]}
    ).body
    assert group["members"] == [
        {"value": users[0], "$ref": f"{scim.base_url}/Users/{users[0]}", "type": "User", "display": "u0"}
    ]


def test_entra_find_by_display_name_with_excluded_members(scim, users):
    group = make_group(scim, members=users[:2])
    response = scim.get(
        "/Groups", query={"excludedAttributes": "members", "filter": 'displayName eq "ops team"'}
    )
    assert response.body["totalResults"] == 1
    assert response.body["Resources"][0]["id"] == group["id"]
    assert "members" not in response.body["Resources"][0]
    single = scim.get(f"/Groups/{group['id']}", query={"excludedAttributes": "members"}).body
    assert "members" not in single
    assert member_ids(scim, group["id"]) == sorted(users[:2])


def test_duplicate_display_name_is_409(scim):
    make_group(scim)
    response = scim.post("/Groups", {"displayName": "OPS TEAM"})
    assert response.status == 409 and response.body["scimType"] == "uniqueness"


def test_okta_membership_patch_remove_then_add(scim, users):
    group = make_group(scim, members=users[:2])
    operations = [
        {"op": "remove", "path": f'members[value eq "{users[0]}"]'},
        {"op": "add", "path": "members", "value": [{"value": users[2], "display": "user2@corp.example"}]},
    ]
    response = scim.patch(f"/Groups/{group['id']}", operations)
    assert response.status == 204 and response.body is None
    assert response.headers["ETag"] == 'W/"2"'
    assert member_ids(scim, group["id"]) == sorted([users[1], users[2]])


def test_entra_add_with_null_ref_and_capitalised_op_is_idempotent(scim, users):
    group = make_group(scim)
    add = [{"op": "Add", "path": "members", "value": [{"$ref": None, "value": users[0]}]}]
    assert scim.patch(f"/Groups/{group['id']}", add).status == 204
    assert scim.patch(f"/Groups/{group['id']}", add).status == 204
    assert member_ids(scim, group["id"]) == [users[0]]


def test_entra_remove_with_value_list_and_no_filter(scim, users):
    group = make_group(scim, members=users[:3])
    operations = [
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": users[0]}, {"value": users[1]}]}
    ]
    assert scim.patch(f"/Groups/{group['id']}", operations).status == 204
    assert member_ids(scim, group["id"]) == [users[2]]


def test_remove_with_or_ed_value_filter(scim, users):
    group = make_group(scim, members=users[:3])
    path = f'members[value eq "{users[0]}" or value eq "{users[2]}"]'
    assert scim.patch(f"/Groups/{group['id']}", [{"op": "remove", "path": path}]).status == 204
    assert member_ids(scim, group["id"]) == [users[1]]


def test_okta_full_replace_of_members(scim, users):
    group = make_group(scim, members=users[:2])
    operations = [{"op": "replace", "path": "members", "value": [{"value": users[2]}, {"value": users[3]}]}]
    assert scim.patch(f"/Groups/{group['id']}", operations).status == 204
    assert member_ids(scim, group["id"]) == sorted(users[2:])


def test_remove_all_members_without_value(scim, users):
    group = make_group(scim, members=users[:2])
    assert scim.patch(f"/Groups/{group['id']}", [{"op": "remove", "path": "members"}]).status == 204
    assert member_ids(scim, group["id"]) == []


def test_okta_rename_with_unchanged_id_and_no_path_members(scim, users):
    group = make_group(scim)
    operations = [
        {"op": "replace", "value": {"id": group["id"], "displayName": "Ops Renamed"}},
        {"op": "add", "value": {"members": [{"value": users[0]}]}},
    ]
    response = scim.patch(f"/Groups/{group['id']}", operations, query={"excludedAttributes": "members"})
    assert response.status == 200 and response.body["displayName"] == "Ops Renamed"
    assert "members" not in response.body
    assert member_ids(scim, group["id"]) == [users[0]]


def test_rename_with_changed_id_is_mutability_and_changes_nothing(scim, users):
    group = make_group(scim)
    operations = [
        {"op": "add", "path": "members", "value": [{"value": users[0]}]},
        {"op": "replace", "value": {"id": "other", "displayName": "X"}},
    ]
    response = scim.patch(f"/Groups/{group['id']}", operations)
    assert response.status == 400 and response.body["scimType"] == "mutability"
    assert scim.get(f"/Groups/{group['id']}").body == group


def test_entra_rename_by_path(scim):
    group = make_group(scim)
    response = scim.patch(
        f"/Groups/{group['id']}", [{"op": "Replace", "path": "displayName", "value": "New"}]
    )
    assert response.status == 204 and response.headers["ETag"] == 'W/"2"'
    assert scim.get(f"/Groups/{group['id']}").body["displayName"] == "New"


@pytest.mark.parametrize(
    ("operations", "expected"),
    [
        # add X then remove X: net remove
        (
            lambda u: [
                {"op": "add", "path": "members", "value": [{"value": u[3]}]},
                {"op": "remove", "path": f'members[value eq "{u[3]}"]'},
            ],
            lambda u: [u[0], u[1]],
        ),
        # remove X then add X: net add
        (
            lambda u: [
                {"op": "remove", "path": f'members[value eq "{u[0]}"]'},
                {"op": "add", "path": "members", "value": [{"value": u[0]}]},
            ],
            lambda u: [u[0], u[1]],
        ),
        # remove all then add Y: replace with {Y}
        (
            lambda u: [
                {"op": "remove", "path": "members"},
                {"op": "add", "path": "members", "value": [{"value": u[2]}]},
            ],
            lambda u: [u[2]],
        ),
        # replace then remove one of the replacement
        (
            lambda u: [
                {"op": "replace", "path": "members", "value": [{"value": u[2]}, {"value": u[3]}]},
                {"op": "remove", "path": "members", "value": [{"value": u[2]}]},
            ],
            lambda u: [u[3]],
        ),
    ],
)
def test_member_operations_fold_in_order(scim, users, operations, expected):
    group = make_group(scim, members=users[:2])
    assert scim.patch(f"/Groups/{group['id']}", operations(users)).status == 204
    assert member_ids(scim, group["id"]) == sorted(expected(users))


def test_patch_returns_the_group_only_when_a_representation_is_asked_for(scim, users):
    group = make_group(scim)
    operations = [{"op": "add", "path": "members", "value": [{"value": users[0]}]}]
    asked = scim.patch(f"/Groups/{group['id']}", operations, query={"attributes": "members"}).body
    assert [member["value"] for member in asked["members"]] == [users[0]]
    assert set(asked) == {"schemas", "id", "members"}
    operations = [{"op": "add", "path": "members", "value": [{"value": users[1]}]}]
    whole = scim.patch(f"/Groups/{group['id']}", operations, query={"excludedAttributes": "externalId"}).body
    assert whole["displayName"] == "Ops Team" and len(whole["members"]) == 2


def test_nested_group_member_is_rejected(scim, users):
    group = make_group(scim)
    other = make_group(scim, "Other")
    operations = [{"op": "add", "path": "members", "value": [{"value": other["id"], "type": "Group"}]}]
    response = scim.patch(f"/Groups/{group['id']}", operations)
    assert response.status == 400 and response.body["scimType"] == "invalidValue"
    assert member_ids(scim, group["id"]) == []


def test_unknown_member_id_is_400_and_changes_nothing(scim, users):
    group = make_group(scim, members=[users[0]])
    operations = [{"op": "add", "path": "members", "value": [{"value": users[1]}, {"value": "no-such-user"}]}]
    response = scim.patch(f"/Groups/{group['id']}", operations)
    assert response.status == 400 and response.body["scimType"] == "invalidValue"
    assert member_ids(scim, group["id"]) == [users[0]]


def test_member_filter_other_than_value_eq_is_invalid_filter(scim, users):
    group = make_group(scim, members=[users[0]])
    response = scim.patch(f"/Groups/{group['id']}", [{"op": "remove", "path": 'members[display co "x"]'}])
    assert response.status == 400 and response.body["scimType"] == "invalidFilter"
    assert member_ids(scim, group["id"]) == [users[0]]


def test_put_group_replaces_name_and_members(scim, users):
    group = make_group(scim, members=users[:2])
    body = {**group, "displayName": "Replaced", "members": [{"value": users[3]}]}
    response = scim.put(f"/Groups/{group['id']}", body)
    assert response.status == 200 and response.body["displayName"] == "Replaced"
    assert [member["value"] for member in response.body["members"]] == [users[3]]
    assert member_ids(scim, group["id"]) == [users[3]]


def test_delete_group(scim):
    group = make_group(scim)
    assert scim.delete(f"/Groups/{group['id']}").status == 204
    assert scim.get(f"/Groups/{group['id']}").status == 404


def test_group_list_pages_and_filter_on_members_is_refused(scim):
    for index in range(3):
        make_group(scim, f"g{index}")
    whole = [group["displayName"] for group in scim.get("/Groups").body["Resources"]]
    assert sorted(whole) == ["g0", "g1", "g2"]
    page = scim.get("/Groups", query={"startIndex": "2", "count": "1"}).body
    assert page["totalResults"] == 3 and page["Resources"][0]["displayName"] == whole[1]
    response = scim.get("/Groups", query={"filter": 'members[value eq "x"]'})
    assert response.status == 400 and response.body["scimType"] == "invalidFilter"


class CountingDirectory:
    """Wraps a Directory and counts the calls that read a whole group."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.group_member_reads = 0
        self.changes: list[Any] = []

    def group_members(self, group_id: str) -> Any:
        self.group_member_reads += 1
        return self.inner.group_members(group_id)

    def change_group(self, group_id: str, change: Any, **kwargs: Any) -> Any:
        self.changes.append(change)
        return self.inner.change_group(group_id, change, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_member_patch_on_large_group_never_reads_members(directory, scim_for):
    counting = CountingDirectory(directory)
    scim = scim_for(counting)
    user_ids = [
        scim.post("/Users", {"userName": f"bulk{index}@corp.example"}).body["id"] for index in range(1200)
    ]
    group = scim.post(
        "/Groups", {"displayName": "big", "members": [{"value": uid} for uid in user_ids[:1000]]}
    ).body
    operations = [
        {"op": "remove", "path": f'members[value eq "{user_ids[0]}"]'},
        {"op": "Remove", "path": "members", "value": [{"value": user_ids[1]}]},
        {"op": "add", "path": "members", "value": [{"value": user_ids[1100]}]},
        {"op": "replace", "value": {"id": group["id"], "displayName": "big"}},
    ]
    response = scim.patch(f"/Groups/{group['id']}", operations, query={"excludedAttributes": "members"})
    assert response.status == 200 and "members" not in response.body
    assert counting.group_member_reads == 0
    change = counting.changes[-1]
    assert change.replace_members is None
    assert [member.value for member in change.add_members] == [user_ids[1100]]
    assert sorted(change.remove_members) == sorted(user_ids[:2])


def test_group_if_match_mismatch_is_412_and_changes_nothing(scim, users):
    group = make_group(scim, members=[users[0]])
    add = [{"op": "add", "path": "members", "value": [{"value": users[1]}]}]
    rename = [{"op": "replace", "path": "displayName", "value": "renamed"}]
    for operations in (add, rename):
        response = scim.patch(f"/Groups/{group['id']}", operations, headers={"if-match": 'W/"9"'})
        assert response.status == 412 and response.body["status"] == "412"
    assert scim.delete(f"/Groups/{group['id']}", headers={"if-match": 'W/"9"'}).status == 412
    assert scim.get(f"/Groups/{group['id']}").body == {**group, "members": group["members"]}
    ok = scim.patch(f"/Groups/{group['id']}", add, headers={"if-match": group["meta"]["version"]})
    assert ok.status == 204 and ok.headers["ETag"] == 'W/"2"'


def test_post_with_too_many_members_is_too_many_and_creates_nothing(scim):
    members = [{"value": f"id{index}"} for index in range(10_001)]
    response = scim.post("/Groups", {"displayName": "huge", "members": members})
    assert response.status == 400 and response.body["scimType"] == "tooMany"
    assert scim.get("/Groups").body["totalResults"] == 0
