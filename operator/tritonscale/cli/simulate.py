"""`tritonscale simulate`: autoscalers against a simulated Triton fleet, as a table, JSON and a plot."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tritonscale.sim.engine import SimEnvironment, SimResult
from tritonscale.sim.policies import POLICIES, Objective
from tritonscale.sim.runner import Scenario, run_scenario
from tritonscale.sim.workloads import BUILT_IN, Workload, built_in, from_trace


def _policy_list(values: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for value in values:
        for raw in value.split(","):
            name = raw.strip()
            if name == "all":
                names.extend(POLICIES)
            elif name:
                if name not in POLICIES:
                    raise click.BadParameter(
                        f"unknown policy {name!r}; choose from {', '.join(POLICIES)} or all"
                    )
                names.append(name)
    return list(dict.fromkeys(names)) or ["latency"]


def result_record(result: SimResult, scenario: Scenario, oracle_hours: float | None) -> dict[str, Any]:
    """One policy's outcome with everything needed to reproduce it."""
    record: dict[str, Any] = dict(result.summary())
    if oracle_hours:
        record["replica_hours_vs_oracle"] = round(result.replica_hours / oracle_hours, 4)
    record["workload"] = {
        "name": scenario.workload.name,
        "duration_s": scenario.workload.duration_s,
        "mean_rps": round(scenario.workload.mean_rate_rps, 3),
        "seed": scenario.seed,
    }
    record["objective"] = {
        "target_ms": scenario.objective.target_ms,
        "percentile": scenario.objective.percentile,
    }
    record["environment"] = {
        **dataclasses.asdict(scenario.env),
        "controller_period_s": scenario.period_s,
        "latency_metrics": scenario.latency_source,
    }
    return record


