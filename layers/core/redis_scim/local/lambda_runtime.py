"""Runs the functions/*/app.py Lambda handlers in-process, the way the Lambda runtime would.

The local stack loads each handler module from its file (functions/ is not a package; on Lambda
each app.py is the top-level module `app`) after setting the environment template.yaml gives it.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from redis_scim.local.resources import TEMPLATE

FUNCTIONS_DIR = TEMPLATE.parent / "functions"


def load_function(name: str, functions_dir: Path = FUNCTIONS_DIR) -> ModuleType:
    """Import functions/<name>/app.py once (its module-level init is the function's cold start)."""
    module_name = f"functions.{name}.app"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, functions_dir / name / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no Lambda function {name!r} in {functions_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@dataclass
class InvocationContext:
    """The parts of the Lambda context object that powertools and our handlers read."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: float = 29.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
