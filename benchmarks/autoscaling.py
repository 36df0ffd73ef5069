"""Every autoscaling policy on the four built-in workloads x 3 seeds, in one run.

    .venv/bin/python benchmarks/autoscaling.py            # the figures quoted in README.md
    .venv/bin/python benchmarks/autoscaling.py --quick    # 1 seed, 1 h: a smoke run

Writes benchmarks/results/autoscaling.json (every run) and prints a table per workload with
the mean over seeds: SLO attainment, p99, replica-hours relative to the oracle, flaps per hour.
On the surging workloads it also runs the reactive reference (the true rate and slope every
second, at several headrooms: see sim.policies.ReactiveReference) and plots attainment against
cost for every policy and the reference to benchmarks/results/frontier.png.
Runs the scenarios on all cores (one process per workload and seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tritonscale.cli.simulate import result_record
from tritonscale.sim.engine import SimEnvironment
from tritonscale.sim.policies import POLICIES, Objective, reference_name
from tritonscale.sim.runner import Scenario, run_scenario
from tritonscale.sim.workloads import BUILT_IN, built_in

RESULTS = Path(__file__).parent / "results" / "autoscaling.json"
FRONTIER_PLOT = RESULTS.parent / "frontier.png"
REFERENCE_WORKLOADS = ("bursty", "flash-crowd")
REFERENCE_HEADROOMS = (1.0, 1.15, 1.3, 1.6)
TARGETS = (
    "latency: >= 99 % attainment on every workload at <= 1.15 x the oracle's replica-hours; "
    "vs hpa: >= 25 % fewer replica-hours at equal or better attainment, or >= 5 x fewer misses; "
    "better attainment than kpa, keda, ray; <= 1 flap per hour"
)


def run_one(job: tuple[str, int, float, float]) -> list[dict[str, Any]]:
    workload_name, seed, duration_s, mean_rps = job
    env = SimEnvironment()
    scenario = Scenario(
        built_in(workload_name, duration_s, mean_rps, seed), seed, env, Objective(100.0, 95.0)
    )
    headrooms = REFERENCE_HEADROOMS if workload_name in REFERENCE_WORKLOADS else ()
    results = run_scenario(scenario, POLICIES, reference_headrooms=headrooms)
    oracle = next(r for r in results if r.policy == "oracle")
    return [result_record(r, scenario, oracle.replica_hours) for r in results]


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """workload -> policy -> mean figures over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    references = tuple(reference_name(h) for h in REFERENCE_HEADROOMS)
    for workload in BUILT_IN:
        table[workload] = {}
        for policy in (*POLICIES, *references):
            runs = [r for r in records if r["workload"]["name"] == workload and r["policy"] == policy]
            if not runs:
                continue
            table[workload][policy] = {
                "slo_attainment": statistics.mean(r["slo_attainment"] for r in runs),
                "misses_per_1000": statistics.mean(1000 * (1 - r["slo_attainment"]) for r in runs),
                "p99_ms": statistics.mean(r["p99_ms"] if r["p99_ms"] is not None else 1e9 for r in runs),
                "replica_hours_vs_oracle": statistics.mean(r["replica_hours_vs_oracle"] for r in runs),
                "flaps_per_hour": statistics.mean(r["flaps_per_hour"] for r in runs),
            }
    return table


def print_tables(summary: dict[str, dict[str, dict[str, float]]], console: Console) -> None:
    for workload, policies in summary.items():
        table = Table(title=f"{workload}: mean over seeds")
        for column in ("policy", "attainment", "misses/1000", "p99 ms", "replica-h / oracle", "flaps/h"):
            table.add_column(column, justify="left" if column == "policy" else "right")
        for policy, figures in policies.items():
            p99 = figures["p99_ms"]
            table.add_row(
                policy,
                f"{100 * figures['slo_attainment']:.2f} %",
                f"{figures['misses_per_1000']:.1f}",
                "timeouts" if p99 >= 1e8 else f"{p99:.0f}",
                f"{figures['replica_hours_vs_oracle']:.2f}",
                f"{figures['flaps_per_hour']:.2f}",
            )
        console.print(table)


def markdown(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| workload | policy | attainment | p99 ms | replica-h / oracle | flaps/h |",
        "|---|---|---|---|---|---|",
    ]
    for workload, policies in summary.items():
        for policy, f in policies.items():
            p99 = "timeouts" if f["p99_ms"] >= 1e8 else f"{f['p99_ms']:.0f}"
            lines.append(
                f"| {workload} | {policy} | {100 * f['slo_attainment']:.2f} % | {p99} | "
                f"{f['replica_hours_vs_oracle']:.2f} | {f['flaps_per_hour']:.2f} |"
            )
    return "\n".join(lines)


def plot_frontier(summary: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Attainment against replica-hours for each policy, with the reactive reference's curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(REFERENCE_WORKLOADS), figsize=(6 * len(REFERENCE_WORKLOADS), 4.5))
    for axis, workload in zip(axes, REFERENCE_WORKLOADS, strict=True):
        policies = summary[workload]
        names = (reference_name(h) for h in REFERENCE_HEADROOMS)
        curve = [policies[name] for name in names if name in policies]
        axis.plot(
            [f["replica_hours_vs_oracle"] for f in curve],
            [100 * f["slo_attainment"] for f in curve],
            "k--",
            marker=".",
            label="reactive reference: true rate and slope, headroom x1 .. x1.6",
        )
        for policy in POLICIES:
            if policy in policies:
                f = policies[policy]
                x, y = f["replica_hours_vs_oracle"], 100 * f["slo_attainment"]
                axis.scatter([x], [y], s=60 if policy == "latency" else 25, zorder=3)
                axis.annotate(policy, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.axhline(99.0, color="grey", linewidth=0.8, linestyle=":")
        axis.axvline(1.15, color="grey", linewidth=0.8, linestyle=":")
        axis.set_xlim(0.9, 3.6)
        axis.set_ylim(92, 100.2)
        axis.set_xlabel("replica-hours / oracle")
        axis.set_ylabel("SLO attainment %")
        axis.set_title(f"{workload}: attainment vs cost (mean of seeds)")
        axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 hour per workload")
    parser.add_argument("--duration-s", type=float, default=7200.0)
    parser.add_argument("--mean-rps", type=float, default=1000.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    seeds, duration = (1, 3600.0) if args.quick else (args.seeds, args.duration_s)
    jobs = [(w, seed, duration, args.mean_rps) for w in BUILT_IN for seed in range(1, seeds + 1)]
    console = Console(stderr=True)
    console.print(f"{len(jobs)} scenarios x {len(POLICIES)} policies on {args.workers} workers ...")
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for done, batch in enumerate(pool.map(run_one, jobs), start=1):
            records.extend(batch)
            console.print(f"  {done}/{len(jobs)} scenarios done ({time.perf_counter() - started:.0f}s)")
    summary = summarize(records)
    print_tables(summary, Console())
    print(markdown(summary))
    if all(w in summary for w in REFERENCE_WORKLOADS):
        plot_frontier(summary, FRONTIER_PLOT)
        console.print(f"plot in {FRONTIER_PLOT}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python " + " ".join(sys.argv),
                "targets": TARGETS,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "elapsed_s": round(time.perf_counter() - started, 1),
                "summary": summary,
                "runs": records,
            },
            indent=1,
        )
        + "\n"
    )
    console.print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
