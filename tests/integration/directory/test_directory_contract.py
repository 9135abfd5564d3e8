"""The Directory contract: the rules of `redis_scim.directory.Directory`, run on every implementation."""

from __future__ import annotations

import pytest
from directory_subject import CAUSE, Subject

from redis_scim import errors
from redis_scim.directory import GroupChange, GroupRef, Member, UserRecord


def _versions(subject: Subject) -> dict[str, int]:
    """user id -> highest version published so far."""
    latest: dict[str, int] = {}
    for change in subject.feed.changes:
        latest[change.user_id] = max(change.version, latest.get(change.user_id, 0))
    return latest


# --- users -----------------------------------------------------------------------------------------


def test_create_and_get_user(subject: Subject) -> None:
    created = subject.directory.create_user(
        {"userName": "alice", "active": True, "name": {"givenName": "Alice"}},
        password_sha256="ab" * 32,
        cause=CAUSE,
    )
    assert created.version == 1 and created.created == created.last_modified
    fetched = subject.directory.get_user(created.id)
    assert fetched.resource == {"userName": "alice", "active": True, "name": {"givenName": "Alice"}}
    assert fetched.password_sha256 == "ab" * 32
    assert fetched.id == created.id and fetched.version == 1


def test_store_owned_attributes_are_not_kept(subject: Subject) -> None:
    user = subject.directory.create_user(
        {
            "userName": "bob",
            "id": "forged",
            "password": "secret",
            "groups": [{"value": "g"}],
            "schemas": ["x"],
        },
        password_sha256=None,
        cause=CAUSE,
    )
    assert user.id != "forged"
    assert subject.directory.get_user(user.id).resource == {"userName": "bob"}


def test_records_are_copies(subject: Subject) -> None:
    user = subject.user("carol", name={"givenName": "Carol"})
    user.resource["name"]["givenName"] = "Mallory"
    fetched = subject.directory.get_user(user.id)
    fetched.resource["userName"] = "mallory"
    assert subject.directory.get_user(user.id).resource == {
        "userName": "carol",
        "name": {"givenName": "Carol"},
    }
    page = subject.directory.search_users(lookup=None, predicate=None, start_index=1, count=10)
    page.records[0].resource["userName"] = "x"
    assert subject.directory.get_user(user.id).user_name == "carol"


def test_unknown_user_is_not_found(subject: Subject) -> None:
    with pytest.raises(errors.NotFound):
        subject.directory.get_user("00000000-0000-0000-0000-000000000000")
    with pytest.raises(errors.NotFound):
        subject.directory.delete_user("nope", expected_version=None, cause=CAUSE)
    with pytest.raises(errors.NotFound):
        subject.directory.replace_user(
            "nope",
            {"userName": "x"},
            expected_version=None,
            password_sha256=None,
            keep_password=True,
            cause=CAUSE,
        )


def test_user_name_is_required(subject: Subject) -> None:
    with pytest.raises(errors.InvalidValue):
        subject.directory.create_user({"displayName": "no name"}, password_sha256=None, cause=CAUSE)
    assert subject.directory.search_users(lookup=None, predicate=None, start_index=1, count=0).total == 0


def test_user_name_is_unique_case_insensitively(subject: Subject) -> None:
    subject.user("Alice@Example.com")
    with pytest.raises(errors.Uniqueness, match="userName"):
        subject.user("alice@example.COM")
    # NFC: "é" precomposed and decomposed are the same name
    subject.user("Ren\u00e9")
    with pytest.raises(errors.Uniqueness):
        subject.user("rene\u0301")
    assert subject.directory.search_users(lookup=None, predicate=None, start_index=1, count=0).total == 2


def test_external_id_is_unique_and_case_exact(subject: Subject) -> None:
    subject.user("a", externalId="ext-1")
    with pytest.raises(errors.Uniqueness, match="externalId"):
        subject.user("b", externalId="ext-1")
    subject.user("c", externalId="EXT-1")
    # groups have their own externalId space
    subject.group("g", externalId="ext-1")


