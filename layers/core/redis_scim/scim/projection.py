"""`attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) applied to a response resource.

Names are case-insensitive and may be dotted (`name.givenName`) or URN-qualified
(`urn:...:enterprise:2.0:User:employeeNumber`, or a bare schema URN for the whole extension).
`id` and `schemas` are returned always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis_scim.scim.resources import ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA

_ALWAYS = frozenset({"id", "schemas"})
_CORE_PREFIXES = (USER_SCHEMA.lower() + ":", GROUP_SCHEMA.lower() + ":")
_EXTENSION = ENTERPRISE_SCHEMA.lower()


@dataclass(frozen=True)
class Projection:
    """What a response should contain, parsed once per request."""

    attributes: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def from_query(cls, query: dict[str, str]) -> Projection:
        return cls(
            attributes=_parse(_param(query, "attributes")),
            excluded=_parse(_param(query, "excludedAttributes")),
        )

    @property
    def requested(self) -> bool:
        """Whether the client named attributes to return or to leave out."""
        return bool(self.attributes or self.excluded)

    def wants(self, attribute: str, *, by_default: bool = True) -> bool:
        """Whether the top-level `attribute` belongs in the response.

        `by_default` False is for attributes returned only when asked for by name (User `groups`
        in list responses).
        """
        name = attribute.lower()
        if self.attributes:
            return any(path[0] == name for path in self.attributes)
        if any(path == (name,) for path in self.excluded):
            return False
        return by_default

    def apply(self, resource: dict[str, Any]) -> dict[str, Any]:
        if self.attributes:
            return _include(resource, self.attributes)
        if self.excluded:
            return _exclude(resource, self.excluded)
        return resource


def _param(query: dict[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in query.items() if key.lower() == lowered), None)


def _parse(value: str | None) -> tuple[tuple[str, ...], ...]:
    if not value:
        return ()
    paths = []
    for raw in value.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name.startswith(_EXTENSION):
            rest = name[len(_EXTENSION) :].lstrip(":")
            paths.append((_EXTENSION, *rest.split(".")) if rest else (_EXTENSION,))
            continue
        for prefix in _CORE_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        paths.append(tuple(name.split(".")))
    return tuple(paths)


def _include(resource: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in resource.items():
        name = key.lower()
        if name in _ALWAYS:
            result[key] = value
            continue
        wanted = [path[1:] for path in paths if path[0] == name]
        if not wanted:
            continue
        if any(not rest for rest in wanted) or not isinstance(value, dict | list):
            result[key] = value
        else:
            projected = _project_value(value, tuple(wanted), _include)
            if projected:
                result[key] = projected
    return result


def _exclude(resource: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in resource.items():
        name = key.lower()
        excluded = [path[1:] for path in paths if path[0] == name]
        if name in _ALWAYS or not excluded:
            result[key] = value
        elif all(rest for rest in excluded) and isinstance(value, dict | list):
            projected = _project_value(value, tuple(excluded), _exclude)
            if projected:
                result[key] = projected
    return result


def _project_value(value: Any, paths: tuple[tuple[str, ...], ...], project: Any) -> Any:
    if isinstance(value, list):
        items = [project(item, paths) if isinstance(item, dict) else item for item in value]
        return [item for item in items if item]
    return project(value, paths)
