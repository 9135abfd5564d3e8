"""The self-managed Redis/Valkey target: ACL users applied to every node, sessions cut, persisted.

ACL changes are not replicated (REDIS_ACL_FACTS §1.5), so every SETUSER, DELUSER and CLIENT KILL
goes to every node: the seed server, the extra `nodes` (e.g. replicas) and, for a Redis Cluster,
every primary and replica `CLUSTER SHARDS` reports. One client per node, reused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_scim.errors import InvalidUsername
from redis_scim.policy import RedisTargetConfig
from redis_scim.targets import NodeAcl, Permissions, TargetUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

READ_CHUNK = 500  # at most this many GETUSERs per pipeline round trip (bounded memory)
WRITE_CHUNK = 500  # at most this many SETUSER/DELUSERs per pipeline round trip of a batch
# A pipeline of many ACL commands holds the node (every other client waits) while it runs: Redis
# 7.0 spends about 1 ms on one ACL GETUSER of a user whose rules use -@dangerous. So pipelines are
# sized from the measured cost per command to hold a node about this long; the first is small.
MAX_ROUND_TRIP = 0.020  # seconds
FIRST_CHUNK = 16
DISCOVERY_TTL = 60.0  # seconds before the node list is re-read (cluster topology can change)
DEFAULT_PORT = 6379
MAX_PARALLEL_NODES = 16
# ACL SAVE and CONFIG REWRITE render every user while the server waits: measured here at 100,000
# users with two selectors each, ACL SAVE blocked Valkey 9.1 for ≈8 s and Redis 7.0 for longer.
# They get their own (long) timeout and never retry, and an expensive save is spaced out so that
# saving takes at most 1/SAVE_SPACING of a node's time; cheap saves (small targets) always run.
PERSIST_TIMEOUT = 60.0
CHEAP_SAVE = 0.05  # seconds
SAVE_SPACING = 50

_STATE_FLAGS = frozenset({"on", "off", "nopass"})
_CREDENTIAL_RULE = re.compile(r"'[#><!][^']*'")
_ROOT_FIELDS = ("commands", "keys", "channels")
_NOT_CONFIGURED_FOR_ACLFILE = "not configured to use an acl file"


@dataclass(frozen=True)
class _Endpoint:
    """How to reach one node. The password is kept out of repr so it never reaches a log."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"_Endpoint({self.address}, tls={self.tls}, username={self.username!r})"


def _parse_endpoint(url: str, inherit: _Endpoint | None = None) -> _Endpoint:
    """`redis://[user[:password]@]host[:port]`, `rediss://…` (TLS) or a bare `host:port` for
    extra nodes, which then inherit the scheme and credentials of the target's URL."""
    if "://" not in url:
        if inherit is None:
            raise ValueError("a target URL needs a redis:// or rediss:// scheme")
        url = f"{'rediss' if inherit.tls else 'redis'}://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("a target URL must be redis://host[:port] or rediss://host[:port]")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if inherit is not None and username is None and password is None:
        username, password = inherit.username, inherit.password
    return _Endpoint(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORT,
        tls=parts.scheme == "rediss",
        username=username or None,
        password=password,
    )


