"""SCIM filters (RFC 7644 §3.4.2.2) turned into Directory searches.

An `eq` on an indexed attribute (userName/externalId/id for Users, displayName/externalId/id for
Groups), alone or as a term of a top-level `and`, becomes a `Lookup` the store serves from an index;
whatever remains is evaluated with scim2-models' `ScimFilter.match` on each record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scim2_models import SCIMException, ScimFilter
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)

from redis_scim import errors
from redis_scim.directory import Lookup, Predicate
from redis_scim.scim.resources import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    POLICY,
    USER_SCHEMA,
    GroupModel,
    UserModel,
    group_model_of,
    library_error,
    user_model_of,
)

MAX_FILTER_LENGTH = 4096

_USER_INDEXED = {"username": "userName", "externalid": "externalId", "id": "id"}
_GROUP_INDEXED = {"displayname": "displayName", "externalid": "externalId", "id": "id"}


@dataclass(frozen=True)
class _Kind:
    model: Any
    schemas: tuple[str, ...]
    indexed: dict[str, str]
    to_model: Callable[[Any], Any]
    # Attributes the records do not carry (derived from the membership index): a filter on them
    # would silently match nothing, so it is refused.
    unfilterable: frozenset[str]


USERS = _Kind(
    UserModel, (USER_SCHEMA, ENTERPRISE_SCHEMA), _USER_INDEXED, user_model_of, frozenset({"groups"})
)
GROUPS = _Kind(GroupModel, (GROUP_SCHEMA,), _GROUP_INDEXED, group_model_of, frozenset({"members"}))


@dataclass(frozen=True)
class Search:
    lookup: Lookup | None
    predicate: Predicate | None


def compile_filter(text: str | None, kind: _Kind) -> Search:
    """Parse a filter for `kind` into an indexed lookup and/or a record predicate."""
    if text is None or not text.strip():
        return Search(None, None)
    if len(text) > MAX_FILTER_LENGTH:
        raise errors.InvalidFilter(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    try:
        bound = ScimFilter[kind.model](text)  # type: ignore[name-defined]
    except SCIMException as exc:
        raise errors.InvalidFilter(str(exc)) from None
    except ValueError as exc:
        raise errors.InvalidFilter(f"invalid filter: {exc}") from None
    _refuse_unfilterable(bound.ast, kind)

    lookup, rest = _split_lookup(bound.ast, kind)
    if rest is None:
        return Search(lookup, None)
    remaining = bound if rest is bound.ast else ScimFilter[kind.model](rest)  # type: ignore[name-defined]

    def predicate(record: Any) -> bool:
        try:
            with POLICY:
                return bool(remaining.match(kind.to_model(record)))
        except SCIMException as exc:
            raise library_error(exc) from None

    return Search(lookup, predicate)


def _split_lookup(node: FilterNode, kind: _Kind) -> tuple[Lookup | None, FilterNode | None]:
    """Take one indexed `eq` out of the filter: `(lookup, rest)`; `rest` None when nothing is left."""
    lookup = _as_lookup(node, kind)
    if lookup is not None:
        return lookup, None
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_:
        for position, term in enumerate(node.terms):
            lookup = _as_lookup(term, kind)
            if lookup is None:
                continue
            others = node.terms[:position] + node.terms[position + 1 :]
            rest = others[0] if len(others) == 1 else LogicalExpr(op=LogicalOperator.and_, terms=others)
            return lookup, rest
    return None, node


def _as_lookup(node: FilterNode, kind: _Kind) -> Lookup | None:
    if not (isinstance(node, Comparison) and node.op == CompareOperator.eq and isinstance(node.value, str)):
        return None
    path = node.attr_path
    if path.sub_attr is not None or (path.uri is not None and path.uri not in kind.schemas[:1]):
        return None
    attribute = kind.indexed.get(path.attr.lower())
    return (attribute, node.value) if attribute else None


def _refuse_unfilterable(node: FilterNode, kind: _Kind) -> None:
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            _refuse_unfilterable(term, kind)
    elif isinstance(node, Not):
        _refuse_unfilterable(node.expr, kind)
    elif isinstance(node, Comparison | Present | ValuePath):
        path: AttrPath = node.attr_path
        if path.attr.lower() in kind.unfilterable:
            raise errors.InvalidFilter(f"filtering on '{path.attr}' is not supported")
