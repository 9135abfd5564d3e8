"""The framework-free request and response of the SCIM handler, and the HTTP details they share.

The Lambda adapter (and the local stack through it) turns API Gateway events into `ScimRequest`
and `ScimResponse` back into proxy results; nothing here knows about either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis_scim.directory import Actor

SCIM_CONTENT_TYPE = "application/scim+json"


@dataclass
class ScimRequest:
    method: str  # "GET", "POST", ...
    path: str  # relative to the SCIM root, e.g. "/Users/abc"
    query: dict[str, str]  # single-valued; unknown parameters (aadOptscim062020, ...) are ignored
    headers: dict[str, str]  # keys lower-cased
    body: bytes | None
    base_url: str  # absolute URL of the SCIM root as the client used it
    request_id: str
    actor: Actor = field(default_factory=Actor)


@dataclass
class ScimResponse:
    status: int
    body: dict[str, Any] | None  # None for 204 and 304
    headers: dict[str, str] = field(default_factory=dict)


def etag_of(version: int) -> str:
    """The weak entity tag of a resource version, as sent in `ETag` and `meta.version`."""
    return f'W/"{version}"'


def parse_etags(header: str) -> list[str] | None:
    """The entity tags an If-Match/If-None-Match header names; None means `*` (any version)."""
    if header.strip() == "*":
        return None
    tags = []
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.append(tag.strip('"'))
    return [tag for tag in tags if tag]


def version_matches(header: str, version: int) -> bool:
    tags = parse_etags(header)
    return tags is None or str(version) in tags