def results_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in (
        "policy",
        "attain",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "rep-h",
        "/oracle",
        "actions",
        "flaps/h",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right", no_wrap=True)

    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in records:
        table.add_row(
            r["policy"],
            f"{100 * r['slo_attainment']:.2f} %",
            number(r["p50_ms"]),
            number(r["p95_ms"]),
            number(r["p99_ms"]),
            f"{r['replica_hours']:.2f}",
            number(r.get("replica_hours_vs_oracle"), 2),
            str(r["scale_actions"]),
            f"{r['flaps_per_hour']:.2f}",
        )
    return table


def plot_results(results: list[SimResult], scenario: Scenario, path: Path) -> None:
    """Load, replicas and latency against the objective over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = scenario.workload.duration_s
    bin_s = max(10.0, duration / 600)
    edges = np.arange(0.0, duration + bin_s, bin_s)
    centers_min = (edges[:-1] + bin_s / 2) / 60.0
    figure, (load_axis, replica_axis, latency_axis) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    arrivals = results[0].arrivals
    counts, _ = np.histogram(arrivals, bins=edges)
    load_axis.plot(centers_min, counts / bin_s, color="black", linewidth=1)
    load_axis.set_ylabel("arrivals (req/s)")
    load_axis.set_title(
        f"{scenario.workload.name}: p{scenario.objective.percentile:g} objective "
        f"{scenario.objective.target_ms:g} ms, seed {scenario.seed}"
    )
    index = np.digitize(arrivals, edges) - 1
    for result in results:
        changes = result.timeline.provisioned_changes
        times = [t / 60.0 for t, _ in changes] + [duration / 60.0]
        counts_over_time = [n for _, n in changes] + [changes[-1][1]]
        replica_axis.step(times, counts_over_time, where="post", label=result.policy, linewidth=1.2)
        quantiles = np.full(len(edges) - 1, np.nan)
        for bucket in range(len(edges) - 1):
            chosen = result.latencies_s[index == bucket]
            if chosen.size:
                value = float(np.percentile(chosen, scenario.objective.percentile, method="inverted_cdf"))
                quantiles[bucket] = 1000.0 * value if math.isfinite(value) else np.nan
        latency_axis.plot(centers_min, quantiles, label=result.policy, linewidth=1)
    latency_axis.axhline(scenario.objective.target_ms, color="red", linestyle="--", label="objective")
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel(f"p{scenario.objective.percentile:g} latency (ms)")
    latency_axis.set_xlabel("time (minutes)")
    replica_axis.set_ylabel("replicas (provisioned)")
    replica_axis.legend(loc="upper left", ncol=4, fontsize=8)
    latency_axis.legend(loc="upper left", ncol=4, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@click.command()
@click.option(
    "--policy",
    "policies",
    multiple=True,
    default=("latency",),
    show_default=True,
    help=f"Policies to compare (comma-separated or repeated): {', '.join(POLICIES)}, or all.",
)
@click.option(
    "--workload",
    type=click.Choice(BUILT_IN),
    default="diurnal",
    show_default=True,
    help="A built-in workload (ignored with --trace).",
)
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with header time_s,rate_rps (and optionally cv); each rate holds until the next row.",
)
@click.option("--duration-s", type=click.FloatRange(min=60), default=4 * 3600.0, show_default=True)
@click.option(
    "--mean-rps",
    type=click.FloatRange(min=0.1),
    default=1000.0,
    show_default=True,
    help="Mean arrival rate of a built-in workload.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--slo-ms", type=click.FloatRange(min=0.1), default=100.0, show_default=True)
@click.option("--percentile", type=click.FloatRange(50, 99.9), default=95.0, show_default=True)
@click.option(
    "--base-ms",
    type=click.FloatRange(min=0.01),
    default=20.0,
    show_default=True,
    help="Service time of a batch: base-ms + per-item-ms * batch size.",
)
@click.option("--per-item-ms", type=click.FloatRange(min=0), default=3.0, show_default=True)
@click.option("--max-batch", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option(
    "--cold-start-s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Time from scale-up to a serving replica.",
)
@click.option("--scrape-interval-s", type=click.FloatRange(min=1), default=15.0, show_default=True)
@click.option("--metric-lag-s", type=click.FloatRange(min=0), default=5.0, show_default=True)
@click.option(
    "--period-s",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Controller period of the latency policy.",
)
@click.option(
    "--latency-metrics",
    type=click.Choice(["triton", "prometheus"]),
    default="triton",
    show_default=True,
    help="Where the latency policy reads metrics: each replica's Triton, or Prometheus (scrape + lag).",
)
@click.option("--max-replicas", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write results as JSON ('-' for stdout).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of load, replicas and latency over time.",
)
def simulate(
    policies: tuple[str, ...],
    workload: str,
    trace: Path | None,
    duration_s: float,
    mean_rps: float,
    seed: int,
    slo_ms: float,
    percentile: float,
    base_ms: float,
    per_item_ms: float,
    max_batch: int,
    cold_start_s: float,
    scrape_interval_s: float,
    metric_lag_s: float,
    period_s: float,
    latency_metrics: str,
    max_replicas: int,
    json_path: str | None,
    plot_path: Path | None,
) -> None:
    """Replay a workload against simulated Triton replicas under each autoscaling policy.

    Every policy sees the same requests. Replicas batch dynamically (service time base-ms +
    per-item-ms x batch), new ones serve after the cold start, and Prometheus-fed policies (hpa,
    keda) see metrics a scrape interval and a lag late. The latency policy is the operator's own
    code, reading Triton's statistics each period (or Prometheus, with --latency-metrics).
    """
    names = _policy_list(policies)
    try:
        chosen: Workload = (
            from_trace(trace, duration_s) if trace else built_in(workload, duration_s, mean_rps, seed)
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--trace" if trace else "--workload") from error
    env = SimEnvironment(
        base_ms=base_ms,
        per_item_ms=per_item_ms,
        max_batch=max_batch,
        cold_start_s=cold_start_s,
        scrape_interval_s=scrape_interval_s,
        metric_lag_s=metric_lag_s,
        max_replicas=max_replicas,
    )
    scenario = Scenario(chosen, seed, env, Objective(slo_ms, percentile), period_s, latency_metrics)
    console = Console(stderr=True)
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("measuring capacity (for the oracle)", total=len(names))
        done = 0

        def on_start(name: str) -> None:
            nonlocal done
            progress.update(task, description=f"simulating {name}", completed=done)
            done += 1

        results = run_scenario(scenario, names, on_start=on_start)
        progress.update(task, completed=len(names))
    elapsed = time.perf_counter() - started
    oracle = next((r for r in results if r.policy == "oracle"), None)
    records = [result_record(r, scenario, oracle.replica_hours if oracle else None) for r in results]
    title = (
        f"{chosen.name}, {chosen.duration_s / 3600:g} h, mean {chosen.mean_rate_rps:.0f} req/s, "
        f"p{percentile:g} <= {slo_ms:g} ms ({elapsed:.1f} s)"
    )
    Console(stderr=json_path == "-", width=max(Console().width, 100)).print(results_table(records, title))
    if json_path:
        payload = json.dumps(records[0] if len(records) == 1 else records, indent=2)
        if json_path == "-":
            sys.stdout.write(payload + "\n")
        else:
            Path(json_path).write_text(payload + "\n")
    if plot_path:
        plot_results(results, scenario, plot_path)
        console.print(f"plot written to {plot_path}")
