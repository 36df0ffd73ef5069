"""Why the real variants loop misses its objective where the simulator meets it: when batches form.

    .venv/bin/python benchmarks/variant_batching.py   # seconds; writes benchmarks/results/variant_batching.json

One replica of the real loop (tests/integration/test_variants_loop.py): the model, tau 40 + 2b
ms, and a 4x faster variant, each in its own Triton process with batches of up to 2 and no queue
delay, sharing one accelerator; 60 req/s of Poisson arrivals, a share of them on the variant.
That replica two ways, 10 minutes each, on the same arrival times:
- `when free`: the simulator (`sim.engine`, which draws each request's model itself with the
  same share), where a batch forms when the accelerator frees,
  from the model whose oldest request is oldest (what `queueing.mixed_latency_ms` predicts);
- `before the lock`: an event model in which each process's dynamic batcher forms a batch as
  soon as its instance is free and a request waits, and only then waits for the accelerator
  (first come, first served), as Triton does with the sandbox's simulated model, whose
  `execute` takes a file lock. Requests arriving during that wait cannot join the batch.
Printed with the policy's prediction, per share: the p95 and the share of requests within the
loop's 150 ms objective (after the first 10 s).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from tritonscale.policy.queueing import ServiceTime, mixed_latency_ms
from tritonscale.policy.variants import Variant
from tritonscale.sim.engine import ClusterView, SimEnvironment, Simulation

RESULTS = Path(__file__).parent / "results" / "variant_batching.json"
PRIMARY = ServiceTime(40.0, 2.0, 2)
VARIANT = Variant("fast", 0.98, 4.0)
RATE_RPS, DURATION_S, WARM_S, TARGET_MS = 60.0, 600.0, 10.0, 150.0
SHARES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.8)


def arrivals(share: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times and which model serves each (0 the model, 1 the variant)."""
    rng = np.random.default_rng(seed)
    count = rng.poisson(RATE_RPS * DURATION_S)
    return np.sort(rng.uniform(0.0, DURATION_S, count)), (rng.random(count) < share).astype(int)


def batch_s(model: int, size: int) -> float:
    service = PRIMARY if model == 0 else VARIANT.service(PRIMARY)
    return service.batch_ms(size) / 1000.0


class FixedShare:
    """One replica, with `share` of the requests on the variant from the first decision on."""

    name = "fixed share"
    period_s = 0.5  # the simulator routes everything to the model until the first decision

    def __init__(self, share: float) -> None:
        self.share = share

    def step(self, view: ClusterView) -> tuple[int, str]:
        view.route_variants((self.share,))
        return 1, "fixed"


def when_free(times: np.ndarray, share: float) -> np.ndarray:
    """Latencies in the simulator, which forms each batch as the accelerator frees (it draws
    each request's model itself, with the same share)."""
    env = SimEnvironment(
        base_ms=PRIMARY.base_ms,
        per_item_ms=PRIMARY.per_item_ms,
        max_batch=PRIMARY.max_batch,
        variants=(VARIANT,),
        queue_timeout_s=DURATION_S,  # Triton's queue here has no timeout
    )
    return Simulation(times, env, TARGET_MS, 95.0).run(FixedShare(share), 1, DURATION_S).latencies_s


def before_the_lock(times: np.ndarray, models: np.ndarray) -> tuple[np.ndarray, float, list[float]]:
    """Latencies when each process forms its batch as soon as its instance is free, then waits
    for the accelerator (first come, first served); with the share of the time the accelerator
    ran a batch, and each model's mean batch size."""
    latencies = np.empty(times.size)
    busy_s, sizes = 0.0, [[0, 0], [0, 0]]  # per model: batches, requests
    queues: list[deque[int]] = [deque(), deque()]
    instance_free = [True, True]
    waiting: deque[tuple[int, list[int]]] = deque()  # formed batches waiting for the accelerator
    running: tuple[int, list[int]] | None = None
    done_at, arrived = np.inf, 0
    while arrived < times.size or running is not None or waiting:
        next_arrival = times[arrived] if arrived < times.size else np.inf
        if next_arrival <= done_at:
            now = next_arrival
            queues[models[arrived]].append(arrived)
            arrived += 1
        else:
            now = done_at
            assert running is not None
            model, batch = running
            latencies[batch] = now - times[batch]
            instance_free[model], running, done_at = True, None, np.inf
        for model in (0, 1):
            if instance_free[model] and queues[model]:
                size = min(PRIMARY.max_batch, len(queues[model]))
                waiting.append((model, [queues[model].popleft() for _ in range(size)]))
                instance_free[model] = False
        if running is None and waiting:
            running = waiting.popleft()
            took = batch_s(running[0], len(running[1]))
            done_at, busy_s = now + took, busy_s + took
            sizes[running[0]][0] += 1
            sizes[running[0]][1] += len(running[1])
    return latencies, busy_s / float(times[-1]), [requests / max(batches, 1) for batches, requests in sizes]


def measured(latencies: np.ndarray, times: np.ndarray) -> dict[str, float]:
    kept = latencies[times >= WARM_S] * 1000.0
    return {
        "p95_ms": round(float(np.percentile(kept, 95)), 1),
        "within": round(float(np.mean(kept <= TARGET_MS)), 4),
    }


def main() -> None:
    rows: list[dict[str, Any]] = []
    for share in SHARES:
        times, models = arrivals(share)
        locked, busy, mean_batch = before_the_lock(times, models)
        loads = [(RATE_RPS * (1 - share), PRIMARY), (RATE_RPS * share, VARIANT.service(PRIMARY))]
        rows.append(
            {
                "share": share,
                "predicted_p95_ms": round(mixed_latency_ms(1, loads, 95.0), 1),
                "when_free": measured(when_free(times, share), times),
                "before_the_lock": measured(locked, times)
                | {"accelerator_busy": round(busy, 3), "mean_batch": [round(size, 2) for size in mean_batch]},
            }
        )
    table = Table(
        title=f"one replica, {RATE_RPS:g} req/s, objective p95 <= {TARGET_MS:g} ms: p95 and share within "
        "it as batches form when the accelerator frees or before its lock (then the accelerator's "
        "busy time and the model's and the variant's mean batches)"
    )
    for column in ("share", "predicted", "when free", "before the lock", "busy, batches"):
        table.add_column(column, justify="right")
    for row in rows:
        free, locked = row["when_free"], row["before_the_lock"]
        table.add_row(
            f"{row['share']:.2f}",
            f"{row['predicted_p95_ms']:.0f} ms",
            f"{free['p95_ms']:.0f} ms, {100 * free['within']:.1f} %",
            f"{locked['p95_ms']:.0f} ms, {100 * locked['within']:.1f} %",
            f"{100 * locked['accelerator_busy']:.0f} %, {locked['mean_batch'][0]:.2f}, {locked['mean_batch'][1]:.2f}",
        )
    Console().print(table)
    RESULTS.write_text(
        json.dumps({"command": "benchmarks/variant_batching.py", "rows": rows}, indent=1) + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
