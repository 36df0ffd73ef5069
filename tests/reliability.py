"""What the fault tests measured, for docs/reliability.md (issue 13).

A fault test asserts its behaviour as any test does, and also calls :func:`record` with the
figures it measured (recovery times, errors seen, requests made while the API was down, ...).
`benchmarks/reliability.py` runs the fault tests with ``TRITONSCALE_RELIABILITY_REPORT`` set to
a file and writes the report from the rows appended there; in a plain test run the variable is
unset and :func:`record` does nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

REPORT_ENV = "TRITONSCALE_RELIABILITY_REPORT"


def record(row: str, fault: str, outcome: str, **figures: Any) -> None:
    """Append one measured row: the matrix row it belongs to (e.g. "operator killed"), the fault
    as injected, what was seen, and named figures (numbers or short strings)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = json.dumps(
        {"row": row, "fault": fault, "outcome": outcome, "figures": figures, "at": time.time()},
        sort_keys=True,
        default=str,
    )
    report = Path(path)
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("a") as out:
        # Tiers may run side by side; one line per write, whole.
        fcntl.flock(out, fcntl.LOCK_EX)
        out.write(line + "\n")
