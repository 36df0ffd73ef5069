"""How well the split-load model (`queueing.mixed_latency_ms`) predicts the simulator's percentile.

    .venv/bin/python benchmarks/mixed_model.py   # about 30 s; writes results/mixed_model.{json,png}

The variants' policy predicts the p95 of a load split between the model and a faster variant
on the replicas they share with `mixed_latency_ms`; the simulator (`sim.engine`) serves the
same split. Over a grid of steady Poisson loads: three batching profiles (tau 20 + 3b ms up to
8, the simulator's default; 40 + 2b up to 2, the real variants loop's replica; 10 + 1b up to
16), variants 2x and 4x faster, 1-8 replicas, the load at 50-85 % of what the replicas carry at
full batches on the model alone, and 30-90 % of it on the variant. Each point runs the
simulator with the share fixed from the start (no autoscaling) and compares its p95 (after the
first 10 s) with the model's. A ratio above 1 is a pessimistic model (the policy moves more to
the variant than the objective needs), below 1 an optimistic one (it moves too little).
The grid stays below 75 % busy at full batches. Besides it, near saturation: 1300 req/s on 4
default replicas (92-98 % busy), 90-97 % on the 2x variant, which gets more than a full batch
per turn there.
"""

from __future__ import annotations

import json
import statistics
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from tritonscale.policy.queueing import ServiceTime, mixed_latency_ms
from tritonscale.policy.variants import Variant
from tritonscale.sim.engine import ClusterView, SimEnvironment, Simulation
from tritonscale.sim.workloads import RateStep, Workload, arrivals

RESULTS = Path(__file__).parent / "results" / "mixed_model.json"
PLOT = RESULTS.with_suffix(".png")
PROFILES = (ServiceTime(20.0, 3.0, 8), ServiceTime(40.0, 2.0, 2), ServiceTime(10.0, 1.0, 16))
SPEEDUPS = (2.0, 4.0)
REPLICAS = (1, 2, 4, 8)
LOADS = (0.5, 0.7, 0.85)  # of the replicas' full-batch capacity on the model alone
SHARES = (0.3, 0.5, 0.7, 0.9)
WARM_S, SEED = 10.0, 3
# (profile, speedup, replicas, load): near saturation, the variant beyond a full batch per turn.
NEAR_SATURATION = (PROFILES[0], 2.0, 4, 1300.0 / (4 * PROFILES[0].capacity_rps()))
NEAR_SATURATION_SHARES = (0.9, 0.92, 0.94, 0.95, 0.97)


class FixedShare:
    """A fixed count of replicas with a fixed share on the variant."""

    name = "fixed share"
    period_s = 0.5  # the simulator routes everything to the model until the first decision

    def __init__(self, share: float, replicas: int) -> None:
        self.share, self.replicas = share, replicas

    def step(self, view: ClusterView) -> tuple[int, str]:
        view.route_variants((self.share,))
        return self.replicas, "fixed"


