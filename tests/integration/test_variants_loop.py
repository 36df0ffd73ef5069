"""Faster variants carry a surge while new replicas start, on real components: real
tritonservers per replica (the model's and a 4x faster variant's, sharing one accelerator lock,
with a 20 s cold start), real dnsmasq, the real HAProxy router rendered for the service, real
Prometheus, `tritonscale bench` driving a step through the router, and the operator's
autoscaler with its router job setting the variant's share on the router's control port. Only
the Kubernetes API is replaced, by ProcessBackedCluster.

The same step runs again on a service that declares no variant: what the variant buys is the
difference, measured here rather than assumed."""

from __future__ import annotations

import csv
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.process_stack import bench_simulated, process_stack, prometheus_autoscaler
from tritonscale.render.router import SHARE_SCALE
from tritonscale_sandbox.local_stack import ProcessBackedCluster
from tritonscale_sandbox.triton import ReplicaServer, SimulatedModel, TritonInstall

pytestmark = pytest.mark.integration

NAMESPACE, NAME = "default", "variants"
TARGET_MS = 150.0
COLD_S = 20.0  # the model takes this long to load: a new replica's cold start
BASE_RPS, STEP_RPS = 12, 60  # one replica carries ~45 req/s on the model, ~180 on the variant
STEP_AT_S, DROP_AT_S, LOAD_S = 45, 125, 215
# The loop starts once the base load has filled the rate window: a load starting from nothing
# reads as a ramp (and the test is about a step onto one replica).
WARM_S = 25
# The accuracy budget: 1.5 points; the variant costs 2 points a request it serves, so it may
# carry three quarters of the requests for as long as it must (at 60 req/s one replica needs
# about that much to hold the objective).
FLOOR = 0.985
# The routers are read every 2 s: from the second read after the step, the variant serves.
REACTION_S = 4.0
# Requests due from the reaction until the new replica has served a while: the bridge.
BRIDGE_S = (STEP_AT_S + REACTION_S, STEP_AT_S + COLD_S + 10)
VARIANT_ACCURACY = 0.98
# The share steps down by 0.05-0.1 a routers' read as replicas serve: gone within this long.
TAKE_BACK_S = 30

MODEL = SimulatedModel(
    "simulated", base_ms=40, per_item_ms=2, max_batch_size=2, max_queue_delay_us=0, load_s=COLD_S
)
FAST = SimulatedModel(
    "simulated", base_ms=10, per_item_ms=0.5, max_batch_size=2, max_queue_delay_us=0, load_s=COLD_S
)


@dataclass
class StepRun:
    within: float  # of the requests due in BRIDGE_S, the share answered within TARGET_MS
    p95_ms: float  # their p95
    primary: int  # requests the model's servers answered (Triton's counters)
    variant: int  # and the variant's
    timeline: list[tuple[int, str, int, int]]  # (s, the router's cuts, desired, ready)
    events: list[str]

    def describe(self) -> str:
        served = self.primary + self.variant
        return (
            f"{100 * self.within:.1f} % within {TARGET_MS:g} ms, p95 {self.p95_ms:.0f} ms; "
            f"variant served {self.variant} of {served} ({100 * self.variant / max(served, 1):.1f} %)"
        )

    @property
    def accuracy(self) -> float:
        return (self.primary + VARIANT_ACCURACY * self.variant) / (self.primary + self.variant)


def served(cluster: ProcessBackedCluster) -> tuple[int, int]:
    """Requests the model's servers and the variant's servers have answered, by Triton's counters."""
    primary = variant = 0
    for server in list(cluster.pool.servers):
        companions = server.companions if isinstance(server, ReplicaServer) else ()
        for process, is_variant in ((server, False), *((c, True) for c in companions)):
            try:
                with urllib.request.urlopen(
                    f"http://{process.host}:{process.http_port}/v2/models/simulated/stats", timeout=2
                ) as reply:
                    count = int(json.load(reply)["model_stats"][0]["inference_stats"]["success"]["count"])
            except OSError:
                continue  # not up yet
            if is_variant:
                variant += count
            else:
                primary += count
    return primary, variant