def test_replace_user_moves_uniqueness(subject: Subject) -> None:
    user = subject.user("old", externalId="e1")
    other = subject.user("other")
    with pytest.raises(errors.Uniqueness):
        subject.directory.replace_user(
            other.id,
            {"userName": "OLD"},
            expected_version=None,
            password_sha256=None,
            keep_password=True,
            cause=CAUSE,
        )
    assert subject.directory.get_user(other.id).version == 1  # nothing changed
    subject.directory.replace_user(
        user.id,
        {"userName": "new", "externalId": "e2"},
        expected_version=1,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
    )
    subject.user("old", externalId="e1")  # both freed
    with pytest.raises(errors.Uniqueness):
        subject.user("NEW")
    # changing only the case of one's own userName is allowed
    renamed = subject.directory.replace_user(
        user.id,
        {"userName": "New", "externalId": "e2"},
        expected_version=None,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
    )
    assert renamed.user_name == "New" and renamed.version == 3


def test_replace_user_password_handling(subject: Subject) -> None:
    user = subject.directory.create_user({"userName": "p"}, password_sha256="11" * 32, cause=CAUSE)
    kept = subject.directory.replace_user(
        user.id,
        {"userName": "p", "active": False},
        expected_version=None,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
    )
    assert kept.password_sha256 == "11" * 32 and kept.active is False
    changed = subject.directory.replace_user(
        user.id,
        {"userName": "p"},
        expected_version=None,
        password_sha256="22" * 32,
        keep_password=False,
        cause=CAUSE,
    )
    assert changed.password_sha256 == "22" * 32
    cleared = subject.directory.replace_user(
        user.id,
        {"userName": "p"},
        expected_version=None,
        password_sha256=None,
        keep_password=False,
        cause=CAUSE,
    )
    assert cleared.password_sha256 is None
    assert subject.directory.get_user(user.id).password_sha256 is None


def test_versions_and_expected_version(subject: Subject) -> None:
    user = subject.user("v")
    updated = subject.directory.replace_user(
        user.id,
        {"userName": "v", "title": "x"},
        expected_version=1,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
    )
    assert updated.version == 2 and updated.last_modified >= user.last_modified
    assert updated.created == user.created
    with pytest.raises(errors.VersionConflict):
        subject.directory.replace_user(
            user.id,
            {"userName": "v", "title": "stale"},
            expected_version=1,
            password_sha256=None,
            keep_password=True,
            cause=CAUSE,
        )
    assert subject.directory.get_user(user.id).resource == {"userName": "v", "title": "x"}
    with pytest.raises(errors.VersionConflict):
        subject.directory.delete_user(user.id, expected_version=1, cause=CAUSE)
    subject.directory.delete_user(user.id, expected_version=2, cause=CAUSE)
    with pytest.raises(errors.NotFound):
        subject.directory.get_user(user.id)


def _rename(
    subject: Subject,
    user_id: str,
    user_name: str,
    *,
    expected_version: int | None,
    current: UserRecord | None = None,
) -> UserRecord:
    return subject.directory.replace_user(
        user_id,
        {"userName": user_name},
        expected_version=expected_version,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
        current=current,
    )


def test_replace_user_from_the_record_the_caller_read(subject: Subject) -> None:
    read = subject.user("ann", externalId="a-1")
    replaced = subject.directory.replace_user(
        read.id,
        {"userName": "anne", "externalId": "a-1"},
        expected_version=read.version,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
        current=read,
    )
    assert replaced.version == 2 and replaced.created == read.created
    assert subject.directory.get_user(read.id).resource == {"userName": "anne", "externalId": "a-1"}
    subject.user("ann")  # the old name is free, the new one is taken
    with pytest.raises(errors.Uniqueness):
        subject.user("ANNE")


def test_a_stale_record_never_overwrites_a_newer_version(subject: Subject) -> None:
    read = subject.user("ben")
    _rename(subject, read.id, "benjamin", expected_version=None)  # another writer, after our read
    with pytest.raises(errors.VersionConflict):
        _rename(subject, read.id, "benny", expected_version=read.version, current=read)
    assert subject.directory.get_user(read.id).user_name == "benjamin"


