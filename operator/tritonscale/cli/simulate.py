"""`tritonscale simulate`: autoscalers against a simulated Triton fleet, as a table, JSON and a plot."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tritonscale.api.spec import MODEL_NAME_PATTERN, CapacitySpec
from tritonscale.cli.options import writable_output
from tritonscale.policy.variants import Variant
from tritonscale.sim.engine import SimEnvironment, SimResult
from tritonscale.sim.policies import POLICIES, TUNABLE, Objective, parse_policy_name, steady_variant_of
from tritonscale.sim.runner import Scenario, run_scenario, run_spot_scenario
from tritonscale.sim.spot import BANDS, STRATEGIES, STRESSED_SCALE, SpotMarket, spot_capacity
from tritonscale.sim.workloads import BUILT_IN, TraceTooShort, Workload, built_in, from_trace

DEFAULT_DURATION_S = 4 * 3600.0  # how long a built-in workload runs unless told


def _variant(value: str) -> tuple[str, float, float]:
    """'int8:0.99:2' -> ('int8', 0.99, 2.0), or a usage error naming --variant."""
    name, accuracy, speedup = ([*value.split(":"), "", ""])[:3]
    try:
        parsed = (name, float(accuracy), float(speedup))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected NAME:ACCURACY:SPEEDUP, e.g. int8:0.99:2", param_hint="--variant"
        ) from None
    if not name or value.count(":") != 2:
        raise click.BadParameter(
            f"{value!r}: expected NAME:ACCURACY:SPEEDUP, e.g. int8:0.99:2", param_hint="--variant"
        )
    if not re.match(MODEL_NAME_PATTERN, name):
        raise click.BadParameter(
            f"{value!r}: a variant's name is a model name (letters, digits, '_', '.', '-'), as in "
            "spec.model.variants",
            param_hint="--variant",
        )
    if not 0.0 < parsed[1] <= 1.0:
        raise click.BadParameter(
            f"{value!r}: accuracy relative to the model is in (0, 1]", param_hint="--variant"
        )
    if not math.isfinite(parsed[1]) or not math.isfinite(parsed[2]):
        raise click.BadParameter(f"{value!r}: accuracy and speedup must be numbers", param_hint="--variant")
    if parsed[2] <= 1.0:
        raise click.BadParameter(
            f"{value!r}: a variant must be faster than the model (speedup > 1)", param_hint="--variant"
        )
    return parsed


def _policy_list(values: tuple[str, ...], variants: tuple[str, ...]) -> list[str]:
    """The policies asked for, each checked; `variants` are the --variant names."""
    names: list[str] = []
    for value in values:
        for raw in value.split(","):
            name = raw.strip()
            if name == "all":
                names.extend(p for p in POLICIES if variants or p != "latency-variants")
            elif name:
                try:
                    parse_policy_name(name)
                except ValueError as error:
                    message = f"{error}; or all" if name.partition("@")[0] not in POLICIES else str(error)
                    raise click.BadParameter(message, param_hint="--policy") from None
                if name.startswith("latency-variants") and not variants:
                    raise click.BadParameter(
                        f"{name} needs the model's variants: --variant NAME:ACCURACY:SPEEDUP",
                        param_hint="--policy",
                    )
                steady = steady_variant_of(name)
                if steady is not None and steady not in variants:
                    raise click.BadParameter(
                        f"{name}: {steady!r} is not one of the --variant names ({', '.join(variants)})",
                        param_hint="--policy",
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
        "feed": scenario.feed,
    }
    return record


def spot_records(
    results: list[SimResult], scenario: Scenario, capacity: CapacitySpec, market: SpotMarket
) -> list[dict[str, Any]]:
    """Records of a --spot run: each policy's strategies, with cost and attainment relative to
    the same policy on on-demand capacity only."""
    baseline = {r.policy: r for r in results if r.capacity is not None and r.capacity.strategy == "on-demand"}
    records = []
    for result in results:
        record = result_record(result, scenario, None)
        reference = baseline.get(result.policy)
        if reference is not None and reference.capacity is not None and result.capacity is not None:
            record["cost_vs_on_demand_only"] = round(result.capacity.cost / reference.capacity.cost, 4)
            record["attainment_vs_on_demand_only_points"] = round(
                100 * (result.slo_attainment - reference.slo_attainment), 4
            )
        record["spot_market"] = market.describe()
        record["capacity"] = {
            "on_demand_base": capacity.on_demand_base,
            "spot_max_fraction": capacity.spot.max_fraction,
            "fallback_after_s": capacity.spot.fallback_after_seconds,
        }
        records.append(record)
    return records


def spot_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in (
        "policy",
        "capacity",
        "attain",
        "vs OD pts",
        "p99 ms",
        "OD rep-h",
        "spot rep-h",
        "cost",
        "x OD-only",
        "reclaims",
        "outages",
        "stand-in min",
    ):
        table.add_column(
            column, justify="left" if column in ("policy", "capacity") else "right", no_wrap=True
        )
    for r in records:
        table.add_row(
            r["policy"],
            r["capacity_strategy"],
            f"{100 * r['slo_attainment']:.2f} %",
            f"{r.get('attainment_vs_on_demand_only_points', 0.0):+.2f}",
            "timeouts" if r["p99_ms"] is None else f"{r['p99_ms']:.0f}",
            f"{r['replica_hours_on_demand']:.2f}",
            f"{r['replica_hours_spot']:.2f}",
            f"{r['cost']:.2f}",
            f"{r.get('cost_vs_on_demand_only', 1.0):.3f}",
            str(r["reclaims"]),
            str(r["pool_outages"]),
            f"{r['stand_in_s'] / 60:.1f}",
        )
    return table


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
    variants = any("served_accuracy" in r for r in records)
    if variants:
        for column in ("variant share", "accuracy", "worst hour"):
            table.add_column(column, justify="right", no_wrap=True)

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
            *(
                (
                    f"{100 * r['variant_share']:.2f} %",
                    f"{r['served_accuracy']:.4f}",
                    f"{r['worst_window_accuracy']:.4f}",
                )
                if variants
                else ()
            ),
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


def plot_spot_results(results: list[SimResult], scenario: Scenario, path: Path) -> None:
    """Load, then replicas by capacity type for each strategy (spot outages shaded), then latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = scenario.workload.duration_s
    bin_s = max(10.0, duration / 600)
    edges = np.arange(0.0, duration + bin_s, bin_s)
    centers_min = (edges[:-1] + bin_s / 2) / 60.0
    rows = 2 + len(results)
    figure, axes = plt.subplots(rows, 1, figsize=(12, 2.2 * rows + 1), sharex=True)
    load_axis, latency_axis = axes[0], axes[-1]
    arrivals = results[0].arrivals
    counts, _ = np.histogram(arrivals, bins=edges)
    load_axis.plot(centers_min, counts / bin_s, color="black", linewidth=1)
    load_axis.set_ylabel("arrivals (req/s)")
    load_axis.set_title(
        f"{scenario.workload.name}: p{scenario.objective.percentile:g} objective "
        f"{scenario.objective.target_ms:g} ms, seed {scenario.seed}"
    )
    index = np.digitize(arrivals, edges) - 1
    top = max((max(c[1] + c[2] + c[3] for c in r.capacity.changes) for r in results if r.capacity), default=1)
    for axis, result in zip(axes[1:-1], results, strict=True):
        report = result.capacity
        assert report is not None
        times = [c[0] / 60.0 for c in report.changes] + [duration / 60.0]
        last = report.changes[-1]
        on_demand, spot, pending, stand_ins = (
            [c[1] for c in report.changes] + [last[1]],
            [c[2] for c in report.changes] + [last[2]],
            [c[3] for c in report.changes] + [last[3]],
            [c[4] for c in report.changes] + [last[4]],
        )
        axis.stackplot(
            times,
            on_demand,
            spot,
            step="post",
            labels=["on-demand (incl. stand-ins)", "spot"],
            colors=["#4c72b0", "#dd8452"],
            alpha=0.85,
        )
        axis.step(
            times, stand_ins, where="post", color="#1b3a6b", linestyle="--", linewidth=1, label="stand-ins"
        )
        axis.step(
            times,
            [a + b + c for a, b, c in zip(on_demand, spot, pending, strict=True)],
            where="post",
            color="#c44e52",
            linewidth=0.8,
            label="+ unschedulable spot pods",
        )
        for start, end in report.outages:
            axis.axvspan(start / 60.0, min(end, duration) / 60.0, color="grey", alpha=0.2, linewidth=0)
        axis.set_ylim(0, top * 1.15 + 1)
        axis.set_ylabel("replicas")
        cost = f"cost {report.cost:.1f}, {report.reclaims} reclaims, {report.pool_outages} outages (grey)"
        axis.set_title(f"{result.policy} / {report.strategy}: {cost}", fontsize=9, loc="left")
        axis.legend(loc="upper left", ncol=4, fontsize=7)
        quantiles = np.full(len(edges) - 1, np.nan)
        for bucket in range(len(edges) - 1):
            chosen = result.latencies_s[index == bucket]
            if chosen.size:
                value = float(np.percentile(chosen, scenario.objective.percentile, method="inverted_cdf"))
                quantiles[bucket] = 1000.0 * value if math.isfinite(value) else np.nan
        latency_axis.plot(centers_min, quantiles, label=f"{result.policy} / {report.strategy}", linewidth=1)
    latency_axis.axhline(scenario.objective.target_ms, color="red", linestyle="--", label="objective")
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel(f"p{scenario.objective.percentile:g} latency (ms)")
    latency_axis.set_xlabel("time (minutes)")
    latency_axis.legend(loc="upper left", ncol=4, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


SPOT_OPTIONS = (
    "spot_band",
    "interruption_scale",
    "spot_notice_s",
    "spot_discount",
    "pool_loss_share",
    "outage_median_s",
    "on_demand_base",
    "spot_max_fraction",
    "fallback_after_s",
)


@click.command()
@click.option(
    "--policy",
    "policies",
    multiple=True,
    default=("latency",),
    show_default=True,
    help=(
        f"Policies to compare (comma-separated or repeated): {', '.join(POLICIES)}, or all; "
        f"{', '.join(TUNABLE)} take a utilisation after '@' (hpa-rps@0.6)."
    ),
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
@click.option(
    "--duration-s",
    type=click.FloatRange(min=60),
    default=None,
    help="Simulated seconds. Default: 4 h for a built-in workload, the trace's own length for --trace "
    "(a longer one is refused).",
)
@click.option(
    "--mean-rps",
    type=click.FloatRange(min=0.1),
    default=1000.0,
    show_default=True,
    help="Mean arrival rate of a built-in workload.",
)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
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
    "--feed",
    type=click.Choice(["prometheus", "fresh"]),
    default="prometheus",
    show_default=True,
    help=(
        "Where every policy reads its metrics (equal information): Prometheus (rates over 30 s, "
        "scraped every --scrape-interval-s, --metric-lag-s late) or fresh (the last 10 s, read "
        "directly, as the operator reads each Triton replica's statistics)."
    ),
)
@click.option("--max-replicas", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option(
    "--spot",
    is_flag=True,
    help="Compare capacity strategies for each policy: on-demand only, a static spot mix "
    "(no fallback) and the operator's spot fallback, on a simulated spot market.",
)
@click.option(
    "--spot-band",
    type=click.Choice(list(BANDS)),
    default="10-15",
    show_default=True,
    help="AWS Spot Advisor interruption band (% of instances per month); its midpoint, 25 for >20.",
)
@click.option(
    "--interruption-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help=f"Multiplies every interruption rate: 1 is the band's honest rate; {STRESSED_SCALE:g} "
    "puts a year of interruptions in every hour (the benchmark's stressed market).",
)
@click.option(
    "--spot-notice-s",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Interruption notice: 120 on AWS, 30 on GCP and Azure.",
)
@click.option(
    "--spot-discount",
    type=click.FloatRange(0.6, 0.9),
    default=0.7,
    show_default=True,
    help="Spot's discount on the on-demand price (on-demand is 1.0 per replica-hour).",
)
@click.option(
    "--pool-loss-share",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of interruptions that take the whole spot pool at once (and leave it without capacity).",
)
@click.option(
    "--outage-median-s",
    type=click.FloatRange(min=1),
    default=1800.0,
    show_default=True,
    help="Median time the spot pool stays without capacity after a pool-wide loss (log-normal, sigma 1.2).",
)
@click.option("--on-demand-base", type=click.IntRange(0, 1000), default=1, show_default=True)
@click.option(
    "--spot-max-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.75,
    show_default=True,
)
@click.option(
    "--fallback-after-s",
    type=click.IntRange(0, 3600),
    default=60,
    show_default=True,
    help="capacity.spot.fallbackAfterSeconds of the spot-fallback strategy.",
)
@click.option(
    "--variant",
    "variant_specs",
    multiple=True,
    callback=lambda _context, _param, values: tuple(_variant(value) for value in values),
    metavar="NAME:ACCURACY:SPEEDUP",
    help="A faster variant every replica serves next to the model (repeatable): its accuracy "
    "relative to the model's and how many times faster it runs a batch (int8:0.99:2). "
    "latency-variants@POINTS uses them within an accuracy budget of POINTS (default 1); "
    "latency-variants@POINTS:SPEND also spends that fraction of the budget all the time "
    "(spec.autoscaling.accuracy.steadySpend), and latency-variants@POINTS:SPEND=NAME spends it "
    "on variant NAME (steadyVariant; else on the one that saves the most).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    callback=writable_output,
    help="Write results as JSON, a list with one object per policy ('-' for stdout).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable_output,
    help="Write a PNG of load, replicas and latency over time.",
)
def simulate(
    policies: tuple[str, ...],
    workload: str,
    trace: Path | None,
    duration_s: float | None,
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
    feed: str,
    max_replicas: int,
    spot: bool,
    spot_band: str,
    interruption_scale: float,
    spot_notice_s: float,
    spot_discount: float,
    pool_loss_share: float,
    outage_median_s: float,
    on_demand_base: int,
    spot_max_fraction: float,
    fallback_after_s: int,
    variant_specs: tuple[tuple[str, float, float], ...],
    json_path: str | None,
    plot_path: Path | None,
) -> None:
    """Replay a workload against simulated Triton replicas under each autoscaling policy.

    Every policy sees the same requests and the same metric feed. Replicas batch dynamically
    (service time base-ms + per-item-ms x batch) and new ones serve after the cold start. The
    latency policy is the operator's own code. Tunable baselines (hpa-rps, hpa-inflight, keda-rps,
    keda-queue, kpa, kpa-delay, ray-tuned) take a target utilisation after '@' (hpa-rps@0.6;
    default 0.7) of what one replica carries at the objective in a load test.

    With --spot, each policy runs three times: on on-demand capacity only, on a static spot mix
    (capacity.onDemandBase, then at most --spot-max-fraction on spot), and with the operator's
    spot fallback, on a spot market that reclaims replicas at the band's rate; the table adds
    replica-hours by capacity type, cost relative to on-demand only, reclaims and stand-in time.
    """
    context = click.get_current_context()
    stray = [
        name for name in SPOT_OPTIONS if context.get_parameter_source(name) == ParameterSource.COMMANDLINE
    ]
    if stray and not spot:
        raise click.UsageError(f"--{stray[0].replace('_', '-')} only applies with --spot")
    names = _policy_list(policies, tuple(name for name, _, _ in variant_specs))
    try:
        chosen: Workload = (
            from_trace(trace, duration_s)
            if trace
            else built_in(
                workload, duration_s if duration_s is not None else DEFAULT_DURATION_S, mean_rps, seed
            )
        )
    except ValueError as error:
        blamed = "--duration-s" if isinstance(error, TraceTooShort) else "--trace" if trace else "--workload"
        raise click.BadParameter(str(error), param_hint=blamed) from error
    if variant_specs and spot:
        raise click.UsageError("--variant does not combine with --spot in the simulator")
    env = SimEnvironment(
        base_ms=base_ms,
        per_item_ms=per_item_ms,
        max_batch=max_batch,
        cold_start_s=cold_start_s,
        scrape_interval_s=scrape_interval_s,
        metric_lag_s=metric_lag_s,
        max_replicas=max_replicas,
        variants=tuple(Variant(name, accuracy, speedup) for name, accuracy, speedup in variant_specs),
    )
    scenario = Scenario(chosen, seed, env, Objective(slo_ms, percentile), period_s, feed)
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
        runs = len(names) * (len(STRATEGIES) if spot else 1)
        task = progress.add_task("measuring capacity (for the oracle)", total=runs)
        done = 0

        def on_start(name: str) -> None:
            nonlocal done
            progress.update(task, description=f"simulating {name}", completed=done)
            done += 1

        capacity = spot_capacity(on_demand_base, spot_max_fraction, fallback_after_s)
        market = SpotMarket(
            interruptions_per_month=BANDS[spot_band],
            interruption_scale=interruption_scale,
            notice_s=spot_notice_s,
            pool_share=pool_loss_share,
            outage_median_s=outage_median_s,
            discount=spot_discount,
            seed=seed,
        )
        if spot:
            results = run_spot_scenario(scenario, names, capacity, market, on_start=on_start)
        else:
            results = run_scenario(scenario, names, on_start=on_start)
        progress.update(task, completed=runs)
    elapsed = time.perf_counter() - started
    title = (
        f"{chosen.name}, {chosen.duration_s / 3600:g} h, mean {chosen.mean_rate_rps:.0f} req/s, "
        f"p{percentile:g} <= {slo_ms:g} ms ({elapsed:.1f} s)"
    )
    if spot:
        records = spot_records(results, scenario, capacity, market)
        title += (
            f"; spot band {spot_band} % x{interruption_scale:g}, notice {spot_notice_s:g} s, "
            f"discount {100 * spot_discount:g} %"
        )
        table = spot_table(records, title)
    else:
        oracle = next((r for r in results if r.policy == "oracle"), None)
        records = [result_record(r, scenario, oracle.replica_hours if oracle else None) for r in results]
        table = results_table(records, title)
    Console(stderr=json_path == "-", width=max(Console().width, 150 if spot or variant_specs else 100)).print(
        table
    )
    if json_path:
        payload = json.dumps(records, indent=2)
        if json_path == "-":
            sys.stdout.write(payload + "\n")
        else:
            Path(json_path).write_text(payload + "\n")
    if plot_path:
        (plot_spot_results if spot else plot_results)(results, scenario, plot_path)
        console.print(f"plot written to {plot_path}")
