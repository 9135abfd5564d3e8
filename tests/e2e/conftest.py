"""End-to-end fixtures: the local stack, started exactly as `make run` starts it, in its own process.

`local_stack` (session-scoped) serves every e2e test; `start_local_stack` starts a private one for
tests that must stop it. The stack always uses its own embedded Valkey here (REDIS_URL is not passed
on), so end-to-end tests never touch a shared Redis.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 30
BASE_URL_LINE = re.compile(r"SCIM base URL: (http://127\.0\.0\.1:\d+/scim/v2)")
ENDPOINT_LINE = re.compile(r"AWS_ENDPOINT_URL=(http://127\.0\.0\.1:\d+)")
VALKEY_LINE = re.compile(r"Valkey: (redis://127\.0\.0\.1:\d+)")
# The stack under test uses its own Valkey, moto and example policy, whatever the shell says.
NOT_PASSED_ON = ("REDIS_URL", "AWS_ENDPOINT_URL", "POLICY")


@dataclass
class RunningStack:
    """A `python -m redis_scim.local` process and what it printed."""

    process: subprocess.Popen[str]
    token: str
    port: int
    output: list[str] = field(default_factory=list)  # stdout and stderr lines, as they come
    base_url: str = ""
    aws_endpoint_url: str = ""
    valkey_url: str | None = None
    _serving: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the stack and wait for it to exit; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the local stack ignored signal {signum}:\n{self.text()}") from None
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_SECONDS)
        return code

    def text(self) -> str:
        return "\n".join(self.output)

    def errors(self) -> str:
        """The stack's error log lines (JSON logs at ERROR, tracebacks), to explain a failed test."""
        return "\n".join(line for line in self.output if '"level":"ERROR"' in line or "Traceback" in line)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            if match := ENDPOINT_LINE.fullmatch(line):
                self.aws_endpoint_url = match.group(1)
            elif match := VALKEY_LINE.fullmatch(line):
                self.valkey_url = match.group(1)
            elif match := BASE_URL_LINE.fullmatch(line):
                self.base_url = match.group(1)
                self._serving.set()
        self._serving.set()  # the process ended: stop waiting


def _terminate_with_parent() -> None:
    """In the child: ask Linux for SIGTERM when the test process dies, so a killed test run cannot
    leave a stack (and its Valkey) behind; the stack's own SIGTERM handling then cleans up."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_local_stack(env: Mapping[str, str] | None = None) -> RunningStack:
    """Start `python -m redis_scim.local` (what `make run` runs) and wait until it serves."""
    token = secrets.token_urlsafe(32)
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in NOT_PASSED_ON}
    environment.update({"PORT": str(port), "SCIM_TOKEN": token, "PYTHONUNBUFFERED": "1", **(env or {})})
    process = subprocess.Popen(
        [sys.executable, "-m", "redis_scim.local"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_terminate_with_parent,
    )
    stack = RunningStack(process=process, token=token, port=port)
    stack._reader = threading.Thread(target=stack._read, name="local-stack-output", daemon=True)
    stack._reader.start()
    if not stack._serving.wait(START_TIMEOUT_SECONDS) or not stack.base_url:
        stack.stop(signal.SIGKILL)
        raise AssertionError(f"the local stack did not start:\n{stack.text()}")
    return stack


@pytest.fixture(scope="session")
def local_stack() -> Iterator[RunningStack]:
    stack = start_local_stack()
    yield stack
    code = stack.stop(signal.SIGTERM)
    assert code == 0, f"the local stack exited with {code}:\n{stack.text()}"


@pytest.fixture
def start_stack() -> Iterator[Callable[..., RunningStack]]:
    """Starts private stacks (for tests that stop them); any still running at the end is killed."""
    started: list[RunningStack] = []

    def start(env: Mapping[str, str] | None = None) -> RunningStack:
        started.append(start_local_stack(env))
        return started[-1]

    yield start
    for stack in started:
        if stack.process.poll() is None:
            stack.stop(signal.SIGKILL)
