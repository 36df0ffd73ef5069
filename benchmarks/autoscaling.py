"""The autoscaler against baselines tuned as a careful user would tune them: train on one set,
report on another, everyone on the same metric feed.

    .venv/bin/python benchmarks/autoscaling.py            # the figures quoted in README.md
    .venv/bin/python benchmarks/autoscaling.py --quick    # smoke: 1 train and 1 test seed, 20 min
    .venv/bin/python benchmarks/autoscaling.py --no-traces  # built-in workloads only
    .venv/bin/python benchmarks/autoscaling.py --reuse OLD.json  # run only what OLD.json lacks

1. Train: five built-in workloads (all but `recurring`, which benchmarks/forecast.py runs) with
   seeds 1-3 (30 min each, mean 1000 req/s, p95 <= 100 ms, 30 s cold start), through Prometheus. Every tunable baseline (sim.policies.TUNABLE) runs at
   target utilisations 0.5, 0.7, 0.9, 1.1 and 1.3 of what one replica carries at the objective
   (its load test; in a fleet a replica carries more: past 1 is where a careful user ends up);
   each keeps the utilisation that reaches >= 99 % of requests within the objective over the
   training runs at the fewest replica-hours (or, if none does, its best attainment). Nothing of
   ours is tuned here: the latency policy runs as the operator ships it (with the routers'
   counts every 2 s; latency-metrics-only is the same policy without them).
2. Test: the built-in workloads with seeds 4-6 (and with seeds 7-9, a hold-out nobody looked
   at while building the policy: seeds 4-6 were) and the six real production traces in
   ../shared/traces (read in place, never copied, never tuned on; skipped with a note when the
   folder is absent), each for its own length. Headline feed: Prometheus for every policy (rates
   over 30 s, 15 s scrape, 5 s late); each tunable baseline runs its whole sweep on every test
   workload and trace (on the traces all but keda-rps, whose curve is hpa-rps's, and keda-queue),
   is drawn as a curve, and is shown in the tables at its trained
   utilisation. Second table: the fresh feed (the last 10 s, read directly) for every policy at
   its operating point, on the built-in workloads.

Verdicts, for each of ours: the baseline points that reach its attainment at its replica-hours
or less, and the baselines whose curve does (linear between two sweep points). The headline is
latency-metrics-only, which sees what every baseline sees; `latency` also reads the routers'
counts every 2 s, which no baseline is given.

Scores: the share of requests within the objective (drops are misses), the share of 1-minute
windows whose p95 met it, replica-hours relative to the oracle, scale actions, flaps (reversals
within 5 min) per hour and the replicas they moved. Writes benchmarks/results/autoscaling.json,
benchmarks/results/autoscaling.png (a cost/attainment panel per test workload) and prints the
tables with the verdict of each target. Runs on all cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tritonscale.cli.simulate import result_record
from tritonscale.sim.engine import SimEnvironment
from tritonscale.sim.policies import TUNABLE, Objective, reference_name
from tritonscale.sim.runner import Scenario, run_scenario
from tritonscale.sim.workloads import BUILT_IN, Workload, built_in, from_trace

RESULTS = Path(__file__).parent / "results" / "autoscaling.json"
PLOT = RESULTS.parent / "autoscaling.png"
TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
# The traces SOURCES.md describes: a missing one is said, not silently left out.
EXPECTED_TRACES = (
    "real-azure-functions-2019.csv",
    "real-azure-llm-code-2023.csv",
    "real-azure-llm-conv-2023.csv",
    "real-mooncake-conversation.csv",
    "real-nasa-http-1995-launch.csv",
    "real-twitter-stream-2021.csv",
)
TRAIN_SEEDS = (1, 2, 3)
TEST_SEEDS = (4, 5, 6)
# Seeds 4-6 were looked at while the policy was built (README: "Train and test apart"); these
# were not, by anyone, before this benchmark first ran them.
HOLDOUT_SEEDS = (7, 8, 9)
# Of what one replica carries at the objective alone (the load test). A fleet pools its queues:
# 9-10 replicas carry about 1.18x that each, so a careful user raises the target past 1 until
# the objective breaks; 1.1 and 1.3 are about 0.93 and 1.1 of a fleet replica's share.
SWEEP = (0.5, 0.7, 0.9, 1.1, 1.3)
FIXED = ("latency", "latency-metrics-only", "hpa-p95", "ray", "static-peak", "oracle")
OURS = ("latency-metrics-only", "latency")  # the headline first: the same feed as every baseline
REFERENCE_WORKLOADS = ("bursty", "flash-crowd")
REFERENCE_HEADROOMS = (1.0, 1.15, 1.3, 1.6)
OBJECTIVE = Objective(100.0, 95.0)
# `recurring` runs in benchmarks/forecast.py: its cycles need 2 h to be proven and forecast.
WORKLOADS = tuple(w for w in BUILT_IN if w != "recurring")
ATTAINMENT_GOAL = 0.99
TARGETS = (
    "no tuned baseline's curve reaches our attainment at our replica-hours or less, and we never "
    "cost more than static-peak; >= 99 % of requests within the objective on diurnal, smooth, "
    "Azure LLM conversation and Mooncake at <= 1.15x the oracle; <= 1 flap per hour everywhere"
)


@dataclass(frozen=True)
class Job:
    phase: str  # train, test or holdout
    workload: str  # a built-in name, or a trace file name
    seed: int
    feed: str
    policies: tuple[str, ...]
    duration_s: float
    mean_rps: float
    references: bool = False
    # With --reuse: the arrivals and the oracle's replica-hours the reused runs of this scenario
    # had; a run that finds others refuses to mix (the simulator changed since).
    expect: tuple[int, float] | None = None


def load_workload(job: Job) -> Workload:
    if job.workload in BUILT_IN:
        return built_in(job.workload, job.duration_s, job.mean_rps, job.seed)
    return from_trace(TRACES / job.workload)


class ReuseMismatch(RuntimeError):
    """Reused runs that this code would not make."""


def run_job(job: Job) -> list[dict[str, Any]]:
    scenario = Scenario(load_workload(job), job.seed, SimEnvironment(), OBJECTIVE, feed=job.feed)
    headrooms = REFERENCE_HEADROOMS if job.references else ()
    names = list(job.policies)
    if "oracle" not in names:
        names.append("oracle")  # every record is relative to its oracle
    if job.expect is not None:
        # Before the long runs: the oracle alone says whether the reused runs are this code's.
        [oracle] = run_scenario(scenario, ["oracle"])
        requests, oracle_hours = job.expect
        if oracle.requests != requests or not math.isclose(oracle.replica_hours, oracle_hours, rel_tol=3e-4):
            raise ReuseMismatch(
                f"--reuse: {job.workload} seed {job.seed} now has {oracle.requests} requests and an "
                f"oracle of {oracle.replica_hours:.4f} replica-h, the reused runs {requests} and "
                f"{oracle_hours:.4f}: the simulator changed, run without --reuse"
            )
    results = run_scenario(scenario, names, reference_headrooms=headrooms)
    oracle = next(r for r in results if r.policy == "oracle")
    records = []
    for result in results:
        if result.policy == "oracle" and "oracle" not in job.policies:
            continue
        record = result_record(result, scenario, oracle.replica_hours)
        record["phase"] = job.phase
        record["workload"]["name"] = job.workload.removesuffix(".csv")
        records.append(record)
    return records


def run_key(phase: str, workload: str, seed: int, feed: str, policy: str) -> tuple[str, str, int, str, str]:
    return phase, workload.removesuffix(".csv"), seed, feed, policy


def record_key(record: dict[str, Any]) -> tuple[str, str, int, str, str]:
    return run_key(
        record["phase"],
        record["workload"]["name"],
        record["workload"]["seed"],
        record["environment"]["feed"],
        record["policy"],
    )


def job_keys(job: Job) -> list[tuple[str, str, int, str, str]]:
    """The runs a job records, in order."""
    names = [*job.policies, *(reference_name(h) for h in REFERENCE_HEADROOMS if job.references)]
    return [run_key(job.phase, job.workload, job.seed, job.feed, name) for name in names]


def reuse_runs(jobs: list[Job], previous: list[dict[str, Any]]) -> tuple[list[Job], list[dict[str, Any]]]:
    """The jobs cut to the runs `previous` lacks (each checked against a reused run of its
    scenario), and the runs taken from `previous`. The simulator is deterministic per scenario
    and policy (each run's own generator), so a reused run is the run this code would make."""
    stored = {record_key(r): r for r in previous}
    left, reused = [], []
    for job in jobs:
        missing = tuple(
            p for p in job.policies if run_key(job.phase, job.workload, job.seed, job.feed, p) not in stored
        )
        # The reactive references run together (one prepared scenario): all again if any is lacking.
        references = job.references and any(
            run_key(job.phase, job.workload, job.seed, job.feed, reference_name(h)) not in stored
            for h in REFERENCE_HEADROOMS
        )
        found = [
            stored[key]
            for key in job_keys(job)
            if key in stored and (key[-1] in job.policies or not references)
        ]
        reused += found
        if not missing and not references:
            continue
        expect = None
        if found:
            sample = found[0]
            expect = (int(sample["requests"]), sample["replica_hours"] / sample["replica_hours_vs_oracle"])
        left.append(dataclasses.replace(job, policies=missing, references=references, expect=expect))
    return left, reused


def swept(bases: Iterable[str], values: Iterable[float] = SWEEP) -> tuple[str, ...]:
    return tuple(f"{base}@{value:g}" for base in bases for value in values)


def mean(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(float(r[key]) for r in runs)


def pick_utilizations(records: list[dict[str, Any]]) -> dict[str, float]:
    """Per tunable baseline, the training utilisation: >= 99 % at the fewest replica-hours, else
    the best attainment."""
    picked = {}
    for base in TUNABLE:
        candidates = []
        for value in SWEEP:
            runs = [r for r in records if r["policy"] == f"{base}@{value:g}"]
            if runs:
                candidates.append(
                    (value, mean(runs, "slo_attainment"), mean(runs, "replica_hours_vs_oracle"))
                )
        good = [c for c in candidates if c[1] >= ATTAINMENT_GOAL]
        best = min(good, key=lambda c: c[2]) if good else max(candidates, key=lambda c: c[1])
        picked[base] = best[0]
    return picked


def summarize(
    records: list[dict[str, Any]], feed: str, phase: str = "test"
) -> dict[str, dict[str, dict[str, float]]]:
    """workload -> policy -> means over its runs of `phase` on `feed`."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        if record["phase"] != phase or record["environment"]["feed"] != feed:
            continue
        table.setdefault(record["workload"]["name"], {}).setdefault(record["policy"], {})
    for workload, policies in table.items():
        for policy in policies:
            runs = [
                r
                for r in records
                if r["phase"] == phase
                and r["environment"]["feed"] == feed
                and r["workload"]["name"] == workload
                and r["policy"] == policy
            ]
            policies[policy] = {
                "slo_attainment": mean(runs, "slo_attainment"),
                "window_attainment": mean(runs, "window_attainment"),
                "replica_hours_vs_oracle": mean(runs, "replica_hours_vs_oracle"),
                "scale_actions": mean(runs, "scale_actions"),
                "flaps_per_hour": mean(runs, "flaps_per_hour"),
                "flap_replicas": mean(runs, "flap_replicas"),
                "runs": len(runs),
            }
    return table


def operating_points(picked: dict[str, float]) -> tuple[str, ...]:
    return (*FIXED[:3], *(f"{b}@{picked[b]:g}" for b in TUNABLE), *FIXED[3:])


def curve_attainment(policies: dict[str, dict[str, float]], base: str, cost: float) -> float | None:
    """A tunable baseline's attainment at `cost` replica-hours along its sweep (linear between
    the two points around it; the cheapest point's when it costs no more than `cost`), or None
    when every point costs more."""
    points = sorted(
        (f["replica_hours_vs_oracle"], f["slo_attainment"])
        for value in SWEEP
        if (f := policies.get(f"{base}@{value:g}")) is not None
    )
    affordable = [attainment for point_cost, attainment in points if point_cost <= cost]
    if not affordable:
        return None
    best = max(affordable)
    for (low_cost, low), (high_cost, high) in itertools.pairwise(points):
        if low_cost <= cost <= high_cost and high_cost > low_cost:
            best = max(best, low + (high - low) * (cost - low_cost) / (high_cost - low_cost))
    return best


def verdicts(summary: dict[str, dict[str, dict[str, float]]], ours_name: str) -> dict[str, dict[str, Any]]:
    """Per test workload: which baseline points, and which baselines' curves, reach the
    attainment of `ours_name` at its cost or less."""
    found = {}
    for workload, policies in summary.items():
        ours = policies.get(ours_name)
        if ours is None:
            continue
        beaten_by = [
            name
            for name, f in policies.items()
            if name not in (*OURS, "oracle")
            and not name.startswith("reactive")
            and f["slo_attainment"] >= ours["slo_attainment"]
            and f["replica_hours_vs_oracle"] <= ours["replica_hours_vs_oracle"]
        ]
        curves = [
            base
            for base in TUNABLE
            if (reached := curve_attainment(policies, base, ours["replica_hours_vs_oracle"])) is not None
            and reached >= ours["slo_attainment"]
        ]
        peak = policies.get("static-peak")
        found[workload] = {
            "dominated_by": beaten_by,
            "curves_reaching_it": curves,
            "costs_more_than_static_peak": bool(
                peak and ours["replica_hours_vs_oracle"] > peak["replica_hours_vs_oracle"]
            ),
            "attainment": ours["slo_attainment"],
            "replica_hours_vs_oracle": ours["replica_hours_vs_oracle"],
            "flaps_per_hour": ours["flaps_per_hour"],
        }
    return found


def print_table(
    summary: dict[str, dict[str, dict[str, float]]], shown: tuple[str, ...], title: str, console: Console
) -> None:
    for workload, policies in summary.items():
        table = Table(title=f"{title}: {workload} (mean over test runs)")
        for column in (
            "policy",
            "requests ok",
            "1-min windows ok",
            "replica-h / oracle",
            "actions",
            "flaps/h",
            "flap replicas",
        ):
            table.add_column(column, justify="left" if column == "policy" else "right")
        for policy in (*shown, *(reference_name(h) for h in REFERENCE_HEADROOMS)):
            f = policies.get(policy)
            if f is None:
                continue
            table.add_row(
                policy,
                f"{100 * f['slo_attainment']:.2f} %",
                f"{100 * f['window_attainment']:.1f} %",
                f"{f['replica_hours_vs_oracle']:.2f}",
                f"{f['scale_actions']:.0f}",
                f"{f['flaps_per_hour']:.2f}",
                f"{f['flap_replicas']:.0f}",
            )
        console.print(table)


def markdown(summary: dict[str, dict[str, dict[str, float]]], shown: tuple[str, ...]) -> str:
    lines = [
        "| workload | policy | requests ok | 1-min windows ok | replica-h / oracle | flaps/h |",
        "|---|---|---|---|---|---|",
    ]
    for workload, policies in summary.items():
        for policy in shown:
            f = policies.get(policy)
            if f is not None:
                lines.append(
                    f"| {workload} | {policy} | {100 * f['slo_attainment']:.2f} % | "
                    f"{100 * f['window_attainment']:.1f} % | {f['replica_hours_vs_oracle']:.2f} | "
                    f"{f['flaps_per_hour']:.2f} |"
                )
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Per test workload: each tunable baseline's sweep as a curve, the fixed policies as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(summary)
    columns = 3
    rows = (len(workloads) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.4 * rows), squeeze=False)
    for axis, workload in zip(axes.flat, workloads, strict=False):
        policies = summary[workload]
        for base in TUNABLE:
            points = [policies[f"{base}@{v:g}"] for v in SWEEP if f"{base}@{v:g}" in policies]
            if points:
                axis.plot(
                    [p["replica_hours_vs_oracle"] for p in points],
                    [100 * p["slo_attainment"] for p in points],
                    marker=".",
                    linewidth=1,
                    label=base,
                )
        references = [
            policies[reference_name(h)] for h in REFERENCE_HEADROOMS if reference_name(h) in policies
        ]
        if references:
            axis.plot(
                [p["replica_hours_vs_oracle"] for p in references],
                [100 * p["slo_attainment"] for p in references],
                "k--",
                linewidth=1,
                label="reactive reference",
            )
        for name, marker in (
            ("latency", "*"),
            ("latency-metrics-only", "P"),
            ("static-peak", "s"),
            ("ray", "^"),
            ("hpa-p95", "x"),
        ):
            if name in policies:
                f = policies[name]
                axis.scatter(
                    [f["replica_hours_vs_oracle"]],
                    [100 * f["slo_attainment"]],
                    marker=marker,
                    s=160 if name == "latency" else 40,
                    color="red" if name == "latency" else "black",
                    zorder=4,
                    label=name,
                )
        axis.axhline(99.0, color="grey", linewidth=0.8, linestyle=":")
        axis.set_xlabel("replica-hours / oracle")
        axis.set_ylabel("requests within objective %")
        low = min(100 * f["slo_attainment"] for f in policies.values())
        axis.set_ylim(max(low - 1.0, 50.0), 100.3)
        axis.set_xlim(0.8, min(6.0, max(f["replica_hours_vs_oracle"] for f in policies.values()) + 0.2))
        axis.set_title(f"{workload} (Prometheus feed)", fontsize=10)
    for axis in list(axes.flat)[len(workloads) :]:
        axis.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=7, fontsize=8)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_jobs(jobs: list[Job], workers: int, console: Console, what: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            job = futures[future]
            try:
                records.extend(future.result())
            except ReuseMismatch as mismatch:
                pool.shutdown(wait=False, cancel_futures=True)  # not hours of runs to throw away
                raise SystemExit(str(mismatch)) from None
            console.print(
                f"  {what} {done}/{len(jobs)}: {job.workload} seed {job.seed} {job.feed} "
                f"({len(job.policies)} policies; {time.perf_counter() - started:.0f}s elapsed)"
            )
    return records


def chunks(names: tuple[str, ...], size: int) -> list[tuple[str, ...]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 train and 1 test seed, 20 min, no traces")
    parser.add_argument("--duration-s", type=float, default=1800.0, help="built-in workloads' length")
    parser.add_argument("--mean-rps", type=float, default=1000.0)
    parser.add_argument("--no-traces", action="store_true", help="skip ../shared/traces")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="JSON",
        help="take the runs an earlier result of this benchmark has (same simulator: checked) and "
        "run only the rest, e.g. after adding sweep points",
    )
    args = parser.parse_args()
    previous = json.loads(args.reuse.read_text())["runs"] if args.reuse else []
    console = Console(stderr=True)
    train_seeds, test_seeds = ((1,), (4,)) if args.quick else (TRAIN_SEEDS, TEST_SEEDS)
    duration = 1200.0 if args.quick else args.duration_s
    started = time.perf_counter()

    train = [
        Job("train", w, seed, "prometheus", ("latency", *swept(TUNABLE)), duration, args.mean_rps)
        for w in WORKLOADS
        for seed in train_seeds
    ]
    order = {key: i for i, key in enumerate(k for job in train for k in job_keys(job))}
    train, reused = reuse_runs(train, previous)
    console.print(
        f"train: {len(train)} jobs (built-in workloads, seeds {train_seeds}) on {args.workers} workers"
        + (f", {len(reused)} runs reused from {args.reuse}" if args.reuse else "")
    )
    train_records = run_jobs(train, args.workers, console, "train") + reused
    picked = pick_utilizations(train_records)
    console.print(f"trained utilisations: {picked}")
    points = operating_points(picked)

    traces: list[str] = []
    traces_note = None
    if args.quick or args.no_traces:
        traces_note = "traces skipped (--quick or --no-traces)"
    elif not TRACES.is_dir():
        traces_note = f"traces skipped: {TRACES} is absent"
    else:
        traces = [name for name in EXPECTED_TRACES if (TRACES / name).is_file()]
        missing = sorted(set(EXPECTED_TRACES) - set(traces))
        if missing:
            traces_note = f"traces missing from {TRACES}: {', '.join(missing)}"
    if traces_note:
        console.print(traces_note)
    trace_sha256 = {name: hashlib.sha256((TRACES / name).read_bytes()).hexdigest() for name in traces}
    headline = tuple(dict.fromkeys((*points, *swept(TUNABLE))))
    # keda-rps computes what hpa-rps does from the same feed (their curves coincide), and
    # keda-queue's points all sit near 80 % at 4-5x: on the long traces only their trained points.
    on_traces = tuple(
        dict.fromkeys((*points, *swept(b for b in TUNABLE if b not in ("keda-rps", "keda-queue"))))
    )
    # One job per scenario and feed, so each measures its capacity table once; a trace's
    # policies in several jobs, so the long ones spread over the workers.
    test = [
        Job(
            "test",
            w,
            seed,
            feed,
            names,
            duration,
            args.mean_rps,
            references=feed == "prometheus" and w in REFERENCE_WORKLOADS,
        )
        for w in WORKLOADS
        for seed in test_seeds
        for feed, names in (("prometheus", headline), ("fresh", points))
    ]
    test += [
        Job("holdout", w, seed, "prometheus", headline, duration, args.mean_rps)
        for w in WORKLOADS
        for seed in (() if args.quick else HOLDOUT_SEEDS)
    ]
    for trace in traces:
        test += [
            Job("test", trace, 1, "prometheus", part, 0.0, args.mean_rps) for part in chunks(on_traces, 6)
        ]
    order |= {key: len(order) + i for i, key in enumerate(k for job in test for k in job_keys(job))}
    test, reused_test = reuse_runs(test, previous)
    reused += reused_test
    console.print(
        f"test: {len(test)} jobs (seeds {test_seeds}, {len(traces)} real traces)"
        + (f", {len(reused_test)} runs reused" if args.reuse else "")
    )
    test_records = run_jobs(test, args.workers, console, "test") + reused_test

    # In the order of the jobs, reused or not: tables and verdicts list policies as they come.
    records = sorted(train_records + test_records, key=lambda r: order[record_key(r)])
    prometheus = summarize(records, "prometheus")
    fresh = summarize(records, "fresh")
    holdout = summarize(records, "prometheus", "holdout")
    out = Console()
    print_table(prometheus, points, "Prometheus feed for everyone", out)
    print_table(fresh, points, "fresh feed for everyone", out)
    print_table(holdout, points, "hold-out seeds 7-9, Prometheus feed", out)
    found = {name: verdicts(prometheus, name) for name in OURS}
    found_holdout = {name: verdicts(holdout, name) for name in OURS}
    print(markdown(prometheus, points))
    print()
    print(markdown(fresh, points))
    print()
    print(markdown(holdout, points))
    out.print(json.dumps({"test": found, "holdout": found_holdout}, indent=1))
    plot(prometheus, PLOT)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python " + " ".join(sys.argv),
                "targets": TARGETS,
                "trained_utilizations": picked,
                "traces": traces_note or f"{len(traces)} traces from {TRACES}",
                "trace_sha256": trace_sha256,
                "verdicts": found,
                "verdicts_holdout": found_holdout,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "elapsed_s": round(time.perf_counter() - started, 1),
                "reused": {"from": str(args.reuse), "runs": len(reused)} if args.reuse else None,
                "summary": {"prometheus": prometheus, "fresh": fresh, "holdout": holdout},
                "runs": records,
            },
            indent=1,
        )
        + "\n"
    )
    console.print(f"results in {RESULTS}, plot in {PLOT}")


if __name__ == "__main__":
    main()
