"""The SCIM 2.0 request handler: routes a `ScimRequest` to the Directory and shapes the `ScimResponse`.

Authentication happens before `handle` (in the Lambda adapter). Every failure, expected or not,
leaves here as an RFC 7644 §3.12 Error body built in one place, `error_response`; an unexpected
exception becomes a 500 that leaks nothing of its internals.

Choices a client can observe (advertised in /ServiceProviderConfig where the RFC has a field):
- Users: PATCH and PUT answer 200 with the user; single-user responses carry the derived `groups`,
  list responses only when `attributes` names it.
- Groups: PATCH answers 204 with the new ETag unless the client asks for a representation
  (`attributes`/`excludedAttributes`), because the entire resource would include every member.
- Limits: `count` is capped at `filter.maxResults`; filters at 4 KiB; 1,000 operations per PATCH;
  10,000 members per request; bodies at `max_body_bytes` (413).
- Not supported, said so: bulk (SPC, and 501 on /Bulk), sorting (SPC; `sortBy` is ignored),
  POST /.search and /Me (501).
- Concurrency: writes are conditional on the version read. With If-Match a lost race is a 412;
  without, the request is re-applied to the fresh state up to `MAX_CONFLICT_RETRIES` times, then 503.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from scim2_models import Context

from redis_scim import errors
from redis_scim.directory import Cause, Directory, GroupChange, GroupRecord, Member, Page, UserRecord
from redis_scim.scim import discovery
from redis_scim.scim.filters import GROUPS, USERS, compile_filter
from redis_scim.scim.http import (
    SCIM_CONTENT_TYPE,
    ScimRequest,
    ScimResponse,
    etag_of,
    parse_etags,
    version_matches,
)
from redis_scim.scim.patch import patch_group_attributes, patch_user, plan_group_patch
from redis_scim.scim.projection import Projection
from redis_scim.scim.resources import (
    ERROR_SCHEMA,
    LIST_RESPONSE_SCHEMA,
    group_from_body,
    group_json,
    group_location,
    group_model_of,
    group_resource,
    sha256_password,
    user_from_body,
    user_json,
    user_location,
    user_model_of,
    user_resource,
)

logger = logging.getLogger(__name__)

# Without If-Match, a read-modify-write that loses a race is re-read and re-applied this many
# times before the client is told to retry later (503).
MAX_CONFLICT_RETRIES = 5
DEFAULT_PAGE_SIZE = 100

_T = TypeVar("_T")
_Route = Callable[[ScimRequest, list[str]], ScimResponse]
_DISCOVERY = {"serviceproviderconfig", "resourcetypes", "schemas"}
_ACCEPTED_MEDIA_TYPES = ("application/scim+json", "application/json")


class ScimHandler:
    """Answers SCIM requests from a `Directory`.

    `max_body_bytes` bounds request bodies (413 beyond); `max_results` caps `count` and is
    advertised as `filter.maxResults`.
    """

    def __init__(
        self,
        directory: Directory,
        *,
        max_body_bytes: int = 1_048_576,
        max_results: int = discovery.MAX_RESULTS,
    ) -> None:
        self.directory = directory
        self.max_body_bytes = max_body_bytes
        self.max_results = max_results

    # --- entry points ----------------------------------------------------------------------------

    def handle(self, request: ScimRequest) -> ScimResponse:
        try:
            response = self._route(request)
        except errors.RedisScimError as exc:
            return self.error_response(exc)
        except Exception:
            logger.exception("unexpected error answering %s %s", request.method, request.path)
            return self.error_response(errors.RedisScimError("internal error"))
        # Every response carries the SCIM media type, bodiless 204/304 included (Entra requires it
        # on every response; clients that branch on it should never see none).
        response.headers.setdefault("Content-Type", SCIM_CONTENT_TYPE)
        return response

    def error_response(self, exc: errors.RedisScimError) -> ScimResponse:
        """The one place an error becomes a SCIM Error response (RFC 7644 §3.12)."""
        status = exc.status
        # Only errors raised on purpose for the client carry their detail; a server-side failure
        # says nothing of its internals.
        client_facing = status < 500 or isinstance(
            exc, errors.ServiceUnavailable | errors.NotImplementedFeature
        )
        detail = exc.detail if client_facing else "internal error"
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
        if exc.scim_type and status < 500:
            body["scimType"] = exc.scim_type
        return ScimResponse(status=status, body=body, headers={"Content-Type": SCIM_CONTENT_TYPE})

    # --- routing -------------------------------------------------------------------------------

    def _route(self, request: ScimRequest) -> ScimResponse:
        segments = [segment for segment in request.path.split("/") if segment]
        method = request.method.upper()
        if not segments:
            raise errors.NotFound("no resource at the SCIM root; see /ServiceProviderConfig")
        endpoint = segments[0].lower()
        rest = segments[1:]
        if endpoint in _DISCOVERY:
            if method != "GET":
                raise errors.MethodNotAllowed(f"{method} is not allowed on /{segments[0]}")
            return self._discovery(request, endpoint, rest)
        if endpoint == "bulk":
            raise errors.NotImplementedFeature(
                "bulk operations are not supported (see /ServiceProviderConfig)"
            )
        if endpoint == "me":
            raise errors.NotImplementedFeature("/Me is not supported")
        if endpoint == ".search" or rest[-1:] == [".search"]:
            raise errors.NotImplementedFeature("POST .search is not supported; use GET with a filter")
        routes: dict[tuple[str, bool], _Route] = (
            {
                ("GET", False): self._list_users,
                ("POST", False): self._create_user,
                ("GET", True): self._get_user,
                ("PUT", True): self._replace_user,
                ("PATCH", True): self._patch_user,
                ("DELETE", True): self._delete_user,
            }
            if endpoint == "users"
            else {
                ("GET", False): self._list_groups,
                ("POST", False): self._create_group,
                ("GET", True): self._get_group,
                ("PUT", True): self._replace_group,
                ("PATCH", True): self._patch_group,
                ("DELETE", True): self._delete_group,
            }
            if endpoint == "groups"
            else {}
        )
        if not routes or len(rest) > 1:
            raise errors.NotFound(f"unknown endpoint {request.path}")
        route = routes.get((method, bool(rest)))
        if route is None:
            raise errors.MethodNotAllowed(f"{method} is not allowed on {request.path}")
        return route(request, rest)

    # --- users ---------------------------------------------------------------------------------

    def _list_users(self, request: ScimRequest, _: list[str]) -> ScimResponse:
        projection = Projection.from_query(request.query)
        search = compile_filter(_query(request, "filter"), USERS)
        start_index, count = self._paging(request)
        page = self.directory.search_users(
            lookup=search.lookup, predicate=search.predicate, start_index=start_index, count=count
        )
        with_groups = projection.wants("groups", by_default=False)
        resources = [
            projection.apply(
                user_json(
                    record, request.base_url, self.directory.user_groups(record.id) if with_groups else None
                )
            )
            for record in page.records
        ]
        return _list_response(page, start_index, resources)

    def _get_user(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        record = self.directory.get_user(rest[0])
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and version_matches(if_none_match, record.version):
            return ScimResponse(status=304, body=None, headers={"ETag": etag_of(record.version)})
        return self._user_response(request, record, 200)

    def _create_user(self, request: ScimRequest, _: list[str]) -> ScimResponse:
        resource, password = user_from_body(
            self._json_body(request), resource_id=None, context=Context.RESOURCE_CREATION_REQUEST
        )
        record = self.directory.create_user(
            resource,
            password_sha256=sha256_password(password) if password is not None else None,
            cause=_cause(request, "POST /Users"),
        )
        response = self._user_response(request, record, 201, groups=[])
        response.headers["Location"] = user_location(request.base_url, record.id)
        return response

    def _replace_user(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        user_id = rest[0]
        resource, password = user_from_body(
            self._json_body(request), resource_id=user_id, context=Context.RESOURCE_REPLACEMENT_REQUEST
        )
        cause = _cause(request, "PUT /Users/{id}")

        def replace(current: UserRecord) -> UserRecord:
            return self.directory.replace_user(
                user_id,
                resource,
                expected_version=current.version,
                password_sha256=sha256_password(password) if password is not None else None,
                keep_password=password is None,
                cause=cause,
                current=current,
            )

        record = self._read_modify_write(request, lambda: self.directory.get_user(user_id), replace)
        return self._user_response(request, record, 200)

    def _patch_user(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        user_id = rest[0]
        body = self._json_body(request)
        cause = _cause(request, "PATCH /Users/{id}")

        def patch(current: UserRecord) -> UserRecord:
            model = user_model_of(current)
            result = patch_user(model, body)
            if not result.changed:
                return current
            return self.directory.replace_user(
                user_id,
                user_resource(model),
                expected_version=current.version,
                password_sha256=sha256_password(result.password) if result.password is not None else None,
                keep_password=not result.password_changed,
                cause=cause,
                current=current,
            )

        record = self._read_modify_write(request, lambda: self.directory.get_user(user_id), patch)
        return self._user_response(request, record, 200)

    def _delete_user(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        user_id = rest[0]
        expected = self._pinned_version(request, lambda: self.directory.get_user(user_id))
        self._conflict_as_412(
            lambda: self.directory.delete_user(
                user_id, expected_version=expected, cause=_cause(request, "DELETE /Users/{id}")
            )
        )
        return ScimResponse(status=204, body=None, headers={})

    def _user_response(
        self, request: ScimRequest, record: UserRecord, status: int, groups: list[Any] | None = None
    ) -> ScimResponse:
        projection = Projection.from_query(request.query)
        if groups is None and projection.wants("groups"):
            groups = self.directory.user_groups(record.id)
        body = projection.apply(user_json(record, request.base_url, groups))
        return _resource_response(status, body, record.version)

    # --- groups --------------------------------------------------------------------------------

    def _list_groups(self, request: ScimRequest, _: list[str]) -> ScimResponse:
        projection = Projection.from_query(request.query)
        search = compile_filter(_query(request, "filter"), GROUPS)
        start_index, count = self._paging(request)
        page = self.directory.search_groups(
            lookup=search.lookup, predicate=search.predicate, start_index=start_index, count=count
        )
        with_members = projection.wants("members")
        resources = [
            projection.apply(
                group_json(
                    record,
                    request.base_url,
                    self.directory.group_members(record.id) if with_members else None,
                )
            )
            for record in page.records
        ]
        return _list_response(page, start_index, resources)

    def _get_group(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        record = self.directory.get_group(rest[0])
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and version_matches(if_none_match, record.version):
            return ScimResponse(status=304, body=None, headers={"ETag": etag_of(record.version)})
        projection = Projection.from_query(request.query)
        members = self.directory.group_members(record.id) if projection.wants("members") else None
        return _resource_response(
            200, projection.apply(group_json(record, request.base_url, members)), record.version
        )

    def _create_group(self, request: ScimRequest, _: list[str]) -> ScimResponse:
        resource, members = group_from_body(
            self._json_body(request), resource_id=None, context=Context.RESOURCE_CREATION_REQUEST
        )
        record = self.directory.create_group(resource, members=members, cause=_cause(request, "POST /Groups"))
        response = self._group_response(request, record, 201, members)
        response.headers["Location"] = group_location(request.base_url, record.id)
        return response

    def _replace_group(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        group_id = rest[0]
        resource, members = group_from_body(
            self._json_body(request), resource_id=group_id, context=Context.RESOURCE_REPLACEMENT_REQUEST
        )
        cause = _cause(request, "PUT /Groups/{id}")

        def replace(current: GroupRecord) -> GroupRecord:
            change = GroupChange(resource=resource, replace_members=members)
            return self.directory.change_group(
                group_id, change, expected_version=current.version, cause=cause
            )

        record = self._read_modify_write(request, lambda: self.directory.get_group(group_id), replace)
        return self._group_response(request, record, 200, members)

    def _patch_group(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        """Membership deltas never read the group's members.

        RFC 7644 §3.5.2 allows 200 with the entire resource or 204. The entire resource includes
        `members`, which for a 50,000-member group is a full read and a response too large to
        send, and Microsoft advises 204 for group PATCH. So: 204 (with the new ETag) unless the
        client asks for a representation with `attributes`/`excludedAttributes`; then 200 with
        the group, reading members only if that representation includes them
        (`excludedAttributes=members` never reads them)."""
        group_id = rest[0]
        plan = plan_group_patch(self._json_body(request), group_id)
        cause = _cause(request, "PATCH /Groups/{id}")
        if plan.attribute_operations:

            def patch(current: GroupRecord) -> GroupRecord:
                model = group_model_of(current)
                changed = patch_group_attributes(model, plan.attribute_operations)
                resource = group_resource(model) if changed else None
                if resource is None and not plan.changes_members:
                    return current
                # Okta re-sends the unchanged name with every membership change: when the
                # attributes did not change, the deltas need no version check (they commute).
                pinned = resource is not None or request.headers.get("if-match")
                expected = current.version if pinned else None
                return self.directory.change_group(
                    group_id, plan.member_change(resource), expected_version=expected, cause=cause
                )

            record = self._read_modify_write(request, lambda: self.directory.get_group(group_id), patch)
        elif plan.changes_members:
            # Deltas commute, so without If-Match they need no version check and no prior read.
            expected = self._pinned_version(request, lambda: self.directory.get_group(group_id))
            record = self._conflict_as_412(
                lambda: self.directory.change_group(
                    group_id, plan.member_change(None), expected_version=expected, cause=cause
                ),
            )
        else:
            record = self.directory.get_group(group_id)
            self._check_if_match(request, record.version)
        projection = Projection.from_query(request.query)
        if not projection.requested:
            return ScimResponse(status=204, body=None, headers={"ETag": etag_of(record.version)})
        members = self.directory.group_members(group_id) if projection.wants("members") else None
        return _resource_response(
            200, projection.apply(group_json(record, request.base_url, members)), record.version
        )

    def _delete_group(self, request: ScimRequest, rest: list[str]) -> ScimResponse:
        group_id = rest[0]
        expected = self._pinned_version(request, lambda: self.directory.get_group(group_id))
        self._conflict_as_412(
            lambda: self.directory.delete_group(
                group_id, expected_version=expected, cause=_cause(request, "DELETE /Groups/{id}")
            ),
        )
        return ScimResponse(status=204, body=None, headers={})

    def _group_response(
        self, request: ScimRequest, record: GroupRecord, status: int, members: list[Member]
    ) -> ScimResponse:
        projection = Projection.from_query(request.query)
        body = projection.apply(
            group_json(record, request.base_url, members if projection.wants("members") else None)
        )
        return _resource_response(status, body, record.version)

    # --- discovery -----------------------------------------------------------------------------

    def _discovery(self, request: ScimRequest, endpoint: str, rest: list[str]) -> ScimResponse:
        base_url = request.base_url
        if endpoint == "serviceproviderconfig":
            if rest:
                raise errors.NotFound(f"unknown endpoint {request.path}")
            config = discovery.service_provider_config(base_url)
            config["filter"]["maxResults"] = self.max_results
            return ScimResponse(status=200, body=config, headers={"Content-Type": SCIM_CONTENT_TYPE})
        items = (
            discovery.resource_types(base_url) if endpoint == "resourcetypes" else discovery.schemas(base_url)
        )
        if not rest:
            body = {
                "schemas": [LIST_RESPONSE_SCHEMA],
                "totalResults": len(items),
                "startIndex": 1,
                "itemsPerPage": len(items),
                "Resources": items,
            }
            return ScimResponse(status=200, body=body, headers={"Content-Type": SCIM_CONTENT_TYPE})
        if len(rest) == 1:
            for item in items:
                if item["id"] == rest[0]:
                    return ScimResponse(status=200, body=item, headers={"Content-Type": SCIM_CONTENT_TYPE})
        raise errors.NotFound(f"unknown {endpoint} {'/'.join(rest)}")

    # --- shared --------------------------------------------------------------------------------

    def _json_body(self, request: ScimRequest) -> Any:
        body = request.body or b""
        if len(body) > self.max_body_bytes:
            raise errors.PayloadTooLarge(f"the request body is larger than {self.max_body_bytes} bytes")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and content_type not in _ACCEPTED_MEDIA_TYPES:
            raise errors.UnsupportedMediaType("send application/scim+json (or application/json)")
        if not body.strip():
            raise errors.InvalidSyntax("the request needs a JSON body")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise errors.InvalidSyntax("the request body is not valid JSON") from None

    def _paging(self, request: ScimRequest) -> tuple[int, int]:
        start_index = _int_param(request, "startIndex", 1)
        count = _int_param(request, "count", DEFAULT_PAGE_SIZE)
        # RFC 7644 §3.4.2.4: a startIndex below 1 is read as 1, a negative count as 0.
        return max(start_index, 1), min(max(count, 0), self.max_results)

    def _check_if_match(self, request: ScimRequest, version: int) -> None:
        header = request.headers.get("if-match")
        if header and not version_matches(header, version):
            raise errors.PreconditionFailed(f"If-Match does not match the current version {etag_of(version)}")

    def _pinned_version(self, request: ScimRequest, read: Callable[[], Any]) -> int | None:
        """The version a write must be conditional on: with If-Match, the current version once
        the header is checked to name it (412 otherwise); without If-Match, or with `*`, none."""
        header = request.headers.get("if-match")
        if not header or parse_etags(header) is None:
            return None
        current = read()
        self._check_if_match(request, current.version)
        return int(current.version)

    def _conflict_as_412(self, write: Callable[[], _T]) -> _T:
        try:
            return write()
        except errors.VersionConflict:
            raise errors.PreconditionFailed("the resource changed; If-Match no longer matches") from None

    def _read_modify_write(
        self, request: ScimRequest, read: Callable[[], Any], write: Callable[[Any], _T]
    ) -> _T:
        """Read, check If-Match, apply, write conditionally on the version read.

        With If-Match a lost race is the client's 412; without, the operation is re-read and
        re-applied a few times (the write is a pure function of the current state) before a 503.
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            current = read()
            self._check_if_match(request, current.version)
            try:
                return write(current)
            except errors.VersionConflict:
                if request.headers.get("if-match"):
                    raise errors.PreconditionFailed(
                        "the resource changed; If-Match no longer matches"
                    ) from None
        raise errors.ServiceUnavailable("the resource is being changed concurrently; retry later")


def _query(request: ScimRequest, name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in request.query.items() if key.lower() == lowered), None)


def _int_param(request: ScimRequest, name: str, default: int) -> int:
    raw = _query(request, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.InvalidValue(f"{name} must be an integer") from None


def _cause(request: ScimRequest, operation: str) -> Cause:
    return Cause(request_id=request.request_id, operation=operation, actor=request.actor)


def _resource_response(status: int, body: dict[str, Any], version: int) -> ScimResponse:
    return ScimResponse(
        status=status, body=body, headers={"Content-Type": SCIM_CONTENT_TYPE, "ETag": etag_of(version)}
    )


def _list_response(page: Page, start_index: int, resources: list[dict[str, Any]]) -> ScimResponse:
    body = {
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": page.total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
    return ScimResponse(status=200, body=body, headers={"Content-Type": SCIM_CONTENT_TYPE})