def _as_map(reply: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat key/value list as a dict."""
    if isinstance(reply, dict):
        return {str(key): value for key, value in reply.items()}
    return {str(reply[index]): reply[index + 1] for index in range(0, len(reply), 2)}


def _rule_text(value: Any) -> str:
    # Redis 6.2 rendered keys/channels as lists of patterns; 7.0+ as one rule string.
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value)
    return "" if value is None else str(value)


def _permissions(reply: dict[str, Any]) -> Permissions:
    extra = tuple(sorted((key, _rule_text(value)) for key, value in reply.items() if key not in _ROOT_FIELDS))
    return Permissions(
        commands=_rule_text(reply.get("commands")),
        keys=_rule_text(reply.get("keys")),
        channels=_rule_text(reply.get("channels")),
        extra=extra,
    )


def node_acl_from_getuser(reply: Any, shared: dict[Any, Any] | None = None) -> NodeAcl | None:
    """The `NodeAcl` of an `ACL GETUSER` reply (`None` for an absent user).

    `shared` interns equal parts across many replies: users holding the same roles then share one
    copy of their (on Redis 7.0 often kilobyte-long) rule strings, which bounds a large read's memory.
    """
    if reply is None:
        return None
    if shared is None:
        return _parse_getuser(reply, {})
    # Users holding the same roles differ only in their password hashes: parse each shape once.
    fields = _as_map(reply)
    hashes = frozenset(str(hashed) for hashed in fields.pop("passwords", []))
    shape = ("GETUSER", repr(fields))  # the reply is strings, lists and maps: its repr is its identity
    parsed = shared.get(shape)
    if parsed is None:
        parsed = shared[shape] = _parse_getuser(fields, shared)
    return NodeAcl(
        enabled=parsed.enabled,
        password_hashes=hashes,
        nopass=parsed.nopass,
        root=parsed.root,
        selectors=parsed.selectors,
        flags=parsed.flags,
    )


def _parse_getuser(reply: Any, intern: dict[Any, Any]) -> NodeAcl:
    fields = _as_map(reply)
    flags = {str(flag) for flag in fields.pop("flags", [])}
    hashes = frozenset(str(hashed) for hashed in fields.pop("passwords", []))
    selectors = frozenset(
        intern.setdefault(part, part)
        for part in (_permissions(_as_map(selector)) for selector in fields.pop("selectors", []))
    )
    root = _permissions(fields)
    other_flags = frozenset(flags - _STATE_FLAGS)
    return NodeAcl(
        enabled="on" in flags,
        password_hashes=hashes,
        nopass="nopass" in flags,
        root=intern.setdefault(root, root),
        selectors=intern.setdefault(selectors, selectors),
        flags=intern.setdefault(other_flags, other_flags),
    )


@dataclass
class _Credentials:
    """The credential and state part of a rule list, evaluated as the server would."""

    enabled: bool = False
    nopass: bool = False
    hashes: frozenset[str] = frozenset()


def _split_rules(rules: Sequence[str]) -> tuple[_Credentials, tuple[str, ...]]:
    """Separate credential/state rules (evaluated here, in order) from permission rules (left to
    the server). A `reset` anywhere discards what came before it, as on the server."""
    state = _Credentials()
    hashes: set[str] = set()
    permissions: list[str] = []
    for rule in rules:
        lowered = rule.lower()
        if lowered == "reset":
            state, permissions = _Credentials(), []
            hashes.clear()
        elif lowered in ("on", "off"):
            state.enabled = lowered == "on"
        elif lowered == "nopass":
            hashes.clear()
            state.nopass = True
        elif lowered == "resetpass":
            hashes.clear()
            state.nopass = False
        elif rule.startswith((">", "#")):
            hashes.add(hashlib.sha256(rule[1:].encode()).hexdigest() if rule[0] == ">" else rule[1:])
            state.nopass = False
        elif rule.startswith(("<", "!")):
            hashes.discard(hashlib.sha256(rule[1:].encode()).hexdigest() if rule[0] == "<" else rule[1:])
        else:
            permissions.append(rule)
    state.hashes = frozenset(hashes)
    return state, tuple(permissions)


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class _Failed:
    reason: str


def _attempt(operation: Callable[[str, redis.Redis], T], address: str, client: redis.Redis) -> T | _Failed:
    """The operation's result, or why it failed on this node."""
    try:
        return operation(address, client)
    except redis.RedisError as error:
        return _Failed(_reason(error))


class RedisTarget:
    """A self-managed Redis or Valkey: standalone, a primary with `nodes` (replicas), or a cluster.

    `url` is the controller's connection (`redis://` or `rediss://`, optional `user:password@`);
    `nodes` are extra node URLs or `host:port` (inheriting scheme and credentials from `url`). A
    cluster is detected from the seed and every primary and replica it reports is a node.
    `ca_file`, `client_cert_file`, `client_key_file` configure TLS (mutual TLS with the last two).
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        nodes: Sequence[str] = (),
        ca_file: str | None = None,
        client_cert_file: str | None = None,
        client_key_file: str | None = None,
        socket_timeout: float = 2.0,
        read_chunk: int = READ_CHUNK,
        discovery_ttl: float = DISCOVERY_TTL,
    ) -> None:
        self.name = name
        self._seed = _parse_endpoint(url)
        self._extra = [_parse_endpoint(node, inherit=self._seed) for node in nodes]
        self._tls_files = (ca_file, client_cert_file, client_key_file)
        self._socket_timeout = socket_timeout
        self._read_chunk = read_chunk
        self._discovery_ttl = discovery_ttl
        self._clients: dict[tuple[str, float], redis.Redis] = {}  # (node, read timeout) -> client
        self._endpoints: dict[str, _Endpoint] = {}
        self._discovered_at: float | None = None
        self._canonical_cache: dict[tuple[str, ...], NodeAcl] = {}
        self._persistence: dict[str, str] = {}  # node -> "aclfile" | "config" | "memory" | "unavailable"
        self._last_save: dict[str, tuple[float, float]] = {}  # node -> (ended at, took seconds)
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: RedisTargetConfig) -> RedisTarget:
        """The backend of a policy's `kind: redis` target."""
        return cls(
            config.name,
            config.url,
            nodes=config.nodes,
            ca_file=config.ca_file,
            client_cert_file=config.client_cert_file,
            client_key_file=config.client_key_file,
        )

    def __repr__(self) -> str:
        return f"RedisTarget({self.name!r}, {self._seed.address})"

    # --- nodes ---------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        if self._discovered_at is None or time.monotonic() - self._discovered_at > self._discovery_ttl:
            self._discover()
        return list(self._endpoints)

    def _discover(self) -> None:
        """Re-read the node list from the first reachable known node (the seed first)."""
        candidates = [self._seed, *self._endpoints.values()]
        errors: dict[str, str] = {}
        for candidate in candidates:
            try:
                found = self._nodes_seen_from(candidate)
                break
            except redis.RedisError as error:
                errors.setdefault(candidate.address, _reason(error))
        else:
            raise TargetUnavailable(self.name, errors)
        for endpoint in self._extra:
            found.setdefault(endpoint.address, endpoint)
        for key in [key for key in self._clients if key[0] not in found]:
            self._clients.pop(key).close()
            self._persistence.pop(key[0], None)
        self._endpoints = found
        self._discovered_at = time.monotonic()

    def _nodes_seen_from(self, endpoint: _Endpoint) -> dict[str, _Endpoint]:
        client = self._client_for(endpoint)
        if not client.info("cluster").get("cluster_enabled"):
            return {endpoint.address: endpoint}
        found: dict[str, _Endpoint] = {}
        for shard in client.execute_command("CLUSTER", "SHARDS"):
            for reply in _as_map(shard)["nodes"]:
                node = _as_map(reply)
                # A node without a usable endpoint is announced as "?" or ""; its ip still works.
                host = node.get("endpoint") if node.get("endpoint") not in (None, "", "?") else node["ip"]
                port = node["tls-port"] if endpoint.tls and node.get("tls-port") else node["port"]
                member = _Endpoint(str(host), int(port), endpoint.tls, endpoint.username, endpoint.password)
                found[member.address] = member
        return found

    def _client_for(self, endpoint: _Endpoint, timeout: float | None = None) -> redis.Redis:
        timeout = self._socket_timeout if timeout is None else timeout
        client = self._clients.get((endpoint.address, timeout))
        if client is None:
            ca_file, cert_file, key_file = self._tls_files
            client = redis.Redis(
                host=endpoint.host,
                port=endpoint.port,
                username=endpoint.username,
                password=endpoint.password,
                ssl=endpoint.tls,
                ssl_ca_certs=ca_file,
                ssl_certfile=cert_file,
                ssl_keyfile=key_file,
                socket_timeout=timeout,
                socket_connect_timeout=self._socket_timeout,
                # One quick retry for a dropped pooled connection; a node that is down fails fast.
                # Long commands (saves) never retry: a retry would stall the server twice.
                retry=Retry(NoBackoff(), 1 if timeout == self._socket_timeout else 0),
                decode_responses=True,
                # Usernames are arbitrary bytes on the server: keep any non-UTF-8 name round-trippable.
                encoding_errors="surrogateescape",
                client_name=f"redis-scim:{self.name}",
                # No CLIENT SETINFO: one permission fewer for the controller, no ACL LOG noise.
                driver_info=None,
            )
            self._clients[endpoint.address, timeout] = client
        return client

    def _on_every_node(self, operation: Callable[[str, redis.Redis], T]) -> dict[str, T]:
        """Run `operation(node, client)` on every node; raise TargetUnavailable naming each failed
        node after all nodes were attempted."""
        clients = {address: self._client_for(self._endpoints[address]) for address in self.nodes()}
        results: dict[str, T] = {}
        failures: dict[str, str] = {}
        if len(clients) == 1:
            outcomes = {address: _attempt(operation, address, client) for address, client in clients.items()}
        else:
            # Nodes are separate servers: in parallel, a change reaches all of them in about one
            # round trip, and reading a large cluster takes as long as its slowest node.
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=MAX_PARALLEL_NODES)
            futures = {
                address: self._executor.submit(_attempt, operation, address, client)
                for address, client in clients.items()
            }
            outcomes = {address: future.result() for address, future in futures.items()}
        for address, outcome in outcomes.items():
            if isinstance(outcome, _Failed):
                failures[address] = outcome.reason
            else:
                results[address] = outcome
        if failures:
            # A node that failed may have been replaced: look the topology up again next time.
            self._discovered_at = None
            raise TargetUnavailable(self.name, failures, done=list(results))
        return results

    # --- reading -------------------------------------------------------------------------------

    def read_users(self, usernames: Sequence[str]) -> dict[str, dict[str, NodeAcl | None]]:
        names = list(dict.fromkeys(usernames))
        shared: dict[Any, Any] = {}  # one copy of equal rules across users and nodes

        def read(_: str, client: redis.Redis) -> dict[str, NodeAcl | None]:
            commands = [("ACL", "GETUSER", username) for username in names]
            replies = _pipelined(client, commands, self._read_chunk)
            failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
            if failed is not None:
                raise failed
            return {
                name: node_acl_from_getuser(reply, shared) for name, reply in zip(names, replies, strict=True)
            }

        per_node = self._on_every_node(read)
        return {name: {node: users[name] for node, users in per_node.items()} for name in names}

    def list_usernames(self) -> dict[str, set[str]]:
        return self._on_every_node(lambda _, client: set(client.execute_command("ACL", "USERS")))

    def canonical(self, rules: Sequence[str]) -> NodeAcl:
        """Credential and on/off rules are evaluated here; permission rules are normalized by the
        server itself, on a throw-away user created and deleted inside one MULTI/EXEC (never
        visible, never able to log in), cached per distinct permission rule list."""
        state, permissions = _split_rules(rules)
        normalized = self._canonical_cache.get(permissions)
        if normalized is None:
            normalized = self._probe(permissions)
            self._canonical_cache[permissions] = normalized
        return NodeAcl(
            enabled=state.enabled,
            password_hashes=state.hashes,
            nopass=state.nopass,
            root=normalized.root,
            selectors=normalized.selectors,
            flags=normalized.flags,
        )

    def _probe(self, permissions: tuple[str, ...]) -> NodeAcl:
        probe = f"redis-scim-probe-{uuid.uuid4().hex}"
        address = self.nodes()[0]
        client = self._client_for(self._endpoints[address])
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("ACL", "SETUSER", probe, "reset", *permissions)
        pipe.execute_command("ACL", "GETUSER", probe)
        pipe.execute_command("ACL", "DELUSER", probe)
        try:
            _, reply, _ = pipe.execute()
        except redis.RedisError as error:
            raise TargetUnavailable(self.name, {address: _reason(error)}) from error
        acl = node_acl_from_getuser(reply)
        if acl is None:
            raise TargetUnavailable(self.name, {address: "the rules could not be normalized"})
        return acl

    # --- writing -------------------------------------------------------------------------------

    def _check_not_own(self, username: str) -> None:
        # The policy already never names these; a second guard because touching them would lock
        # the controller (or every `default` client) out of the target.
        if username in ("default", self._seed.username or "default"):
            raise InvalidUsername(f"target {self.name!r}: {username!r} is never managed by redis-scim")

    def write_user(self, username: str, rules: Sequence[str]) -> None:
        self._check_not_own(username)
        full = _with_reset(rules)
        self._on_every_node(lambda _, client: client.execute_command("ACL", "SETUSER", username, *full))
        logger.info(
            "acl user written",
            extra={"target": self.name, "redis_username": username, "rules": _redacted(full)},
        )

    def apply_batch(self, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Write (rules) or delete (None) many users on every node: one pipelined stream per node,
        in round trips sized to hold a node about `MAX_ROUND_TRIP`. Raises `TargetUnavailable`
        naming each node where any command failed (the others of the stream were still applied),
        and `InvalidUsername`, before writing anything, when a name is never managed by redis-scim."""
        for username in changes:
            self._check_not_own(username)
        commands = [
            ("ACL", "DELUSER", username)
            if rules is None
            else ("ACL", "SETUSER", username, *_with_reset(rules))
            for username, rules in changes.items()
        ]

        def write(_: str, client: redis.Redis) -> None:
            replies = _pipelined(client, commands, WRITE_CHUNK)
            failed = [reply for reply in replies if isinstance(reply, Exception)]
            if failed:
                # The server quotes the rule it refused: never let a credential rule through.
                first = _CREDENTIAL_RULE.sub("'<redacted>'", str(failed[0]))
                raise redis.ResponseError(f"{len(failed)} of the batch's commands failed: {first}")

        self._on_every_node(write)
        logger.info(
            "acl users written",
            extra={
                "target": self.name,
                "written": sum(rules is not None for rules in changes.values()),
                "deleted": sum(rules is None for rules in changes.values()),
            },
        )

    def delete_user(self, username: str) -> None:
        self._check_not_own(username)
        self._on_every_node(lambda _, client: client.execute_command("ACL", "DELUSER", username))
        logger.info("acl user deleted", extra={"target": self.name, "redis_username": username})

    def disconnect_user(self, username: str) -> int:
        self._check_not_own(username)

        def kill(_: str, client: redis.Redis) -> int:
            try:
                return int(client.execute_command("CLIENT", "KILL", "USER", username))
            except redis.ResponseError as error:
                if "no such user" in str(error).lower():
                    return 0  # absent on this node: nobody can be connected as it
                raise

        closed = sum(self._on_every_node(kill).values())
        logger.info(
            "acl user disconnected",
            extra={"target": self.name, "redis_username": username, "connections_closed": closed},
        )
        return closed

    def verify_revoked(self, username: str, *, deleted: bool) -> bool:
        def check(_: str, client: redis.Redis) -> list[str]:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("ACL", "GETUSER", username)
            pipe.execute_command("CLIENT", "LIST")
            reply, clients = pipe.execute()
            acl = node_acl_from_getuser(reply)
            problems = []
            if acl is not None and (deleted or acl.enabled):
                problems.append("still exists" if deleted else "still enabled")
            connected = sum(1 for entry in _client_users(clients) if entry == username)
            if connected:
                problems.append(f"{connected} connection(s) remain")
            return problems

        problems = {node: found for node, found in self._on_every_node(check).items() if found}
        if problems:
            logger.warning(
                "revocation not verified",
                extra={"target": self.name, "redis_username": username, "nodes": problems},
            )
        return not problems

    # --- persistence ---------------------------------------------------------------------------

    def persist(self) -> None:
        """Per node: `ACL SAVE` when it has an aclfile, else `CONFIG REWRITE` when it has a config
        file, else nothing (logged once per node: its users live in memory only and are lost on
        restart until the reconciler repairs the node).

        A node whose last save took longer than CHEAP_SAVE is saved again only SAVE_SPACING times
        that long after it; until then a call leaves it unsaved, and a later call saves it."""
        savers = {
            address: self._client_for(self._endpoints[address], PERSIST_TIMEOUT) for address in self.nodes()
        }

        def save(address: str, _: redis.Redis) -> None:
            mode = self._persistence.get(address)
            if mode is None:
                # Finding the mode already persisted once; the mode is then reused.
                self._persistence[address] = self._timed(
                    address, lambda: self._find_persistence(address, savers[address])
                )
            elif mode in ("aclfile", "config") and self._save_due(address):
                command = ("ACL", "SAVE") if mode == "aclfile" else ("CONFIG", "REWRITE")
                self._timed(address, lambda: savers[address].execute_command(*command))

        try:
            self._on_every_node(save)
        except TargetUnavailable as error:
            for address in error.failures:
                self._persistence.pop(address, None)
            raise

    def _save_due(self, address: str) -> bool:
        last = self._last_save.get(address)
        if last is None:
            return True
        ended, took = last
        return took < CHEAP_SAVE or time.monotonic() - ended >= took * SAVE_SPACING

    def _timed(self, address: str, save: Callable[[], T]) -> T:
        started = time.monotonic()
        result = save()
        ended = time.monotonic()
        self._last_save[address] = (ended, ended - started)
        return result

    def _find_persistence(self, address: str, client: redis.Redis) -> str:
        # ACL SAVE answers "not configured to use an ACL file" without an aclfile: probing with it
        # needs no CONFIG permission, which a least-privilege controller may lack.
        try:
            client.execute_command("ACL", "SAVE")
            return "aclfile"
        except redis.exceptions.NoPermissionError as error:
            return self._cannot_persist(address, "ACL SAVE", error)
        except redis.ResponseError as error:
            if _NOT_CONFIGURED_FOR_ACLFILE not in str(error).lower():
                raise
        if not client.info("server").get("config_file"):
            logger.warning(
                "node has no aclfile and no config file: ACL changes live in memory only",
                extra={"target": self.name, "node": address},
            )
            return "memory"
        try:
            client.execute_command("CONFIG", "REWRITE")
        except redis.exceptions.NoPermissionError as error:
            return self._cannot_persist(address, "CONFIG REWRITE", error)
        return "config"

    def _cannot_persist(self, address: str, command: str, error: Exception) -> str:
        logger.warning(
            "cannot persist ACL changes: the controller may not run " + command,
            extra={"target": self.name, "node": address, "error": str(error)},
        )
        return "unavailable"

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._last_save.clear()
        self._endpoints.clear()
        self._discovered_at = None


def _client_users(clients: Any) -> Iterable[str]:
    """The `user=` of every connection in a CLIENT LIST reply (raw text or parsed by the client)."""
    if isinstance(clients, str):
        for line in clients.splitlines():
            for part in line.split(" "):
                if part.startswith("user="):
                    yield part[len("user=") :]
        return
    for entry in clients:
        yield str(entry.get("user", ""))


def _pipelined(client: redis.Redis, commands: Sequence[tuple[str, ...]], max_chunk: int) -> list[Any]:
    """Every command's reply (an exception object for a command the server refused), sent in
    pipelines of at most `max_chunk` that each hold the node about `MAX_ROUND_TRIP`."""
    replies: list[Any] = []
    chunk, start = min(FIRST_CHUNK, max_chunk), 0
    while start < len(commands):
        batch = commands[start : start + chunk]
        pipe = client.pipeline(transaction=False)
        for command in batch:
            pipe.execute_command(*command)
        began = time.monotonic()
        replies += pipe.execute(raise_on_error=False)
        per_command = max((time.monotonic() - began) / len(batch), 1e-6)
        chunk = max(1, min(max_chunk, int(MAX_ROUND_TRIP / per_command)))
        start += len(batch)
    return replies


def _with_reset(rules: Sequence[str]) -> list[str]:
    """The rules as a desired-state write: `reset` first, whatever the user had before."""
    return list(rules) if rules and rules[0].lower() == "reset" else ["reset", *rules]


def _redacted(rules: Sequence[str]) -> str:
    return " ".join("<redacted>" if rule.startswith(("#", ">", "<", "!")) else rule for rule in rules)
