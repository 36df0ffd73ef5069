"""What one benchmark run observed, its summary, and the summary of repeated runs (pure)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
LATE_SEND_S = 0.001
"""An open-loop send later than this after its scheduled time counts as late (reported)."""
BEHIND_SEND_S = 0.010
BEHIND_FRACTION = 0.01
"""More than BEHIND_FRACTION of sends later than BEHIND_SEND_S (or any dropped request) means
the generator fell behind its schedule: the server saw less load, and the latencies include
the generator's own delay (they are measured from the scheduled time)."""


@dataclass
class RunSamples:
    """Raw observations of the measured part of one run (times in seconds since its start).

    `offsets` are when each successful request was due (open loop: its scheduled time) or
    sent (closed loop); `latencies` run from that moment to the answer, so an open-loop
    latency includes any wait the generator itself added (no coordinated omission);
    `service_latencies` run from the actual send.
    """

    mode: str
    duration_s: float
    offsets: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    service_latencies: list[float] = field(default_factory=list)
    error_offsets: list[float] = field(default_factory=list)
    error_kinds: list[str] = field(default_factory=list)
    error_latencies: list[float] = field(default_factory=list)
    """From due (or sent) to the failure: a timed-out request counts with the timeout."""
    send_lags: list[float] = field(default_factory=list)
    """Open loop: actual send time minus scheduled time, per request sent."""
    scheduled: int = 0
    """Open loop: requests the schedule asked for in the measured window."""
    dropped: int = 0
    """Open loop: scheduled requests not sent because too many were in flight."""
    example_errors: dict[str, str] = field(default_factory=dict)

    def add_success(self, offset: float, latency: float, service_latency: float) -> None:
        self.offsets.append(offset)
        self.latencies.append(latency)
        self.service_latencies.append(service_latency)

    def add_error(self, offset: float, kind: str, message: str, latency: float) -> None:
        self.error_offsets.append(offset)
        self.error_kinds.append(kind)
        self.error_latencies.append(latency)
        self.example_errors.setdefault(kind, message[:300])


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        empty: dict[str, float | None] = {f"p{p}": None for p in PERCENTILES}
        return empty | {"max": None, "mean": None}
    array = np.asarray(values) * 1000.0
    result: dict[str, float | None] = {
        f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(array, PERCENTILES), strict=True)
    }
    result["max"] = float(array.max())
    result["mean"] = float(array.mean())
    return result


def summarize_run(samples: RunSamples) -> dict[str, Any]:
    """The JSON-ready summary of one run."""
    successes = len(samples.latencies)
    errors = Counter(samples.error_kinds)
    if samples.dropped:
        errors["dropped"] = samples.dropped
    requests = successes + len(samples.error_kinds)
    summary: dict[str, Any] = {
        "mode": samples.mode,
        "duration_s": samples.duration_s,
        "requests": requests + samples.dropped,
        "successes": successes,
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "throughput_rps": successes / samples.duration_s if samples.duration_s > 0 else 0.0,
        "latency_ms": _ms(samples.latencies),
        # Failed requests too, each with the time it took to fail: percentiles of successes
        # alone look better the more slow requests time out.
        "latency_with_errors_ms": _ms(samples.latencies + samples.error_latencies),
        "service_latency_ms": _ms(samples.service_latencies),
    }
    if samples.example_errors:
        summary["example_errors"] = dict(sorted(samples.example_errors.items()))
    if samples.mode == "open":
        lags = samples.send_lags
        late = sum(1 for lag in lags if lag > LATE_SEND_S)
        behind = sum(1 for lag in lags if lag > BEHIND_SEND_S)
        sent = len(lags)
        summary["schedule"] = {
            "scheduled": samples.scheduled,
            "offered_rps": samples.scheduled / samples.duration_s if samples.duration_s > 0 else 0.0,
            "sent": sent,
            "dropped": samples.dropped,
            "late_sends": late,
            "send_lag_ms": {
                "p50": float(np.percentile(lags, 50) * 1000) if lags else None,
                "p99": float(np.percentile(lags, 99) * 1000) if lags else None,
                "max": float(max(lags) * 1000) if lags else None,
            },
            "very_late_sends": behind,
            "fell_behind": bool(samples.dropped or (sent and behind / sent > BEHIND_FRACTION)),
        }
    return summary


def _spread(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": float(statistics.median(present)), "min": min(present), "max": max(present)}


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread (min, max) across repeated runs' summaries."""
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run["errors"])
    keys = [*(f"p{p}" for p in PERCENTILES), "max", "mean"]
    summary: dict[str, Any] = {
        "runs": len(runs),
        "requests": sum(run["requests"] for run in runs),
        "successes": sum(run["successes"] for run in runs),
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "throughput_rps": _spread([run["throughput_rps"] for run in runs]),
        "latency_ms": {key: _spread([run["latency_ms"][key] for run in runs]) for key in keys},
        "latency_with_errors_ms": {
            key: _spread([run["latency_with_errors_ms"][key] for run in runs]) for key in keys
        },
    }
    if runs and "schedule" in runs[0]:
        summary["offered_rps"] = _spread([run["schedule"]["offered_rps"] for run in runs])
        summary["fell_behind"] = any(run["schedule"]["fell_behind"] for run in runs)
    return summary
