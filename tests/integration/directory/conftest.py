"""Directory fixtures: every contract test runs against each implementation of the port.

`MemoryDirectory` runs in process; `DynamoDirectory` runs on moto's in-process DynamoDB with the
table created from template.yaml, so its keys and indexes are the deployed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from directory_subject import Subject

from redis_scim.directory.memory import ListFeed, MemoryDirectory


def _memory() -> Iterator[Subject]:
    feed = ListFeed()
    yield Subject(MemoryDirectory(feed), feed)


IMPLEMENTATIONS: dict[str, Callable[[], Iterator[Subject]]] = {"memory": _memory}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    yield from IMPLEMENTATIONS[request.param]()
