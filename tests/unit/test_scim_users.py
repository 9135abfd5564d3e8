"""SCIM /Users through ScimHandler.handle: lifecycle, IdP quirks (IDP_BEHAVIOURS.md §6), password."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import pytest

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def okta_user(user_name: str = "ada.l@corp.example", **extra: Any) -> dict[str, Any]:
    """Okta's create body (IDP_BEHAVIOURS.md §1.2 step 3, paraphrased)."""
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Ada", "familyName": "L"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Ada L",
        "locale": "en-US",
        "externalId": "00uABCDEF123",
        "groups": [],
        "password": "tmp-Pa55word",
        "active": True,
        **extra,
    }


def entra_user() -> dict[str, Any]:
    """Entra's create body (IDP_BEHAVIOURS.md §2.2 step 2), with the old example's explicit nulls."""
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "externalId": "5d1c9a0e-0000-4a4a-9c9c-000000000001",
        "userName": "grace@contoso.example",
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": "grace@contoso.example"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Grace H", "familyName": "H", "givenName": "Grace"},
        "roles": [],
        "addresses": None,
        "phoneNumbers": None,
        "title": None,
        ENTERPRISE: {"manager": None, "department": "Research"},
    }


def create(scim: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = scim.post("/Users", body or okta_user())
    assert response.status == 201, response.body
    return response.body


# --- create ------------------------------------------------------------------------------------


def test_okta_create_returns_201_with_full_resource_location_and_etag(scim, directory):
    response = scim.post("/Users", okta_user())
    assert response.status == 201
    body = response.body
    location = f"{scim.base_url}/Users/{body['id']}"
    assert response.headers["Location"] == location == body["meta"]["location"]
    assert response.headers["ETag"] == body["meta"]["version"] == 'W/"1"'
    assert body["schemas"] == [USER_SCHEMA]
    assert body["userName"] == "ada.l@corp.example"
    assert body["name"] == {"givenName": "Ada", "familyName": "L"}
    assert body["emails"] == [{"primary": True, "value": "ada.l@corp.example", "type": "work"}]
    assert body["active"] is True
    assert body["meta"]["resourceType"] == "User"
    assert body["meta"]["created"] and body["meta"]["lastModified"]
    assert "password" not in body and "groups" not in body


def test_password_is_stored_only_as_sha256_and_never_returned(scim, directory):
    body = create(scim)
    record = directory.get_user(body["id"])
    assert record.password_sha256 == hashlib.sha256(b"tmp-Pa55word").hexdigest()
    assert "password" not in record.resource
    assert "tmp-Pa55word" not in repr(record.resource)
    assert "password" not in scim.get(f"/Users/{body['id']}").body


def test_entra_create_ignores_meta_nulls_and_keeps_extension(scim):
    response = scim.post("/Users", entra_user())
    assert response.status == 201
    body = response.body
    assert body["schemas"] == [USER_SCHEMA, ENTERPRISE]
    assert body[ENTERPRISE] == {"department": "Research"}
    assert "title" not in body and "addresses" not in body
    assert body["meta"]["resourceType"] == "User"
    assert None not in body.values()


def test_foreign_schema_uris_and_unknown_attributes_are_tolerated(scim):
    body = {"schemas": ["urn:scim:schemas:core:1.0"], "userName": "one@login.example", "customField": "x"}
    response = scim.post("/Users", body)
    assert response.status == 201
    assert response.body["schemas"] == [USER_SCHEMA]
    assert "customField" not in response.body


def test_emails_are_stored_as_sent(scim):
    """On-premises AD UPNs (`.local`) reach the email attribute; Entra asks not to transform values."""
    emails = [{"value": "Ada.L@corp.local", "type": "work", "primary": True}]
    body = create(scim, {"userName": "ada@corp.local", "emails": emails})
    assert body["emails"] == emails
    found = scim.get("/Users", query={"filter": 'emails[type eq "work"].value eq "ada.l@corp.local"'})
    assert found.body["totalResults"] == 1


def test_string_booleans_for_active_are_stored_as_json_booleans(scim, directory):
    cases = (("False", False), ("false", False), ("True", True), ("true", True))
    for index, (text, expected) in enumerate(cases):
        body = create(scim, {"userName": f"user{index}@corp.example", "active": text})
        assert body["active"] is expected
        assert directory.get_user(body["id"]).resource["active"] is expected


def test_entra_bare_string_manager_is_normalised(scim):
    body = entra_user()
    body[ENTERPRISE] = {"manager": "manager-id"}
    response = scim.post("/Users", body)
    assert response.status == 201
    assert response.body[ENTERPRISE]["manager"] == {"value": "manager-id"}


@pytest.mark.parametrize(
    "value",
    [
        [{"$ref": None, "value": "boss-id"}],  # Entra tutorial's SDK example: an array with $ref
        "boss-id",  # field report: a bare id
        {"value": "boss-id", "$ref": None},
    ],
)
@pytest.mark.parametrize("op", ["Add", "Replace"])
def test_entra_manager_patch_forms_are_normalised(scim, op, value):
    created = create(scim)
    operation = {"op": op, "path": f"{ENTERPRISE}:manager", "value": value}
    response = scim.patch(f"/Users/{created['id']}", [operation])
    assert response.status == 200, response.body
    assert response.body[ENTERPRISE]["manager"] == {"value": "boss-id"}


def test_manager_array_of_two_is_refused(scim, directory):
    created = create(scim)
    two = [{"value": "a"}, {"value": "b"}]
    operation = {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": two}
    response = scim.patch(f"/Users/{created['id']}", [operation])
    assert response.status == 400 and response.body["scimType"] == "invalidValue"
    assert directory.get_user(created["id"]).version == int(created["meta"]["version"].split('"')[1])


def test_duplicate_username_is_409_uniqueness_case_insensitively(scim):
    create(scim)
    response = scim.post("/Users", okta_user("ADA.L@CORP.EXAMPLE", externalId="other"))
    assert response.status == 409
    assert response.body["status"] == "409"
    assert response.body["scimType"] == "uniqueness"


def test_create_then_delete_connection_test(scim):
    """JumpCloud's Test Connection creates a throwaway user and deletes it at once."""
    body = create(scim, {"userName": "jc-test@corp.example"})
    assert scim.delete(f"/Users/{body['id']}").status == 204
    assert scim.get(f"/Users/{body['id']}").status == 404


# --- read and list ------------------------------------------------------------------------------


def test_get_unknown_user_is_404_scim_error(scim):
    response = scim.get("/Users/010101001010101011001010101011")
    assert response.status == 404
    assert response.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert response.body["status"] == "404"
    assert response.body["detail"]


def test_filter_miss_is_200_empty_list(scim):
    response = scim.get(
        "/Users", query={"filter": 'userName eq "abcdefgh@example.com"', "startIndex": "1", "count": "100"}
    )
    assert response.status == 200
    assert response.body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }


def test_lookup_by_username_uppercase_and_by_external_id(scim):
    created = create(scim)
    by_name = scim.get("/Users", query={"filter": 'userName eq "ADA.L@CORP.EXAMPLE"'})
    assert by_name.body["totalResults"] == 1
    assert by_name.body["Resources"][0]["id"] == created["id"]
    by_external = scim.get("/Users", query={"filter": 'externalId eq "00uABCDEF123"', "aadOptscim062020": ""})
    assert [user["id"] for user in by_external.body["Resources"]] == [created["id"]]


def test_inactive_user_is_still_returned_by_get_and_filter(scim):
    created = create(scim, okta_user(active=False))
    assert scim.get(f"/Users/{created['id']}").body["active"] is False
    found = scim.get("/Users", query={"filter": 'userName eq "ada.l@corp.example"'})
    assert found.body["Resources"][0]["active"] is False


def test_filters_beyond_lookups_are_evaluated(scim):
    create(scim)
    create(scim, {"userName": "bob@corp.example", "emails": [{"value": "bob@home.example", "type": "home"}]})
    cases = {
        'emails[type eq "work"].value eq "ada.l@corp.example"': ["ada.l@corp.example"],
        'userName sw "BOB"': ["bob@corp.example"],
        'active eq true and name.givenName eq "ada"': ["ada.l@corp.example"],
        'userName eq "ada.l@corp.example" and active eq false': [],
        'not (userName eq "bob@corp.example")': ["ada.l@corp.example"],
        "title pr": [],
    }
    for expression, expected in cases.items():
        response = scim.get("/Users", query={"filter": expression})
        assert response.status == 200, (expression, response.body)
        assert [user["userName"] for user in response.body["Resources"]] == expected, expression


def test_pagination_is_stable_with_integer_fields(scim):
    ids = [create(scim, {"userName": f"user{index}@corp.example"})["id"] for index in range(5)]
    first = scim.get("/Users", query={"startIndex": "1", "count": "2"}).body
    second = scim.get("/Users", query={"startIndex": "3", "count": "2"}).body
    third = scim.get("/Users", query={"startIndex": "5", "count": "2"}).body
    assert (first["totalResults"], first["startIndex"], first["itemsPerPage"]) == (5, 1, 2)
    assert (third["startIndex"], third["itemsPerPage"]) == (5, 1)
    paged = [user["id"] for page in (first, second, third) for user in page["Resources"]]
    whole = [user["id"] for user in scim.get("/Users").body["Resources"]]
    assert paged == whole
    assert sorted(paged) == sorted(ids)


def test_count_zero_returns_only_the_total(scim):
    create(scim)
    body = scim.get("/Users", query={"count": "0"}).body
    assert body["totalResults"] == 1 and body["itemsPerPage"] == 0 and body["Resources"] == []


def test_count_is_capped_at_max_results(scim):
    create(scim)
    assert scim.get("/Users", query={"count": "100000"}).status == 200


def test_bad_paging_value_is_400(scim):
    response = scim.get("/Users", query={"count": "ten"})
    assert response.status == 400 and response.body["scimType"] == "invalidValue"


def test_attributes_and_excluded_attributes(scim):
    created = create(scim, entra_user())
    only = scim.get(f"/Users/{created['id']}", query={"attributes": "userName,name.givenName"}).body
    assert set(only) == {"schemas", "id", "userName", "name"}
    assert only["name"] == {"givenName": "Grace"}
    urn = scim.get(f"/Users/{created['id']}", query={"attributes": f"{ENTERPRISE}:department"}).body
    assert urn[ENTERPRISE] == {"department": "Research"}
    without = scim.get(
        f"/Users/{created['id']}", query={"excludedAttributes": "emails,meta,name.formatted"}
    ).body
    assert "emails" not in without and "meta" not in without
    assert without["name"] == {"familyName": "H", "givenName": "Grace"}
    assert without["id"] == created["id"]


def test_if_none_match_gives_304(scim):
    created = create(scim)
    response = scim.get(f"/Users/{created['id']}", headers={"if-none-match": 'W/"1"'})
    assert response.status == 304 and response.body is None


# --- replace -------------------------------------------------------------------------------------


def test_okta_put_with_id_and_meta_replaces_and_keeps_password(scim, directory):
    created = create(scim)
    before_hash = directory.get_user(created["id"]).password_sha256
    body = {**created, "name": {"givenName": "Augusta", "familyName": "King"}}
    body.pop("emails")
    response = scim.put(f"/Users/{created['id']}", body)
    assert response.status == 200
    assert response.body["name"] == {"givenName": "Augusta", "familyName": "King"}
    assert "emails" not in response.body
    assert response.body["meta"]["version"] == 'W/"2"'
    assert directory.get_user(created["id"]).password_sha256 == before_hash


def test_put_with_password_sets_new_hash(scim, directory):
    created = create(scim)
    scim.put(f"/Users/{created['id']}", {"userName": created["userName"], "password": "n3w"})
    assert directory.get_user(created["id"]).password_sha256 == hashlib.sha256(b"n3w").hexdigest()


def test_put_with_other_id_is_mutability_error_and_changes_nothing(scim):
    created = create(scim)
    response = scim.put(f"/Users/{created['id']}", {**created, "id": "other", "displayName": "X"})
    assert response.status == 400 and response.body["scimType"] == "mutability"
    assert scim.get(f"/Users/{created['id']}").body == created


def test_put_unknown_user_is_404(scim):
    assert scim.put("/Users/nope", {"userName": "x"}).status == 404


# --- patch ---------------------------------------------------------------------------------------


def test_okta_deactivate_and_reactivate(scim):
    created = create(scim)
    off = scim.patch(f"/Users/{created['id']}", [{"op": "replace", "value": {"active": False}}])
    assert off.status == 200 and off.body["active"] is False
    on = scim.patch(f"/Users/{created['id']}", [{"op": "replace", "value": {"active": True}}])
    assert on.body["active"] is True and on.body["meta"]["version"] == 'W/"3"'


def test_entra_disable_with_capitalised_op_and_string_boolean(scim, directory):
    created = create(scim)
    response = scim.patch(f"/Users/{created['id']}", [{"op": "Replace", "path": "active", "value": "False"}])
    assert response.status == 200 and response.body["active"] is False
    assert directory.get_user(created["id"]).resource["active"] is False


def test_entra_replace_several_with_dotted_and_urn_keys(scim):
    created = create(scim)
    operations = [
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ada@new.example"},
        {
            "op": "Replace",
            "value": {
                "displayName": "Ada King",
                "name.givenName": "Augusta",
                "name.familyName": "King",
                f"{ENTERPRISE}:employeeNumber": "42",
                f"{ENTERPRISE}:manager": "boss-id",
            },
        },
    ]
    body = scim.patch(f"/Users/{created['id']}", operations).body
    assert body["emails"] == [{"primary": True, "value": "ada@new.example", "type": "work"}]
    assert body["displayName"] == "Ada King"
    assert body["name"] == {"givenName": "Augusta", "familyName": "King"}
    assert body[ENTERPRISE] == {"employeeNumber": "42", "manager": {"value": "boss-id"}}
    assert ENTERPRISE in body["schemas"]


def test_value_filter_path_creates_missing_entry(scim):
    created = create(scim, {"userName": "nomail@corp.example"})
    body = scim.patch(
        f"/Users/{created['id']}",
        [{"op": "Add", "path": 'emails[type eq "work"].value', "value": "w@corp.example"}],
    ).body
    assert body["emails"] == [{"type": "work", "value": "w@corp.example"}]


def test_okta_replace_with_unchanged_id_is_accepted_changed_id_is_mutability(scim):
    created = create(scim)
    same = scim.patch(
        f"/Users/{created['id']}", [{"op": "replace", "value": {"id": created["id"], "title": "CTO"}}]
    )
    assert same.status == 200 and same.body["title"] == "CTO"
    other = scim.patch(
        f"/Users/{created['id']}", [{"op": "replace", "value": {"id": "other", "title": "CEO"}}]
    )
    assert other.status == 400 and other.body["scimType"] == "mutability"
    assert scim.get(f"/Users/{created['id']}").body["title"] == "CTO"


def test_patch_password_replaces_hash_and_other_patches_keep_it(scim, directory):
    created = create(scim)
    scim.patch(f"/Users/{created['id']}", [{"op": "replace", "value": {"password": "s3cond"}}])
    assert directory.get_user(created["id"]).password_sha256 == hashlib.sha256(b"s3cond").hexdigest()
    scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "password", "value": "th1rd"}])
    assert directory.get_user(created["id"]).password_sha256 == hashlib.sha256(b"th1rd").hexdigest()
    scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "title", "value": "x"}])
    assert directory.get_user(created["id"]).password_sha256 == hashlib.sha256(b"th1rd").hexdigest()


