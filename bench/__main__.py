"""`make bench`: run every scenario in a fresh interpreter, print the figures against their targets,
and write bench/results.json (`BENCH_QUICK=1` for the reduced version).

A fresh interpreter per scenario keeps import times cold and one scenario's memory out of another's
peak RSS. A scenario that fails is reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import QUICK

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
SCENARIOS = ("scim_cpu", "aws_calls", "apply_rate", "repair_rate", "reconcile_100k", "deprovision", "imports")
# The reconciler benchmark names its figures without the scenario prefix.
RECONCILE_KEYS = {
    "reconcile_100k_s": "reconcile_100k_s",
    "peak_rss_mb": "reconcile_100k_peak_rss_mb",
    "max_stall_ms": "reconcile_100k_max_stall_ms",
}


@dataclass(frozen=True)
class Target:
    """One goal of the project: a label, how to read the figure, and when it is met."""

    label: str
    figure: Callable[[dict[str, Any]], Any]
    goal: str
    met: Callable[[dict[str, Any]], bool]


def _scim_cpu(operation: str) -> Target:
    """Ours against scim2-server's CPU for one operation: at most twice as much."""

    def figure(results: dict[str, Any]) -> str:
        return f"{results['scim_cpu_ms'][operation]} vs {results['scim2_server_cpu_ms'][operation]}"

    def met(results: dict[str, Any]) -> bool:
        return float(results["scim_cpu_ms"][operation]) <= 2 * float(
            results["scim2_server_cpu_ms"][operation]
        )

    return Target(f"scim_cpu_ms.{operation} (vs scim2-server)", figure, "<= 2x", met)


TARGETS = (
    *(_scim_cpu(operation) for operation in ("post", "get", "patch")),
    Target(
        "aws_calls add 10 members: to 10 / to a large group",
        lambda r: (
            f"{r['aws_calls']['patch_group_add_10_to_10']} / {r['aws_calls']['patch_group_add_10_to_10000']}"
        ),
        "equal",
        lambda r: r["aws_calls"]["patch_group_add_10_to_10"] == r["aws_calls"]["patch_group_add_10_to_10000"],
    ),
    Target(
        "apply_ratio (engine / raw SETUSER; ceiling: raw SETUSER + GETUSER)",
        lambda r: f"{r['apply_ratio']} (ceiling {r['apply_ratio_ceiling']})",
        ">= 0.5",
        lambda r: r["apply_ratio"] >= 0.5,
    ),
    Target(
        "reconcile_100k_s", lambda r: r["reconcile_100k_s"], "<= 10 s", lambda r: r["reconcile_100k_s"] <= 10
    ),
    Target(
        "reconcile_100k_max_stall_ms",
        lambda r: r["reconcile_100k_max_stall_ms"],
        "<= 50 ms",
        lambda r: r["reconcile_100k_max_stall_ms"] <= 50,
    ),
    Target(
        "deprovision_p99_ms",
        lambda r: r["deprovision_p99_ms"],
        "<= 1000 ms",
        lambda r: r["deprovision_p99_ms"] <= 1000,
    ),
    Target(
        "import_ms.scim_api",
        lambda r: r["import_ms"]["scim_api"],
        "<= 600 ms",
        lambda r: r["import_ms"]["scim_api"] <= 600,
    ),
    Target(
        "import_ms.acl_applier",
        lambda r: r["import_ms"]["acl_applier"],
        "<= 300 ms",
        lambda r: r["import_ms"]["acl_applier"] <= 300,
    ),
)


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def last_json_object(stdout: str) -> dict[str, Any]:
    """The scenario's result: the last JSON object on its stdout (handlers log there too)."""
    lines = stdout.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].lstrip().startswith("{"):
            try:
                value = json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("no JSON object on stdout")


def run(scenario: str) -> dict[str, Any]:
    started = time.monotonic()
    completed = subprocess.run(  # noqa: S603 - our own interpreter and modules
        [sys.executable, "-m", f"bench.{scenario}"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise RuntimeError(f"exit {completed.returncode}: {completed.stderr.strip()[-2000:]}")
    result = last_json_object(completed.stdout)
    if scenario == "reconcile_100k":
        result = {RECONCILE_KEYS.get(key, key): value for key, value in result.items()}
    print(f"  {scenario}: {seconds:.0f} s", file=sys.stderr, flush=True)
    return result | {f"{scenario}_bench_s": round(seconds, 1)}


def table(results: dict[str, Any]) -> str:
    rows = []
    for target in TARGETS:
        try:
            figure, verdict = target.figure(results), "met" if target.met(results) else "MISSED"
        except (KeyError, TypeError):
            figure, verdict = "-", "not measured"
        rows.append((target.label, str(figure), target.goal, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def main() -> int:
    results: dict[str, Any] = {
        "quick": QUICK,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load_average_before": [round(value, 2) for value in os.getloadavg()],
    }
    errors: dict[str, str] = {}
    started = time.monotonic()
    for scenario in SCENARIOS:
        if not (HERE / f"{scenario}.py").exists():
            errors[scenario] = "scenario not present"
            continue
        try:
            results |= run(scenario)
        except (RuntimeError, ValueError) as error:
            errors[scenario] = str(error)
            print(f"  {scenario}: FAILED {error}", file=sys.stderr, flush=True)
    results["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    results["bench_s"] = round(time.monotonic() - started, 1)
    if errors:
        results["errors"] = errors
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(
        f"\n{RESULTS.relative_to(HERE.parent)} written in {results['bench_s']:.0f} s; load average "
        f"{results['load_average_before']} before, {results['load_average_after']} after"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
