"""The reliability report (issue 13): run the fault, upgrade, least-privilege and fuzzing tests
and write docs/reliability.md from what they measured.

    .venv/bin/python benchmarks/reliability.py           # about 15 minutes on 2 cores
    TRITONSCALE_RELIABILITY_REPORT=$PWD/build/ci.jsonl make test   # or: rows from every tier
    .venv/bin/python benchmarks/reliability.py --from build/ci.jsonl  # then write from them

Each test asserts its behaviour and records its figures (tests/reliability.py); this script
runs them with ``TRITONSCALE_RELIABILITY_REPORT`` set, reads pytest's verdict per test from a
JUnit XML file, and writes the matrix: one row per fault, what was injected, what was seen,
the figures, and whether the test passed. A failing test shows as FAILED in the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "reliability.md"
ROWS_FILE = REPO / "build" / "reliability.jsonl"
VERDICTS_FILE = REPO / "build" / "reliability-junit.xml"

# (tier marker, test files): what the report runs.
SUITES: list[tuple[str, list[str]]] = [
    ("not integration and not e2e and not image", ["tests/unit/test_fuzz_spec.py"]),
    ("integration", ["tests/integration/test_fuzz_haproxy.py", "tests/integration/test_fuzz_promql.py"]),
    (
        "integration",
        [
            "tests/integration/test_faults_dataplane.py",
            "tests/integration/test_autoscaling_loop.py::test_a_prometheus_outage_of_minutes_holds_replicas_and_recovers_on_its_own",
            "tests/integration/test_triton_harness.py::test_with_one_replica_hung_the_triton_source_uses_the_others_and_says_so",
        ],
    ),
    (
        "e2e",
        [
            "tests/e2e/test_faults.py",
            "tests/e2e/test_upgrade.py",
            "tests/e2e/test_spot_fallback.py",
            "tests/e2e/test_hostile_input.py",
        ],
    ),
]


def run_suites() -> dict[str, str]:
    """Run every suite; the verdict of each test (passed, failed, skipped) by its name."""
    ROWS_FILE.parent.mkdir(parents=True, exist_ok=True)
    ROWS_FILE.unlink(missing_ok=True)
    env = {**os.environ, "TRITONSCALE_RELIABILITY_REPORT": str(ROWS_FILE)}
    verdicts: dict[str, str] = {}
    for index, (marker, files) in enumerate(SUITES, start=1):
        present = [f for f in files if (REPO / f.split("::")[0]).exists()]
        print(f"[{index}/{len(SUITES)}] pytest -m '{marker}' {' '.join(present)}", flush=True)
        began = time.monotonic()
        junit = VERDICTS_FILE.with_suffix(f".{index}.xml")
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", marker, f"--junitxml={junit}", *present],
            cwd=REPO,
            env=env,
            check=False,
        )
        print(f"      done in {time.monotonic() - began:.0f} s", flush=True)
        verdicts.update(read_verdicts(junit))
    return verdicts


def read_verdicts(junit: Path) -> dict[str, str]:
    if not junit.exists():
        return {}
    verdicts = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            verdicts[name] = "FAILED"
        elif case.find("skipped") is not None:
            verdicts[name] = "skipped"
        else:
            verdicts[name] = "passed"
    return verdicts


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items())


def render(rows: list[dict[str, Any]], verdicts: dict[str, str]) -> str:
    failed = sorted(name for name, verdict in verdicts.items() if verdict == "FAILED")
    lines = [
        "# Reliability report",
        "",
        "What breaks on purpose, and what the operator did: every row is a test against real",
        "components (the real kube-apiserver, etcd, controller-manager and scheduler with kwok and",
        "process-backed nodes; real tritonserver, HAProxy and Prometheus), run in CI; the figures",
        "are what that test measured in the run that wrote this file. Regenerate it with",
        "",
        "    .venv/bin/python benchmarks/reliability.py",
        "",
        (
            f"Tests run: {len(verdicts)}; failed: {len(failed)}"
            + (f" ({', '.join(failed)})" if failed else "")
            if verdicts
            else "Rows recorded by a run of every tier (`make test` with TRITONSCALE_RELIABILITY_REPORT set); "
            "a test records its row only once its assertions have passed"
        )
        + f". Written {time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        "| fault | injected | seen | figures |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['row']} | {row['fault']} | {row['outcome']} | {_figures(row['figures'])} |")
    lines += [
        "",
        "Where a figure is a bound the test enforces, the test's docstring says which; the tests",
        "are in tests/e2e/test_faults.py, tests/e2e/test_upgrade.py, tests/e2e/test_spot_fallback.py,",
        "tests/e2e/test_hostile_input.py, tests/integration/test_autoscaling_loop.py,",
        "tests/integration/test_faults_dataplane.py and the fuzzing tests (tests/fuzzing.py).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="rows", type=Path, help="Only rewrite the report from these rows.")
    args = parser.parse_args()
    if args.rows:
        # Rows from another run (e.g. `make test` with the variable set): that run's verdict is
        # its own; no JUnit files are read.
        verdicts: dict[str, str] = {}
        rows = load_rows(args.rows)
    else:
        verdicts = run_suites()
        rows = load_rows(ROWS_FILE)
    REPORT.write_text(render(rows, verdicts))
    print(f"wrote {REPORT.relative_to(REPO)}: {len(rows)} rows, {len(verdicts)} tests")
    if any(v == "FAILED" for v in verdicts.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
