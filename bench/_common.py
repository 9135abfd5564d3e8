"""What the benchmark scenarios share: quick mode, free ports, and handing the result to the runner."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

QUICK = os.environ.get("BENCH_QUICK") == "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def report(result: dict[str, Any]) -> None:
    """Print the scenario's result as the last line of stdout, where `python -m bench` reads it
    (handlers log on stdout too, as they do on Lambda)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