def _every(period_s: float, stop: threading.Event, step: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            step()
            stop.wait(period_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_step(tmp_path: Path, triton_install: TritonInstall, *, with_variant: bool, load_s: int) -> StepRun:
    """The step through the router, the operator's loops running every 2 s, for `load_s`."""
    tmp_path.mkdir()
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "periodSeconds": 2,
        "latency": {"targetMilliseconds": TARGET_MS, "percentile": 95},
        "metrics": {"source": "prometheus"},
        "scaleDown": {"stabilizationSeconds": 30},
        "coldStartSeconds": int(COLD_S) + 5,
        **({"accuracy": {"floor": FLOOR}} if with_variant else {}),
    }
    with process_stack(
        tmp_path,
        triton_install,
        namespace=NAMESPACE,
        name=NAME,
        model=MODEL,
        variants=[(FAST, VARIANT_ACCURACY, 4.0)] if with_variant else [],
        autoscaling=autoscaling,
    ) as (cluster, router, prometheus):
        autoscaler = prometheus_autoscaler(
            cluster, router, prometheus, NAMESPACE, NAME, read_routers=True, variants=with_variant
        )
        control = f"http://{router.bind_address}:{router.options.control_port}/variants"
        log = tmp_path / "requests.csv"
        stop = threading.Event()
        samples: list[tuple[float, str, int, int]] = []
        started = time.monotonic()
        bench = subprocess.Popen(
            bench_simulated(
                router.http_endpoint,
                "--schedule",
                f"step:{BASE_RPS}@0,{STEP_RPS}@{STEP_AT_S},{BASE_RPS}@{DROP_AT_S}",
                "--duration",
                str(load_s),
                "--timeout",
                "15",
                "--no-progress",
                "--requests-log",
                str(log),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def watch() -> None:
            held = "-"  # a router without variants has no control port
            if with_variant:
                with urllib.request.urlopen(control, timeout=2) as reply:
                    held = reply.read().decode().strip()
            status = cluster.body.get("status", {})
            samples.append(
                (
                    time.monotonic() - started,
                    held,
                    int(status.get("desiredReplicas", 0)),
                    len(cluster.ready_servers()),
                )
            )

        decisions: list[str] = []
        if autoscaler.variants is not None:
            original = autoscaler.variants.decide

            def traced(*args, **kwargs):  # type: ignore[no-untyped-def]
                decision = original(*args, **kwargs)
                signal = args[3]
                decisions.append(
                    f"{time.monotonic() - started:6.1f}s "
                    f"{'-' if signal is None else f'{signal.present_rps:.0f} req/s {signal.in_flight:.0f} in flight'}: "
                    f"{decision.reason if decision else None}"
                )
                return decision

            autoscaler.variants.decide = traced  # type: ignore[method-assign]
        time.sleep(WARM_S)
        loops = [
            # The operator reconciles on every Deployment change it watches: its status (ready
            # replicas, which the autoscaler reads) follows the pods. Here, every 2 s.
            _every(2.0, stop, lambda: autoscaler.stack.reconcile(NAMESPACE, NAME)),
            _every(2.0, stop, lambda: autoscaler.tick(NAMESPACE, NAME)),
            _every(2.0, stop, lambda: autoscaler.router_tick(NAMESPACE, NAME)),
            _every(1.0, stop, watch),
        ]
        try:
            _, stderr = bench.communicate(timeout=load_s + 120)
            assert bench.returncode == 0, stderr[-2000:]
            primary, variant = served(cluster)
        finally:
            stop.set()
            for loop in loops:
                loop.join(timeout=30)
        events = [reason for _, reason, _ in cluster.events]
    timeline = [(round(at), held, desired, ready) for at, held, desired, ready in samples]
    print(
        "\n".join(
            f"{at:4d}s {held:10s} desired {desired} ready {ready}" for at, held, desired, ready in timeline
        )
    )
    print("\n".join(d for d in decisions if float(d.split("s")[0]) >= STEP_AT_S - 4))
    rows = [row for row in csv.DictReader(log.open()) if row["latency_ms"]]
    # A request the bench gave up on (15 s) counts as a miss, as it would for its client.
    bridge = sorted(
        float(row["latency_ms"]) if row["latency_ms"] else float("inf")
        for row in csv.DictReader(log.open())
        if BRIDGE_S[0] <= float(row["due_s"]) < BRIDGE_S[1]
    )
    assert rows and bridge
    return StepRun(
        within=sum(latency <= TARGET_MS for latency in bridge) / len(bridge),
        p95_ms=bridge[int(0.95 * len(bridge))],
        primary=primary,
        variant=variant,
        timeline=timeline,
        events=events,
    )


@pytest.mark.timeout(900)
def test_a_variant_carries_a_surge_while_replicas_start_and_the_model_takes_back_over(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    carried = run_step(tmp_path / "variant", triton_install, with_variant=True, load_s=LOAD_S)
    # Without the variant only the bridge matters: the step until the new replica has served.
    alone = run_step(tmp_path / "alone", triton_install, with_variant=False, load_s=int(BRIDGE_S[1]) + 5)
    print(f"while replicas arrived, with the variant: {carried.describe()}; accuracy {carried.accuracy:.4f}")
    print(f"while replicas arrived, the model alone: {alone.describe()}")
    # The variant served while the new replicas started, and only a share within the budget.
    assert carried.variant > 0 and "VariantsServing" in carried.events, carried.timeline
    assert carried.accuracy >= FLOOR, carried.accuracy
    bridge = [held for at, held, _, _ in carried.timeline if BRIDGE_S[0] - REACTION_S <= at <= BRIDGE_S[1]]
    assert any(held != "v0 0" for held in bridge), carried.timeline
    # New replicas arrived, and the model took back over: the share goes once they serve.
    arrived = next((at for at, _, _, ready in carried.timeline if ready >= 2), None)
    assert arrived is not None, carried.timeline
    # Within TAKE_BACK_S of their arrival the share is gone; afterwards the model serves all but
    # brief nudges: a real latency excursion may rightly bring a small share back for a read or
    # two (seen here: 5 % for 4 s with two replicas at the step's rate; 90 % for 3 s on the lone
    # replica left after the drop, at p95 159 ms > 150 ms).
    taken_back = [held for at, held, _, _ in carried.timeline if arrived <= at <= arrived + TAKE_BACK_S]
    assert "v0 0" in taken_back, carried.timeline
    after = [
        int(held.split()[1]) / SHARE_SCALE
        for at, held, _, _ in carried.timeline
        if at > arrived + TAKE_BACK_S
    ]
    assert after and sum(after) / len(after) <= 0.05, carried.timeline
    assert "VariantsStopped" in carried.events
    # What it bought: the model alone queues through the cold start (one replica carries ~45
    # req/s of 60); with the variant most requests meet the objective. The objective's 95 % is
    # not reached here: 87-90 % in runs so far, the real servers sharing the accelerator being
    # slower at the policy's share than the simulator (README, "Faster model variants"; not the
    # CPU: it stays mostly idle). The figure is printed; the bound leaves room for a more loaded
    # machine, and the gain over the model alone is what must hold.
    assert carried.within >= 0.7, carried.describe()
    assert carried.within >= alone.within + 0.3, (carried.describe(), alone.describe())


# A standing share (steadySpend): at a load one replica cannot hold on the model alone, the
# variant serving a standing share all the time lets one replica hold it.
STEADY_RPS = 40  # 89 % of what one replica does on the model (45 req/s), 56 % with the mix below
STEADY_LOAD_S = 150
# 0.7 of the 1.5-point budget, spent all the time, at 2 points a request: 50 % on the variant
# (1.05 / 2, on the 5 % grid), each request then costing 1 - 0.5 x 0.75 = 0.625 of the model's
# accelerator time.
STEADY_SPEND, STANDING_SHARE = 0.7, 0.5


@dataclass
class SteadyRun:
    desired: list[int]  # each second of the last half
    within: float  # of the requests due in the last half, answered within TARGET_MS
    primary: int
    variant: int

    @property
    def variant_fraction(self) -> float:
        return self.variant / max(self.primary + self.variant, 1)


def run_steady(tmp_path: Path, triton_install: TritonInstall, *, steady_spend: float) -> SteadyRun:
    """STEADY_RPS through the router for STEADY_LOAD_S, the operator's loops running from before
    the load starts (the standing share is set at the first routers' read)."""
    tmp_path.mkdir()
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "periodSeconds": 2,
        "latency": {"targetMilliseconds": TARGET_MS, "percentile": 95},
        "metrics": {"source": "prometheus"},
        "coldStartSeconds": int(COLD_S) + 5,
        "scaleDown": {"stabilizationSeconds": 30},
        "accuracy": {"floor": FLOOR, "steadySpend": steady_spend},
    }
    with process_stack(
        tmp_path,
        triton_install,
        namespace=NAMESPACE,
        name=NAME,
        model=MODEL,
        variants=[(FAST, VARIANT_ACCURACY, 4.0)],
        autoscaling=autoscaling,
    ) as (cluster, router, prometheus):
        autoscaler = prometheus_autoscaler(
            cluster, router, prometheus, NAMESPACE, NAME, read_routers=True, variants=True
        )
        stop = threading.Event()
        desired: list[tuple[float, int]] = []
        loops = [
            _every(2.0, stop, lambda: autoscaler.stack.reconcile(NAMESPACE, NAME)),
            _every(2.0, stop, lambda: autoscaler.tick(NAMESPACE, NAME)),
            _every(2.0, stop, lambda: autoscaler.router_tick(NAMESPACE, NAME)),
        ]
        time.sleep(5.0)
        log = tmp_path / "requests.csv"
        started = time.monotonic()
        loops.append(
            _every(
                1.0,
                stop,
                lambda: desired.append(
                    (
                        time.monotonic() - started,
                        int(cluster.body.get("status", {}).get("desiredReplicas", 0)),
                    )
                ),
            )
        )
        try:
            bench = subprocess.run(
                bench_simulated(
                    router.http_endpoint,
                    "--schedule",
                    f"step:{STEADY_RPS}@0",
                    "--duration",
                    str(STEADY_LOAD_S),
                    "--timeout",
                    "15",
                    "--no-progress",
                    "--requests-log",
                    str(log),
                ),
                capture_output=True,
                check=False,
                text=True,
                timeout=STEADY_LOAD_S + 120,
            )
            assert bench.returncode == 0, bench.stderr[-2000:]
            primary, variant = served(cluster)
        finally:
            stop.set()
            for loop in loops:
                loop.join(timeout=30)
        print("\n".join(f"{reason}: {message}" for _, reason, message in cluster.events))
    half = STEADY_LOAD_S / 2
    latencies = [
        float(row["latency_ms"]) if row["latency_ms"] else float("inf")
        for row in csv.DictReader(log.open())
        if float(row["due_s"]) >= half
    ]
    assert latencies
    return SteadyRun(
        desired=[count for at, count in desired if at >= half],
        within=sum(latency <= TARGET_MS for latency in latencies) / len(latencies),
        primary=primary,
        variant=variant,
    )


@pytest.mark.timeout(900)
def test_a_standing_share_lets_fewer_replicas_hold_the_objective_within_the_budget(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    steady = run_steady(tmp_path / "steady", triton_install, steady_spend=STEADY_SPEND)
    surges_only = run_steady(tmp_path / "surges", triton_install, steady_spend=0.0)
    for label, run in (("steady spend", steady), ("surges only", surges_only)):
        print(
            f"{label}: desired over the last half {sorted(set(run.desired))}, "
            f"{100 * run.within:.1f} % within {TARGET_MS:g} ms, "
            f"variant served {run.variant} of {run.primary + run.variant} ({100 * run.variant_fraction:.1f} %)"
        )
    # The variant served at least its standing share by Triton's own counters (the surge path
    # may add to it), within the budget...
    assert steady.variant_fraction >= STANDING_SHARE - 0.07, steady.variant_fraction
    accuracy = 1.0 - steady.variant_fraction * (1.0 - VARIANT_ACCURACY)
    assert accuracy >= FLOOR, accuracy
    # ... the objective held with it, and never on more replicas than the model alone (the
    # variant only in surges) needed. One replica held it in three runs of four; in the other the
    # model's error learnt on these real servers (1.42x the mixed model's prediction, their
    # batches forming before the accelerator's lock: README "Faster model variants") sized two,
    # as without the spend. What one replica fewer buys is measured in benchmarks/variants.py.
    assert steady.within >= 0.9, steady.within
    assert steady.desired and surges_only.desired
    assert max(steady.desired) <= max(surges_only.desired), (steady.desired, surges_only.desired)