def test_a_stale_record_without_an_expected_version_is_read_again(subject: Subject) -> None:
    read = subject.user("cy")
    _rename(subject, read.id, "cyrus", expected_version=None)
    # Moving from the name the stale record holds would free a guard this user no longer owns,
    # and claiming the name another writer already gave it is no conflict with anyone.
    kept = _rename(subject, read.id, "cyrus", expected_version=None, current=read)
    assert kept.version == 3 and kept.user_name == "cyrus"
    renamed = _rename(subject, read.id, "cyril", expected_version=None, current=read)
    assert renamed.version == 4
    subject.user("cy")
    subject.user("cyrus")  # freed by the last rename, though the record passed named "cy"
    with pytest.raises(errors.Uniqueness):
        subject.user("Cyril")


def test_a_record_deleted_since_it_was_read_is_not_found(subject: Subject) -> None:
    read = subject.user("dee")
    subject.directory.delete_user(read.id, expected_version=None, cause=CAUSE)
    with pytest.raises(errors.NotFound):
        _rename(subject, read.id, "deedee", expected_version=None, current=read)


def test_delete_user_frees_names_and_leaves_a_tombstone(subject: Subject) -> None:
    user = subject.directory.create_user(
        {"userName": "gone", "externalId": "g-1"}, password_sha256="ab" * 32, cause=CAUSE
    )
    subject.directory.delete_user(user.id, expected_version=None, cause=CAUSE)
    state = subject.directory.user_state(user.id)
    assert state is not None and state.deleted and state.pending and state.version == 2
    assert state.record.password_sha256 is None
    assert state.record.user_name == "gone" and state.groups == []
    assert (
        subject.directory.search_users(
            lookup=("userName", "gone"), predicate=None, start_index=1, count=10
        ).total
        == 0
    )
    assert (
        subject.directory.search_users(lookup=("id", user.id), predicate=None, start_index=1, count=10).total
        == 0
    )
    again = subject.user("gone", externalId="g-1")
    assert again.id != user.id
    with pytest.raises(errors.NotFound):
        subject.directory.user_groups(user.id)
    assert subject.directory.clear_pending(user.id, version=1) is False
    assert subject.directory.clear_pending(user.id, version=2) is True
    assert subject.directory.user_state(user.id) is None
    assert subject.directory.clear_pending(user.id, version=2) is False


# --- search ----------------------------------------------------------------------------------------


def test_search_lookup(subject: Subject) -> None:
    alice = subject.user("Alice", externalId="a-ext")
    subject.user("bob")
    by_name = subject.directory.search_users(
        lookup=("userName", "ALICE"), predicate=None, start_index=1, count=10
    )
    assert by_name.total == 1 and by_name.records[0].id == alice.id
    by_ext = subject.directory.search_users(
        lookup=("externalId", "a-ext"), predicate=None, start_index=1, count=10
    )
    assert [r.id for r in by_ext.records] == [alice.id]
    assert (
        subject.directory.search_users(
            lookup=("externalId", "A-EXT"), predicate=None, start_index=1, count=10
        ).total
        == 0
    )
    by_id = subject.directory.search_users(lookup=("id", alice.id), predicate=None, start_index=1, count=10)
    assert [r.id for r in by_id.records] == [alice.id]
    assert (
        subject.directory.search_users(
            lookup=("id", "missing"), predicate=None, start_index=1, count=10
        ).total
        == 0
    )
    narrowed = subject.directory.search_users(
        lookup=("userName", "alice"),
        predicate=lambda r: r.resource.get("active") is False,
        start_index=1,
        count=10,
    )
    assert narrowed.total == 0 and narrowed.records == []
    counted = subject.directory.search_users(
        lookup=("userName", "alice"), predicate=None, start_index=1, count=0
    )
    assert counted.total == 1 and counted.records == []


