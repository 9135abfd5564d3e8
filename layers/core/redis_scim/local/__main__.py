"""`python -m redis_scim.local` (what `make run` starts): serve the local stack until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading

from redis_scim.errors import RedisScimError
from redis_scim.local.poller import applier_poller
from redis_scim.local.reconciler_timer import reconciler_timer
from redis_scim.local.stack import LocalStack, ServiceFactory, StackConfig

# The applier's SQS poller and the reconciler's schedule (every RECONCILE_INTERVAL seconds).
SERVICES: tuple[ServiceFactory, ...] = (applier_poller, reconciler_timer)


def main() -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        config = StackConfig.from_env()
        stack = LocalStack(config, service_factories=SERVICES)
        stack.start()
    except (OSError, ValueError, RedisScimError) as exc:  # RedisScimError: e.g. an invalid policy
        print(f"redis-scim local stack failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        for line in stack.banner():
            print(line, flush=True)
        # A short wait loop rather than one long wait: the signal handler runs between waits.
        while not stop.wait(0.5):
            pass
        print("Stopping...", flush=True)
    finally:
        stack.stop()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
