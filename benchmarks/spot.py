"""Spot capacity: on-demand only vs a static spot mix vs the operator's spot fallback, with the
latency autoscaler, on every AWS Spot Advisor interruption band x notice, on the built-in workloads.

    .venv/bin/python benchmarks/spot.py                    # the figures quoted in README.md
    .venv/bin/python benchmarks/spot.py --duration-s 3600  # half as long (each run 1 h)
    .venv/bin/python benchmarks/spot.py --quick            # smoke: 1 seed, 30 min, band 10-15

Each of the four built-in workloads (mean 1000 req/s, p95 objective 100 ms, 30 s cold start)
with the held-out test seeds 4-6 runs once on on-demand capacity only, then with a static spot
mix and with the spot fallback (capacity.onDemandBase 1, maxFraction 0.75, fallbackAfterSeconds
60, spot at a 70 % discount) on a spot market per band (<5 .. >20 % of instances interrupted per
month) x notice (120 s as on AWS, 30 s as on GCP and Azure), at two market intensities:
- honest: the band's own rate (a 2 h run almost never sees an interruption);
- stressed: every rate x8760, a year of the band's interruptions in each hour, so that pool
  outages happen often enough to measure (sim.spot explains the numbers and their sources).
Each workload and seed draws its own market, which every strategy, band and notice shares
(common random numbers). A run whose market draws no event at all is the same run for every
band and notice (the same arrivals, no reclaim): it is simulated once per workload and seed.

Writes benchmarks/results/spot.json (summary and every run) and benchmarks/results/spot.png
(cost vs attainment per band, both intensities) and prints the tables; runs on all cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tritonscale.sim.engine import SimEnvironment, SimResult
from tritonscale.sim.policies import Objective
from tritonscale.sim.runner import Scenario, prepare, run_capacity
from tritonscale.sim.spot import BANDS, NOTICES_S, STRESSED_SCALE, SpotMarket, spot_capacity
from tritonscale.sim.workloads import BUILT_IN, built_in

# The four workloads the spot results were measured on; `recurring` needs 2 h runs to be proven
# (benchmarks/forecast.py), and its spot behaviour is that of any surge.
WORKLOADS = tuple(w for w in BUILT_IN if w != "recurring")

RESULTS = Path(__file__).parent / "results" / "spot.json"
PLOT = RESULTS.parent / "spot.png"
SEEDS = (4, 5, 6)
SCALES = {"honest": 1.0, "stressed": STRESSED_SCALE}
SPOT_STRATEGIES = ("spot-static", "spot-fallback")
TARGET_BAND = "10-15"
TARGET = (
    "spot-fallback at the 10-15 % band: >= 40 % cheaper than on-demand only with <= 0.5 points "
    "lower SLO attainment"
)
COLUMNS = (
    "workload",
    "seed",
    "intensity",
    "band",
    "notice_s",
    "strategy",
    "slo_attainment",
    "dropped",
    "p99_ms",
    "replica_hours_on_demand",
    "replica_hours_spot",
    "replica_hours_stand_in",
    "cost",
    "cost_vs_on_demand_only",
    "attainment_vs_on_demand_only_points",
    "reclaims",
    "pool_outages",
    "spot_unavailable_s",
    "stand_in_s",
)


def _row(
    result: SimResult,
    reference: SimResult,
    workload: str,
    seed: int,
    intensity: str,
    band: str,
    notice: float,
) -> list[Any]:
    report, base = result.capacity, reference.capacity
    assert report is not None and base is not None
    return [
        workload,
        seed,
        intensity,
        band,
        notice,
        report.strategy,
        round(result.slo_attainment, 6),
        result.dropped,
        round(result.p99_ms, 1) if result.p99_ms < 1e9 else None,
        round(report.on_demand_replica_hours, 4),
        round(report.spot_replica_hours, 4),
        round(report.stand_in_replica_hours, 4),
        round(report.cost, 4),
        round(report.cost / base.cost, 4),
        round(100 * (result.slo_attainment - reference.slo_attainment), 4),
        report.reclaims,
        report.pool_outages,
        round(report.spot_unavailable_s, 1),
        round(report.stand_in_s, 1),
    ]


def run_job(job: tuple[str, int, float, float, tuple[str, ...]]) -> tuple[list[list[Any]], int, float]:
    """One workload and seed: on-demand only, then both spot strategies on every market."""
    workload_name, seed, duration_s, mean_rps, bands = job
    started = time.perf_counter()
    scenario = Scenario(
        built_in(workload_name, duration_s, mean_rps, seed), seed, SimEnvironment(), Objective(100.0, 95.0)
    )
    prepared = prepare(scenario)
    capacity = spot_capacity(on_demand_base=1, max_fraction=0.75, fallback_after_s=60)
    # Each workload and seed draws its own market; strategies, bands and notices share it.
    market_seed = 1000 * seed + BUILT_IN.index(workload_name)
    calm = SpotMarket(interruption_scale=0.0, seed=market_seed)

    def run(strategy: str, market: SpotMarket) -> SimResult:
        return run_capacity(prepared, scenario, "latency", strategy, capacity, market)

    reference = run("on-demand", calm)
    rows = [_row(reference, reference, workload_name, seed, "-", "-", 0.0)]
    eventless = {strategy: run(strategy, calm) for strategy in SPOT_STRATEGIES}
    simulated = 3
    max_spot = scenario.env.max_replicas
    for intensity, scale in SCALES.items():
        for band in bands:
            for notice in NOTICES_S.values():
                market = SpotMarket(BANDS[band], interruption_scale=scale, notice_s=notice, seed=market_seed)
                timeline = market.timeline(duration_s, max(max_spot, prepared.initial))
                quiet = not timeline.outages and not timeline.candidates
                for strategy in SPOT_STRATEGIES:
                    if quiet:
                        result = eventless[strategy]
                    else:
                        result = run(strategy, market)
                        simulated += 1
                    rows.append(_row(result, reference, workload_name, seed, intensity, band, notice))
    return rows, simulated, time.perf_counter() - started


def summarize(rows: list[dict[str, Any]], bands: tuple[str, ...]) -> dict[str, Any]:
    """intensity -> band -> notice -> strategy -> figures over every workload and seed."""
    reference = {(r["workload"], r["seed"]): r for r in rows if r["strategy"] == "on-demand"}
    on_demand_cost = sum(r["cost"] for r in reference.values())
    summary: dict[str, Any] = {
        "on-demand": {
            "slo_attainment": statistics.mean(r["slo_attainment"] for r in reference.values()),
            "cost_vs_on_demand_only": 1.0,
            "runs": len(reference),
        }
    }
    for intensity in SCALES:
        summary[intensity] = {}
        for band in bands:
            summary[intensity][band] = {}
            for notice in NOTICES_S.values():
                figures = {}
                for strategy in SPOT_STRATEGIES:
                    runs = [
                        r
                        for r in rows
                        if (r["intensity"], r["band"], r["notice_s"], r["strategy"])
                        == (intensity, band, notice, strategy)
                    ]
                    if not runs:
                        continue
                    hours = sum(r["replica_hours_on_demand"] + r["replica_hours_spot"] for r in runs)
                    figures[strategy] = {
                        "slo_attainment": statistics.mean(r["slo_attainment"] for r in runs),
                        "attainment_vs_on_demand_only_points": statistics.mean(
                            r["attainment_vs_on_demand_only_points"] for r in runs
                        ),
                        "worst_run_points": min(r["attainment_vs_on_demand_only_points"] for r in runs),
                        "cost_vs_on_demand_only": sum(r["cost"] for r in runs) / on_demand_cost,
                        "spot_share_of_replica_hours": sum(r["replica_hours_spot"] for r in runs) / hours,
                        "stand_in_replica_hours_per_run": statistics.mean(
                            r["replica_hours_stand_in"] for r in runs
                        ),
                        "reclaims_per_run": statistics.mean(r["reclaims"] for r in runs),
                        "pool_outages": sum(r["pool_outages"] for r in runs),
                        "spot_unavailable_share": sum(r["spot_unavailable_s"] for r in runs)
                        / sum(3600.0 * r["duration_h"] for r in runs),
                        "stand_in_minutes_per_run": statistics.mean(r["stand_in_s"] / 60.0 for r in runs),
                        "runs": len(runs),
                        "runs_with_outage": sum(1 for r in runs if r["pool_outages"]),
                    }
                    for label, chosen in (
                        ("with_outage", [r for r in runs if r["pool_outages"]]),
                        ("without_outage", [r for r in runs if not r["pool_outages"]]),
                    ):
                        if chosen:
                            figures[strategy][label] = {
                                "cost_vs_on_demand_only": sum(r["cost"] for r in chosen)
                                / sum(reference[(r["workload"], r["seed"])]["cost"] for r in chosen),
                                "attainment_vs_on_demand_only_points": statistics.mean(
                                    r["attainment_vs_on_demand_only_points"] for r in chosen
                                ),
                            }
                summary[intensity][band][f"{notice:g}s"] = figures
    return summary


def verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The target at the 10-15 % band, for each intensity and notice."""
    found: dict[str, dict[str, Any]] = {}
    for intensity in SCALES:
        for notice, figures in summary[intensity].get(TARGET_BAND, {}).items():
            fallback = figures.get("spot-fallback")
            if fallback is None:
                continue
            cheaper = 1.0 - fallback["cost_vs_on_demand_only"]
            lower = -fallback["attainment_vs_on_demand_only_points"]
            found[f"{intensity} {notice}"] = {
                "cheaper_than_on_demand_only": round(cheaper, 4),
                "attainment_points_lower": round(lower, 4),
                "met": cheaper >= 0.40 and lower <= 0.5,
            }
    return found


