"""Benchmark reports: a rich table, a JSON document and a PNG plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tritonscale.bench.stats import PERCENTILES, RunSamples

LATENCY_KEYS = (*(f"p{p}" for p in PERCENTILES), "max")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread_cell(spread: dict[str, float | None], digits: int = 2) -> str:
    median, low, high = spread["median"], spread["min"], spread["max"]
    if median is None:
        return "-"
    if low == high:
        return _fmt(median, digits)
    return f"{_fmt(median, digits)} [{_fmt(low, digits)}-{_fmt(high, digits)}]"


def results_table(document: dict[str, Any]) -> Table:
    """One row per run, and a median [min-max] row when there are several."""
    config = document["config"]
    runs = document["runs"]
    table = Table(
        title=f"tritonscale bench: {config['protocol']} {config['endpoint']} model {config['model']}, {config['load']}",
        caption="latency from the scheduled send time (open loop) or the send (closed loop), in ms",
    )
    table.add_column("run")
    table.add_column("req/s", justify="right")
    if config["mode"] == "open":
        table.add_column("offered", justify="right")
    table.add_column("requests", justify="right")
    table.add_column("errors", justify="right")
    for key in LATENCY_KEYS:
        table.add_column(key, justify="right")
    for index, run in enumerate(runs, start=1):
        cells = [str(index), _fmt(run["throughput_rps"], 1)]
        if config["mode"] == "open":
            behind = " (behind)" if run["schedule"]["fell_behind"] else ""
            cells.append(_fmt(run["schedule"]["offered_rps"], 1) + behind)
        errors = ", ".join(f"{kind} {count}" for kind, count in run["errors"].items()) or "0"
        cells += [str(run["requests"]), errors]
        cells += [_fmt(run["latency_ms"][key]) for key in LATENCY_KEYS]
        table.add_row(*cells)
    if len(runs) > 1:
        summary = document["summary"]
        cells = ["median", _spread_cell(summary["throughput_rps"], 1)]
        if config["mode"] == "open":
            cells.append(_spread_cell(summary["offered_rps"], 1))
        cells += [str(summary["requests"]), str(summary["error_count"])]
        cells += [_spread_cell(summary["latency_ms"][key]) for key in LATENCY_KEYS]
        table.add_row(*cells, style="bold")
    return table


def print_report(document: dict[str, Any], console: Console) -> None:
    """The table, plus a warning when the generator fell behind its schedule."""
    console.print(results_table(document))
    for index, run in enumerate(document["runs"], start=1):
        schedule = run.get("schedule")
        if schedule and schedule["fell_behind"]:
            console.print(
                f"[yellow]run {index}: the load generator fell behind its schedule: "
                f"{schedule['very_late_sends']} of {schedule['sent']} sends more than 10 ms late "
                f"(max {_fmt(schedule['send_lag_ms']['max'])} ms), {schedule['dropped']} dropped "
                f"at the in-flight limit; the server saw less load than asked for.[/yellow]"
            )
        for kind, message in run.get("example_errors", {}).items():
            console.print(f"[red]run {index}: {kind}: {message}[/red]")
        if run["error_count"]:
            both = run["latency_with_errors_ms"]
            console.print(
                f"run {index}: counting failed requests at the time they failed: p50 {_fmt(both['p50'])}, "
                f"p99 {_fmt(both['p99'])}, max {_fmt(both['max'])} ms"
            )


def write_json(document: dict[str, Any], destination: str) -> None:
    """Write the document to a file, or to stdout for `-`."""
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if destination == "-":
        print(text, end="")
    else:
        Path(destination).write_text(text, encoding="utf-8")


REQUEST_LOG_FIELDS = ("run", "due_s", "latency_ms", "service_latency_ms", "error")


def write_request_log(runs: list[RunSamples], path: Path) -> None:
    """Every measured request as a CSV row: its run (1-based), when it was due (seconds into
    the measured window), its latency from then and from its actual send (ms; both empty for a
    failure, whose kind fills `error`). For what a summary cannot answer, e.g. the exact
    percentile of any window."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(REQUEST_LOG_FIELDS)
        for number, run in enumerate(runs, start=1):
            rows: list[tuple[int, float, str, str, str]] = [
                (number, due, f"{latency * 1000:.3f}", f"{service * 1000:.3f}", "")
                for due, latency, service in zip(
                    run.offsets, run.latencies, run.service_latencies, strict=True
                )
            ]
            rows += [
                (number, due, "", "", kind)
                for due, kind in zip(run.error_offsets, run.error_kinds, strict=True)
            ]
            writer.writerows(
                (n, f"{due:.6f}", *rest) for n, due, *rest in sorted(rows, key=lambda row: row[1])
            )


def write_plot(samples: list[RunSamples], title: str, path: Path) -> None:
    """PNG: latency over time (each request, per-second p50/p99, errors) and a latency
    histogram, across all runs (run k's time axis continues after run k-1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times: list[float] = []
    latencies: list[float] = []
    error_times: list[float] = []
    shift = 0.0
    for run in samples:
        times += [shift + t for t in run.offsets]
        latencies += [latency * 1000 for latency in run.latencies]
        error_times += [shift + t for t in run.error_offsets]
        shift += run.duration_s
    figure, (over_time, histogram) = plt.subplots(2, 1, figsize=(10, 8), constrained_layout=True)
    figure.suptitle(title)
    if latencies:
        t = np.asarray(times)
        lat = np.asarray(latencies)
        over_time.scatter(t, lat, s=2, alpha=0.25, color="tab:blue", label="request", rasterized=True)
        seconds = np.floor(t).astype(int)
        buckets = np.unique(seconds)
        p50 = [np.percentile(lat[seconds == b], 50) for b in buckets]
        p99 = [np.percentile(lat[seconds == b], 99) for b in buckets]
        over_time.plot(buckets + 0.5, p50, color="tab:green", label="p50 per second")
        over_time.plot(buckets + 0.5, p99, color="tab:red", label="p99 per second")
        low, high = max(lat.min(), 1e-3), max(lat.max(), 1e-2)
        bins = np.logspace(math.log10(low), math.log10(high * 1.0001), 60)
        histogram.hist(lat, bins=bins, color="tab:blue")
        histogram.set_xscale("log")
        for p in PERCENTILES:
            value = float(np.percentile(lat, p))
            histogram.axvline(value, linestyle="--", color="gray", linewidth=0.8)
            histogram.annotate(
                f"p{p} {value:.2f}",
                (value, 0.95),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=8,
                va="top",
            )
    if error_times:
        top = max(latencies) if latencies else 1.0
        over_time.scatter(
            error_times, [top] * len(error_times), marker="x", color="black", s=12, label="error"
        )
    over_time.set_xlabel("time since measurement start (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_yscale("log")
    over_time.legend(loc="upper left", fontsize=8)
    histogram.set_xlabel("latency (ms)")
    histogram.set_ylabel("requests")
    figure.savefig(path, dpi=100)
    plt.close(figure)