def test_search_order_paging_and_predicate(subject: Subject) -> None:
    ids = [subject.user(f"u{n:02d}", title="even" if n % 2 == 0 else "odd").id for n in range(25)]
    every = subject.directory.search_users(lookup=None, predicate=None, start_index=1, count=100)
    assert every.total == 25
    order = [r.id for r in every.records]
    assert sorted(order) == sorted(ids)
    assert [r.created for r in every.records] == sorted(r.created for r in every.records)
    pages = [
        subject.directory.search_users(lookup=None, predicate=None, start_index=s, count=10)
        for s in (1, 11, 21)
    ]
    assert [r.id for p in pages for r in p.records] == order
    assert [p.total for p in pages] == [25, 25, 25] and len(pages[2].records) == 5
    assert (
        subject.directory.search_users(lookup=None, predicate=None, start_index=0, count=2).records[0].id
        == order[0]
    )
    beyond = subject.directory.search_users(lookup=None, predicate=None, start_index=40, count=10)
    assert beyond.total == 25 and beyond.records == []
    even = subject.directory.search_users(
        lookup=None, predicate=lambda r: r.resource["title"] == "even", start_index=3, count=4
    )
    assert even.total == 13
    expected_even = [i for i in order if subject.directory.get_user(i).resource["title"] == "even"]
    assert [r.id for r in even.records] == expected_even[2:6]
    assert subject.directory.search_users(lookup=None, predicate=None, start_index=1, count=0).records == []


def test_search_groups(subject: Subject) -> None:
    first = subject.group("Admins", externalId="adm")
    second = subject.group("Readers")
    listed = subject.directory.search_groups(lookup=None, predicate=None, start_index=1, count=10)
    assert [r.id for r in listed.records] == [first, second] or listed.records[0].created == listed.records[
        1
    ].created
    by_name = subject.directory.search_groups(
        lookup=("displayName", "admins"), predicate=None, start_index=1, count=10
    )
    assert [r.id for r in by_name.records] == [first]
    by_ext = subject.directory.search_groups(
        lookup=("externalId", "adm"), predicate=None, start_index=1, count=10
    )
    assert [r.id for r in by_ext.records] == [first]
    with pytest.raises(ValueError, match="userName"):
        subject.directory.search_groups(lookup=("userName", "x"), predicate=None, start_index=1, count=10)


# --- groups and memberships ------------------------------------------------------------------------


def test_group_display_name_is_unique_and_freed(subject: Subject) -> None:
    group_id = subject.group("Ops")
    with pytest.raises(errors.Uniqueness, match="displayName"):
        subject.group("OPS")
    subject.directory.change_group(
        group_id, GroupChange(resource={"displayName": "Platform"}), expected_version=None, cause=CAUSE
    )
    subject.group("ops")
    subject.directory.delete_group(group_id, expected_version=None, cause=CAUSE)
    subject.group("platform")
    with pytest.raises(errors.NotFound):
        subject.directory.get_group(group_id)


def test_create_group_with_members(subject: Subject) -> None:
    alice, bob = subject.user("alice"), subject.user("bob")
    group = subject.directory.create_group(
        {"displayName": "Team"},
        members=[Member(alice.id, "Alice"), Member(bob.id), Member(alice.id)],
        cause=CAUSE,
    )
    assert group.version == 1 and group.resource == {"displayName": "Team"}
    members = subject.directory.group_members(group.id)
    assert sorted(members, key=lambda m: m.value) == sorted(
        [Member(alice.id, "Alice"), Member(bob.id)], key=lambda m: m.value
    )
    assert subject.directory.user_groups(alice.id) == [GroupRef(group.id, "Team")]
    assert subject.directory.get_user(alice.id).version == 2


def test_unknown_member_changes_nothing(subject: Subject) -> None:
    alice = subject.user("alice")
    with pytest.raises(errors.InvalidValue, match="missing-user"):
        subject.directory.create_group(
            {"displayName": "Team"}, members=[Member(alice.id), Member("missing-user")], cause=CAUSE
        )
    assert subject.directory.search_groups(lookup=None, predicate=None, start_index=1, count=0).total == 0
    group_id = subject.group("Team")
    published = len(subject.feed.changes)
    with pytest.raises(errors.InvalidValue, match="missing-user"):
        subject.directory.change_group(
            group_id,
            GroupChange(add_members=[Member(alice.id), Member("missing-user")]),
            expected_version=None,
            cause=CAUSE,
        )
    with pytest.raises(errors.InvalidValue):
        subject.directory.change_group(
            group_id,
            GroupChange(replace_members=[Member("missing-user")]),
            expected_version=None,
            cause=CAUSE,
        )
    assert subject.directory.group_members(group_id) == []
    assert subject.directory.get_group(group_id).version == 1
    assert subject.directory.get_user(alice.id).version == 1
    assert subject.directory.user_groups(alice.id) == []
    assert len(subject.feed.changes) == published