def point(service: ServiceTime, speedup: float, replicas: int, load: float, share: float) -> dict[str, Any]:
    variant = Variant("variant", 0.98, speedup)
    rate = load * replicas * service.capacity_rps()
    duration = max(120.0, 30000.0 / rate)  # at least 30,000 requests
    times = arrivals(Workload("steady", (RateStep(0.0, rate),), duration), SEED)
    env = SimEnvironment(
        base_ms=service.base_ms,
        per_item_ms=service.per_item_ms,
        max_batch=service.max_batch,
        variants=(variant,),
        queue_timeout_s=duration,
    )
    result = Simulation(times, env, 1e9, 95.0).run(FixedShare(share, replicas), replicas, duration)
    simulated = 1000.0 * float(np.percentile(result.latencies_s[times >= WARM_S], 95))
    loads = [(rate * (1 - share), service), (rate * share, variant.service(service))]
    predicted = mixed_latency_ms(replicas, loads, 95.0)
    return {
        "tau_ms": f"{service.base_ms:g} + {service.per_item_ms:g}b, up to {service.max_batch}",
        "speedup": speedup,
        "replicas": replicas,
        "load": load,
        "rate_rps": round(rate, 1),
        "share": share,
        "simulated_p95_ms": round(simulated, 1),
        "predicted_p95_ms": round(predicted, 1),
        "ratio": round(predicted / simulated, 3),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [row["ratio"] for row in rows if np.isfinite(row["ratio"])]
    quantiles = np.percentile(ratios, [5, 25, 50, 75, 95])
    by: dict[str, dict[str, float]] = {}
    for key in ("replicas", "share", "speedup", "tau_ms"):
        groups: dict[Any, list[float]] = {}
        for row in rows:
            groups.setdefault(row[key], []).append(row["ratio"])
        by[key] = {str(value): round(statistics.median(found), 2) for value, found in groups.items()}
    return {
        "points": len(rows),
        "ratio_quantiles_5_25_50_75_95": [round(float(q), 2) for q in quantiles],
        "optimistic_by_over_5_percent": sum(ratio < 0.95 for ratio in ratios),
        "pessimistic_by_over_25_percent": sum(ratio > 1.25 for ratio in ratios),
        "infinite": len(rows) - len(ratios),
        "median_ratio_by": by,
    }


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 6))
    for replicas, marker in zip(REPLICAS, "os^D", strict=True):
        mine = [row for row in rows if row["replicas"] == replicas]
        axis.scatter(
            [row["simulated_p95_ms"] for row in mine],
            [row["predicted_p95_ms"] for row in mine],
            marker=marker,
            s=18,
            alpha=0.7,
            label=f"{replicas} replica{'s' if replicas > 1 else ''}",
        )
    low = min(min(row["simulated_p95_ms"], row["predicted_p95_ms"]) for row in rows)
    high = max(max(row["simulated_p95_ms"], row["predicted_p95_ms"]) for row in rows)
    axis.plot([low, high], [low, high], color="grey", linewidth=1, label="exact")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("simulator p95 (ms)")
    axis.set_ylabel("split-load model's p95 (ms)")
    axis.set_title("A load split between a model and a faster variant: model vs simulator")
    axis.legend()
    figure.tight_layout()
    figure.savefig(PLOT, dpi=120)


def main() -> None:
    started = time.perf_counter()
    grid = list(product(PROFILES, SPEEDUPS, REPLICAS, LOADS, SHARES))
    rows = [point(*args) for args in track(grid, description="simulating the grid")]
    summary = summarise(rows)
    near = [point(*NEAR_SATURATION, share) for share in NEAR_SATURATION_SHARES]
    table = Table(title=f"model p95 / simulator p95 over {summary['points']} steady loads (median)")
    table.add_column("by")
    table.add_column("median ratio")
    for key, medians in summary["median_ratio_by"].items():
        table.add_row(key, ", ".join(f"{value}: {ratio:.2f}" for value, ratio in medians.items()))
    console = Console()
    console.print(table)
    console.print(
        "quantiles 5/25/50/75/95 %: "
        + ", ".join(f"{q:.2f}" for q in summary["ratio_quantiles_5_25_50_75_95"])
        + f"; optimistic by over 5 %: {summary['optimistic_by_over_5_percent']} points"
        + f"; pessimistic by over 25 %: {summary['pessimistic_by_over_25_percent']}"
    )
    console.print(
        f"near saturation ({near[0]['rate_rps']:g} req/s on {near[0]['replicas']} replicas, on the "
        f"{near[0]['speedup']:g}x variant), share: simulator p95 / model p95: "
        + ", ".join(
            f"{100 * row['share']:g} %: {row['simulated_p95_ms']:g} / {row['predicted_p95_ms']:g} ms"
            for row in near
        )
    )
    found = {
        "command": "benchmarks/mixed_model.py",
        "summary": summary,
        "near_saturation": near,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(found, indent=1) + "\n")
    plot(rows)
    console.print(f"wrote {RESULTS} and {PLOT} in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