def print_tables(summary: dict[str, Any], console: Console) -> None:
    od = summary["on-demand"]
    console.print(
        f"on-demand only: attainment {100 * od['slo_attainment']:.3f} % (mean of {od['runs']} runs), cost 1.000"
    )
    for intensity in SCALES:
        table = Table(
            title=f"{intensity} market: mean over workloads and seeds, cost relative to on-demand only"
        )
        for column in (
            "band",
            "notice",
            "strategy",
            "cost x OD",
            "attainment",
            "vs OD pts",
            "worst run pts",
            "reclaims/run",
            "outages (runs)",
            "spot down",
            "stand-in min/run",
        ):
            table.add_column(column, justify="left" if column in ("band", "strategy") else "right")
        for band, notices in summary[intensity].items():
            for notice, strategies in notices.items():
                for strategy, f in strategies.items():
                    table.add_row(
                        band,
                        notice,
                        strategy,
                        f"{f['cost_vs_on_demand_only']:.3f}",
                        f"{100 * f['slo_attainment']:.3f} %",
                        f"{f['attainment_vs_on_demand_only_points']:+.3f}",
                        f"{f['worst_run_points']:+.2f}",
                        f"{f['reclaims_per_run']:.1f}",
                        f"{f['pool_outages']} ({f['runs_with_outage']})",
                        f"{100 * f['spot_unavailable_share']:.1f} %",
                        f"{f['stand_in_minutes_per_run']:.1f}",
                    )
        console.print(table)


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| market | band | notice | static: cost | static: attainment | fallback: cost | fallback: attainment |",
        "|---|---|---|---|---|---|---|",
    ]
    for intensity in SCALES:
        for band, notices in summary[intensity].items():
            for notice, s in notices.items():
                static, fallback = s["spot-static"], s["spot-fallback"]
                lines.append(
                    f"| {intensity} | {band} % | {notice} | {static['cost_vs_on_demand_only']:.2f} | "
                    f"{static['attainment_vs_on_demand_only_points']:+.2f} pts | "
                    f"{fallback['cost_vs_on_demand_only']:.2f} | "
                    f"{fallback['attainment_vs_on_demand_only_points']:+.2f} pts |"
                )
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Cost against attainment for each band, notice and strategy; one panel per intensity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    od = summary["on-demand"]
    figure, axes = plt.subplots(1, len(SCALES), figsize=(7 * len(SCALES), 5.2))
    colors = dict(zip(BANDS, ("#2a9d8f", "#8ab17d", "#e9c46a", "#f4a261", "#e76f51"), strict=True))
    markers = {"spot-static": "x", "spot-fallback": "o"}
    for axis, intensity in zip(axes, SCALES, strict=True):
        lowest = 100 * od["slo_attainment"]
        for band, notices in summary[intensity].items():
            for notice, strategies in notices.items():
                for strategy, f in strategies.items():
                    y = 100 * f["slo_attainment"]
                    lowest = min(lowest, y)
                    axis.scatter(
                        [f["cost_vs_on_demand_only"]],
                        [y],
                        marker=markers[strategy],
                        s=55,
                        color=colors[band],
                        facecolors=colors[band] if notice == "120s" else "none",
                        zorder=3,
                    )
        axis.scatter([1.0], [100 * od["slo_attainment"]], marker="s", color="black", s=50, zorder=3)
        axis.annotate(
            "on-demand only",
            (1.0, 100 * od["slo_attainment"]),
            xytext=(-90, 6),
            textcoords="offset points",
            fontsize=8,
        )
        axis.axvline(0.6, color="grey", linestyle=":", linewidth=0.8)
        axis.axhline(100 * od["slo_attainment"] - 0.5, color="grey", linestyle=":", linewidth=0.8)
        axis.fill_between([0.3, 0.6], 100 * od["slo_attainment"] - 0.5, 100.2, color="#2a9d8f", alpha=0.07)
        axis.set_xlim(0.3, 1.05)
        axis.set_ylim(max(lowest - 1.0, 50), 100.1)
        axis.set_xlabel("cost relative to on-demand only")
        axis.set_ylabel("SLO attainment % (mean of runs)")
        scale = SCALES[intensity]
        fallbacks = [n["120s"]["spot-fallback"] for n in summary[intensity].values() if "120s" in n]
        outages = sum(f["pool_outages"] for f in fallbacks)
        reclaims = sum(f["reclaims_per_run"] * f["runs"] for f in fallbacks)
        axis.set_title(
            f"{intensity} market (rates x{scale:g}): {outages} pool outages, {reclaims:.0f} reclaims\n"
            f"over all bands' runs{' (so every point is the same)' if not reclaims else ''}",
            fontsize=10,
        )
        for band, color in colors.items():
            axis.scatter([], [], color=color, marker="s", label=f"band {band} %")
        axis.scatter([], [], color="grey", marker="o", label="spot-fallback (filled: 120 s notice)")
        axis.scatter([], [], color="grey", marker="o", facecolors="none", label="spot-fallback, 30 s notice")
        axis.scatter([], [], color="grey", marker="x", label="spot-static")
        axis.legend(loc="lower left", fontsize=7)
    figure.suptitle("Target (shaded): >= 40 % cheaper, <= 0.5 points lower attainment", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 minutes, band 10-15 only")
    parser.add_argument("--duration-s", type=float, default=7200.0)
    parser.add_argument("--mean-rps", type=float, default=1000.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--out",
        type=Path,
        help=f"the JSON (the PNG goes next to it); default {RESULTS}, with --quick a temp file",
    )
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON")
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "spot-quick.json" if args.quick else RESULTS
    if args.replot:
        plot(json.loads(args.out.read_text())["summary"], args.out.with_suffix(".png"))
        return
    seeds, duration, bands = (
        ((SEEDS[0],), 1800.0, (TARGET_BAND,)) if args.quick else (SEEDS, args.duration_s, tuple(BANDS))
    )
    jobs = [(w, seed, duration, args.mean_rps, bands) for w in WORKLOADS for seed in seeds]
    console = Console(stderr=True)
    console.print(
        f"{len(jobs)} workload x seed jobs, each on-demand + {len(SPOT_STRATEGIES)} strategies x {len(bands)} "
        f"bands x {len(NOTICES_S)} notices x {len(SCALES)} intensities, {duration / 3600:g} h each, "
        f"on {args.workers} workers ..."
    )
    started = time.perf_counter()
    raw: list[list[Any]] = []
    simulated = 0
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            rows, runs, took = future.result()
            raw.extend(rows)
            simulated += runs
            workload, seed = futures[future][:2]
            console.print(
                f"  {done}/{len(jobs)} {workload} seed {seed}: {runs} runs in {took:.0f}s "
                f"({time.perf_counter() - started:.0f}s elapsed)"
            )
    rows = [dict(zip(COLUMNS, row, strict=True)) | {"duration_h": duration / 3600.0} for row in raw]
    summary = summarize(rows, bands)
    found = verdicts(summary)
    print_tables(summary, Console(width=160))
    print(markdown(summary))
    for key, verdict in found.items():
        print(
            f"target at {TARGET_BAND} %, {key}: {100 * verdict['cheaper_than_on_demand_only']:.1f} % cheaper, "
            f"{verdict['attainment_points_lower']:+.3f} points lower attainment: "
            f"{'met' if verdict['met'] else 'NOT met'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(summary, args.out.with_suffix(".png"))
    elapsed = round(time.perf_counter() - started, 1)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "target": TARGET,
        "verdicts": found,
        "setup": {
            "workloads": list(WORKLOADS),
            "seeds": list(seeds),
            "duration_s": duration,
            "mean_rps": args.mean_rps,
            "objective": "p95 <= 100 ms",
            "policy": "latency",
            "capacity": {"on_demand_base": 1, "spot_max_fraction": 0.75, "fallback_after_s": 60},
            "market": {
                "bands_per_instance_month": {band: BANDS[band] for band in bands},
                "notices_s": list(NOTICES_S.values()),
                "intensities": SCALES,
                **{
                    k: v
                    for k, v in SpotMarket().describe().items()
                    if k in ("pool_share", "outage_median_s", "outage_sigma", "discount")
                },
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "elapsed_s": elapsed,
        "simulated_runs": simulated,
        "summary": summary,
        "columns": list(COLUMNS),
    }
    # One line per run keeps the file small and diffable.
    head = json.dumps(payload, indent=1)[: -len("\n}")]
    body = ",\n".join("  " + json.dumps(row) for row in raw)
    args.out.write_text(f'{head},\n "runs": [\n{body}\n ]\n}}\n')
    console.print(f"results in {args.out}, plot in {args.out.with_suffix('.png')} ({elapsed:.0f}s)")


if __name__ == "__main__":
    main()