def test_add_and_remove_members_are_idempotent(subject: Subject) -> None:
    alice, bob = subject.user("alice"), subject.user("bob")
    group_id = subject.group("Team")
    added = subject.directory.change_group(
        group_id, GroupChange(add_members=[Member(alice.id, "A")]), expected_version=1, cause=CAUSE
    )
    assert added.version == 2
    again = subject.directory.change_group(
        group_id, GroupChange(add_members=[Member(alice.id)]), expected_version=None, cause=CAUSE
    )
    assert again.version == 2  # nothing changed, nothing bumped
    assert subject.directory.group_members(group_id) == [Member(alice.id, "A")]
    assert subject.directory.get_user(alice.id).version == 2
    removed = subject.directory.change_group(
        group_id, GroupChange(remove_members=[bob.id, "never-existed"]), expected_version=None, cause=CAUSE
    )
    assert removed.version == 2 and subject.directory.get_user(bob.id).version == 1
    both = subject.directory.change_group(
        group_id,
        GroupChange(add_members=[Member(bob.id)], remove_members=[alice.id]),
        expected_version=None,
        cause=CAUSE,
    )
    assert both.version == 3
    assert subject.directory.group_members(group_id) == [Member(bob.id)]
    assert subject.directory.user_groups(alice.id) == []
    assert [ref.id for ref in subject.directory.user_groups(bob.id)] == [group_id]


def test_change_group_expected_version(subject: Subject) -> None:
    alice = subject.user("alice")
    group_id = subject.group("Team")
    with pytest.raises(errors.VersionConflict):  # even when the change would be a no-op
        subject.directory.change_group(
            group_id, GroupChange(remove_members=[alice.id]), expected_version=7, cause=CAUSE
        )
    with pytest.raises(errors.VersionConflict):
        subject.directory.change_group(
            group_id, GroupChange(add_members=[Member(alice.id)]), expected_version=7, cause=CAUSE
        )
    with pytest.raises(errors.VersionConflict):
        subject.directory.delete_group(group_id, expected_version=7, cause=CAUSE)
    assert subject.directory.group_members(group_id) == []
    with pytest.raises(errors.NotFound):
        subject.directory.change_group(
            "missing", GroupChange(add_members=[Member(alice.id)]), expected_version=None, cause=CAUSE
        )


def test_replace_members(subject: Subject) -> None:
    a, b, c = (subject.user(n).id for n in "abc")
    group_id = subject.group("Team", [a, b])
    before = _versions(subject)
    replaced = subject.directory.change_group(
        group_id, GroupChange(replace_members=[Member(b), Member(c)]), expected_version=None, cause=CAUSE
    )
    assert replaced.version == 2
    assert {m.value for m in subject.directory.group_members(group_id)} == {b, c}
    after = _versions(subject)
    assert after[a] > before[a] and after[c] > before[c] and after[b] == before[b]
    emptied = subject.directory.change_group(
        group_id, GroupChange(replace_members=[]), expected_version=2, cause=CAUSE
    )
    assert emptied.version == 3 and subject.directory.group_members(group_id) == []


def test_rename_and_attribute_change(subject: Subject) -> None:
    a, b = subject.user("a").id, subject.user("b").id
    group_id = subject.group("Team", [a, b], externalId="t")
    published = len(subject.feed.changes)
    same_name = subject.directory.change_group(
        group_id, GroupChange(resource={"displayName": "Team"}), expected_version=1, cause=CAUSE
    )
    assert same_name.version == 2 and same_name.resource == {"displayName": "Team"}
    assert len(subject.feed.changes) == published  # no member's rights can have changed
    subject.group("t-again", externalId="t")  # externalId dropped by the replace, so it is free
    renamed = subject.directory.change_group(
        group_id, GroupChange(resource={"displayName": "Crew"}), expected_version=None, cause=CAUSE
    )
    assert renamed.version == 3
    assert {c.user_id for c in subject.feed.changes[published:]} == {a, b}
    assert subject.directory.user_groups(a) == [GroupRef(group_id, "Crew")]
    state = subject.directory.user_state(b)
    assert state is not None and state.groups == [GroupRef(group_id, "Crew")]