def test_empty_operations_is_a_no_op(scim):
    created = create(scim)
    response = scim.patch(f"/Users/{created['id']}", [])
    assert response.status == 200
    assert response.body["meta"]["version"] == created["meta"]["version"]


def test_patch_response_includes_groups(scim):
    created = create(scim)
    group = scim.post("/Groups", {"displayName": "ops", "members": [{"value": created["id"]}]}).body
    body = scim.patch(f"/Users/{created['id']}", [{"op": "replace", "path": "title", "value": "x"}]).body
    assert body["groups"] == [
        {
            "value": group["id"],
            "display": "ops",
            "$ref": f"{scim.base_url}/Groups/{group['id']}",
            "type": "direct",
        }
    ]
    listed = scim.get("/Users").body["Resources"][0]
    assert "groups" not in listed
    asked = scim.get("/Users", query={"attributes": "groups"}).body["Resources"][0]
    assert asked["groups"][0]["value"] == group["id"]


def test_patch_unknown_user_is_404(scim):
    assert scim.patch("/Users/nope", [{"op": "replace", "path": "title", "value": "x"}]).status == 404


def test_application_json_is_accepted(scim):
    response = scim.request(
        "POST",
        "/Users",
        {"userName": "json@corp.example"},
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status == 201


# --- delete and ETags ---------------------------------------------------------------------------


def test_delete_user_removes_it_from_groups(scim):
    created = create(scim)
    group = scim.post("/Groups", {"displayName": "ops", "members": [{"value": created["id"]}]}).body
    assert scim.delete(f"/Users/{created['id']}").status == 204
    assert "members" not in scim.get(f"/Groups/{group['id']}").body
    assert scim.delete(f"/Users/{created['id']}").status == 404


def test_if_match_mismatch_is_412_and_changes_nothing(scim):
    created = create(scim)
    for method, body in (
        ("PUT", {"userName": "x@corp.example"}),
        ("PATCH", {"Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
        ("DELETE", None),
    ):
        response = scim.request(method, f"/Users/{created['id']}", body, headers={"if-match": 'W/"7"'})
        assert response.status == 412, method
        assert response.body["status"] == "412"
    assert scim.get(f"/Users/{created['id']}").body == created


def test_if_match_current_version_succeeds(scim):
    created = create(scim)
    response = scim.patch(
        f"/Users/{created['id']}",
        [{"op": "replace", "path": "title", "value": "x"}],
        headers={"if-match": 'W/"1"'},
    )
    assert response.status == 200 and response.headers["ETag"] == 'W/"2"'
    assert scim.delete(f"/Users/{created['id']}", headers={"if-match": 'W/"2"'}).status == 204


class RecordingDirectory:
    """Wraps a Directory and records the search arguments the handler passes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.searches: list[dict[str, Any]] = []

    def search_users(self, **kwargs: Any) -> Any:
        self.searches.append(kwargs)
        return self.inner.search_users(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_indexed_eq_filters_become_lookups(directory, scim_for):
    recording = RecordingDirectory(directory)
    scim = scim_for(recording)
    created = scim.post("/Users", okta_user()).body
    cases = {
        'userName eq "ADA.L@corp.example"': (("userName", "ADA.L@corp.example"), False),
        'externalId eq "00uABCDEF123"': (("externalId", "00uABCDEF123"), False),
        f'id eq "{created["id"]}"': (("id", created["id"]), False),
        'active eq true and USERNAME eq "ada.l@corp.example"': (("userName", "ada.l@corp.example"), True),
        'userName co "ada"': (None, True),
    }
    for expression, (lookup, has_predicate) in cases.items():
        response = scim.get("/Users", query={"filter": expression})
        assert response.body["totalResults"] == 1, expression
        assert recording.searches[-1]["lookup"] == lookup, expression
        assert (recording.searches[-1]["predicate"] is not None) == has_predicate, expression


def test_if_match_with_several_tags_or_star(scim):
    created = create(scim)
    several = scim.patch(
        f"/Users/{created['id']}",
        [{"op": "replace", "path": "title", "value": "x"}],
        headers={"if-match": 'W/"5", W/"1"'},
    )
    assert several.status == 200
    assert scim.delete(f"/Users/{created['id']}", headers={"if-match": "*"}).status == 204


def test_errors_never_echo_the_password(scim, caplog):
    caplog.set_level(logging.DEBUG)
    body = okta_user(active="perhaps", password="hunter2-Secret")
    response = scim.post("/Users", body)
    assert response.status == 400
    assert "hunter2" not in json.dumps(response.body)
    created = create(scim)
    operations = [
        {"op": "replace", "value": {"password": "hunter2-Secret", "active": "perhaps"}},
    ]
    response = scim.patch(f"/Users/{created['id']}", operations)
    assert response.status == 400
    assert "hunter2" not in json.dumps(response.body)
    assert "hunter2" not in caplog.text


def test_a_user_created_without_active_is_active_and_found_by_an_active_filter(scim):
    # OneLogin's JSON templates may leave `active` out; the targets enable such a user.
    response = scim.post("/Users", {"schemas": [USER_SCHEMA], "userName": "no.active@corp.example"})
    assert response.status == 201 and response.body["active"] is True
    found = scim.get("/Users", query={"filter": 'userName eq "no.active@corp.example" and active eq true'})
    assert found.body["totalResults"] == 1


@pytest.mark.parametrize("attribute", ["emails", "phoneNumbers"])
def test_two_entries_of_one_type_are_refused_and_change_nothing(scim, directory, attribute):
    created = create(scim)
    before = directory.get_user(created["id"])
    second = [{"type": "work", "value": "second@corp.example" if attribute == "emails" else "+1 555 0199"}]
    if attribute == "phoneNumbers":
        first = [{"type": "work", "value": "+1 555 0100"}]
        added = scim.patch(f"/Users/{created['id']}", [{"op": "add", "path": attribute, "value": first}])
        assert added.status == 200
        before = directory.get_user(created["id"])
    response = scim.patch(f"/Users/{created['id']}", [{"op": "add", "path": attribute, "value": second}])
    assert response.status == 400 and response.body["scimType"] == "invalidValue"
    assert "at most one" in response.body["detail"]
    assert directory.get_user(created["id"]).version == before.version
    body = okta_user("twice@corp.example", externalId="x2")
    body["emails"] = [{"type": "work", "value": "a@corp.example"}, {"type": "WORK", "value": "b@x.example"}]
    assert scim.post("/Users", body).status == 400
