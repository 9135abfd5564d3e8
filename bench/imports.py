"""Cold import of each Lambda function's module, against a floor that imports only boto3 and powertools.

Each figure is the median of fresh interpreters running `import app` in `functions/<name>/` — what
Lambda's init does — with the environment template.yaml gives the function and the variables Lambda
sets (the X-Ray SDK reads LAMBDA_TASK_ROOT: outside Lambda it builds a sampling client at import that
Lambda never builds). AWS_ENDPOINT_URL points at a closed local port: no function makes an AWS call at
import, and one that did would fail here rather than reach AWS. The figure is the child's CPU time
(user + system), which a busy machine inflates far less than wall time; wall time is beside it.

Bytecode is the measurement's own, in a private cache (PYTHONPYCACHEPREFIX), whatever the caller's
PYTHONDONTWRITEBYTECODE says: `import_ms` runs with every module compiled ahead (one warm-up
interpreter first); `import_ms_without_bytecode` with none at all, which is what a Lambda gets from
an artifact that ships only sources — `sam build` unpacks wheels without compiling them, and /opt
and /var/task are read-only, so every cold start compiles every module again (docs/performance.md).

`python -m bench.imports --python <interpreter>` measures with another interpreter (a virtual
environment with the project installed), to compare Lambda runtimes: `python -m bench` uses its own.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import QUICK, report

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("scim_api", "acl_applier", "reconciler")
BASELINE = "import boto3\nfrom aws_lambda_powertools import Logger, Metrics, Tracer"
ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens
    "DIRECTORY_TABLE": "bench-directory",
    "AUDIT_TABLE": "bench-audit",
    "CHANGE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/bench.fifo",
    "TOKEN_SECRET_ID": "bench/scim-tokens",
    "POLICY": str(ROOT / "examples" / "policy.yaml"),
    "REDIS_URL": "redis://127.0.0.1:9",
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "Bench",
}


@functools.cache
def python_version(python: str) -> str:
    """`major.minor` of the interpreter at `python`, as Lambda's runtime names spell it."""
    command = [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()  # noqa: S603


def cold_import(
    python: str, statement: str, cwd: Path, runs: int, *, bytecode: Path, compiled: bool
) -> tuple[float, float]:
    """Median (CPU ms, wall ms) of `runs` fresh `python` interpreters running `statement` in `cwd`,
    reading bytecode only from the cache `bytecode`: `compiled`, a warm-up run fills it first; else
    it is left empty, so every module is compiled at every import."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))}
    env |= ENVIRONMENT | {
        "LAMBDA_TASK_ROOT": str(cwd),
        "AWS_LAMBDA_FUNCTION_NAME": f"bench-{cwd.name}",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{python_version(python)}",
    }
    command = [python, "-c", statement]
    env["PYTHONPYCACHEPREFIX"] = str(bytecode)  # site-packages' own __pycache__ is then never read
    if compiled:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(command, cwd=cwd, env=env, check=True)  # noqa: S603 - our interpreter, fixed statements
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    cpus, walls = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=env, check=True)  # noqa: S603 - as above
        walls.append((time.perf_counter() - started) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return statistics.median(cpus), statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure (default: this one)")
    python = parser.parse_args().python
    runs = 3 if QUICK else 5
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    uncompiled: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-bytecode-") as cache,
        tempfile.TemporaryDirectory() as empty,
    ):
        compiled = functools.partial(cold_import, python, runs=runs, bytecode=Path(cache), compiled=True)
        for name in FUNCTIONS:
            function = ROOT / "functions" / name
            cpu[name], wall[name] = compiled("import app", function)
            # Three runs: compiling dominates these figures, and it varies little from run to run.
            uncompiled[name], _ = cold_import(
                python, "import app", function, 3, bytecode=Path(empty), compiled=False
            )
        cpu["baseline"], wall["baseline"] = compiled(BASELINE, ROOT)
        cpu["interpreter"], wall["interpreter"] = compiled("pass", ROOT)
    report(
        {
            "import_ms": {key: round(value) for key, value in cpu.items()},
            "import_wall_ms": {key: round(value) for key, value in wall.items()},
            "import_ms_above_baseline": {name: round(cpu[name] - cpu["baseline"]) for name in FUNCTIONS},
            "import_ms_without_bytecode": {name: round(value) for name, value in uncompiled.items()},
            "import_runs": runs,
            "import_python": python_version(python),
        }
    )


if __name__ == "__main__":
    main()