def test_delete_user_removes_it_from_every_group(subject: Subject) -> None:
    alice, bob = subject.user("alice").id, subject.user("bob").id
    g1, g2 = subject.group("one", [alice, bob]), subject.group("two", [alice])
    versions = {g: subject.directory.get_group(g).version for g in (g1, g2)}
    subject.directory.delete_user(alice, expected_version=None, cause=CAUSE)
    assert subject.directory.group_members(g1) == [Member(bob)]
    assert subject.directory.group_members(g2) == []
    assert all(subject.directory.get_group(g).version > v for g, v in versions.items())


def test_delete_group_touches_every_member(subject: Subject) -> None:
    members = subject.users(5)
    group_id = subject.group("Team", members)
    published = len(subject.feed.changes)
    subject.directory.delete_group(group_id, expected_version=1, cause=CAUSE)
    assert sorted(c.user_id for c in subject.feed.changes[published:]) == sorted(members)
    assert all(subject.directory.user_groups(uid) == [] for uid in members)
    with pytest.raises(errors.NotFound):
        subject.directory.group_members(group_id)
    with pytest.raises(errors.NotFound):
        subject.directory.delete_group(group_id, expected_version=None, cause=CAUSE)


# --- change feed and convergence -------------------------------------------------------------------


def test_change_feed_one_message_per_affected_user(subject: Subject) -> None:
    alice = subject.user("alice")
    assert [(c.user_id, c.version) for c in subject.feed.changes] == [(alice.id, 1)]
    assert subject.feed.changes[0].cause == CAUSE
    subject.directory.replace_user(
        alice.id,
        {"userName": "alice", "active": False},
        expected_version=None,
        password_sha256=None,
        keep_password=True,
        cause=CAUSE,
    )
    assert subject.feed.changes[-1].version == 2
    members = subject.users(4, prefix="m")
    published = len(subject.feed.changes)
    group_id = subject.group("Team", members)
    group_changes = subject.feed.changes[published:]
    assert sorted(c.user_id for c in group_changes) == sorted(members)
    assert all(c.version == 2 for c in group_changes)
    subject.directory.change_group(
        group_id, GroupChange(remove_members=members[:2]), expected_version=None, cause=CAUSE
    )
    assert [c.version for c in subject.feed.changes[-2:]] == [3, 3]
    for change in subject.feed.changes:
        state = subject.directory.user_state(change.user_id)
        assert state is not None and state.version >= change.version


def test_pending_markers(subject: Subject) -> None:
    alice = subject.user("alice")
    pending = {p.user_id: p for p in subject.directory.pending_users()}
    assert pending[alice.id].version == 1
    group_id = subject.group("Team", [alice.id])
    assert subject.directory.clear_pending(alice.id, version=1) is False  # stale: version 2 is latest
    state = subject.directory.user_state(alice.id)
    assert state is not None and state.pending and state.version == 2
    assert state.groups == [GroupRef(group_id, "Team")] and not state.deleted
    assert subject.directory.clear_pending(alice.id, version=2) is True
    assert alice.id not in {p.user_id for p in subject.directory.pending_users()}
    state = subject.directory.user_state(alice.id)
    assert state is not None and not state.pending
    assert subject.directory.clear_pending(alice.id, version=2) is False


def test_pending_users_older_than(subject: Subject) -> None:
    alice = subject.user("alice")
    marked_at = next(p.pending_at for p in subject.directory.pending_users() if p.user_id == alice.id)
    assert list(subject.directory.pending_users(older_than=marked_at)) == []
    later = "9999-12-31T00:00:00.000Z"
    assert [p.user_id for p in subject.directory.pending_users(older_than=later)] == [alice.id]


def test_user_state_of_unknown_user(subject: Subject) -> None:
    assert subject.directory.user_state("never-existed") is None
    assert subject.directory.clear_pending("never-existed", version=1) is False
