"""Faster variants carry a surge while new replicas start, on real components: real
tritonservers per replica (the model's and a 4x faster variant's, sharing one accelerator lock,
with a 20 s cold start), real dnsmasq, the real HAProxy router rendered for the service, real
Prometheus, `tritonscale bench` driving a step through the router, and the operator's
autoscaler with its router job setting the variant's share on the router's control port. Only
the Kubernetes API is replaced, by ProcessBackedCluster."""

from __future__ import annotations

import csv
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.process_stack import bench_simulated, process_stack, prometheus_autoscaler
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
VARIANT_ACCURACY = 0.98


def served(cluster: ProcessBackedCluster) -> tuple[int, int]:
    """Requests the model's servers and the variant's servers have answered, by Triton's counters
    (servers since gone are counted in `gone`)."""
    primary = variant = 0
    for server in list(cluster.pool.servers):
        assert isinstance(server, ReplicaServer)
        for process, is_variant in ((server, False), *((c, True) for c in server.companions)):
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


@pytest.mark.timeout(600)
def test_a_variant_carries_a_surge_while_replicas_start_and_the_model_takes_back_over(
    triton_install: TritonInstall, tmp_path: Path
) -> None:
    model = SimulatedModel(
        "simulated", base_ms=40, per_item_ms=2, max_batch_size=2, max_queue_delay_us=0, load_s=COLD_S
    )
    fast = SimulatedModel(
        "simulated", base_ms=10, per_item_ms=0.5, max_batch_size=2, max_queue_delay_us=0, load_s=COLD_S
    )
    with process_stack(
        tmp_path,
        triton_install,
        namespace=NAMESPACE,
        name=NAME,
        model=model,
        variants=[(fast, VARIANT_ACCURACY, 4.0)],
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 4,
            "periodSeconds": 2,
            "latency": {"targetMilliseconds": TARGET_MS, "percentile": 95},
            "metrics": {"source": "prometheus"},
            "scaleDown": {"stabilizationSeconds": 30},
            "coldStartSeconds": int(COLD_S) + 5,
            "accuracy": {"floor": FLOOR},
        },
    ) as (cluster, router, prometheus):
        autoscaler = prometheus_autoscaler(
            cluster, router, prometheus, NAMESPACE, NAME, read_routers=True, variants=True
        )
        control = f"http://{router.bind_address}:{router.options.control_port}/variants"
        log = tmp_path / "requests.csv"
        stop = threading.Event()
        shares: list[tuple[float, str, int, int]] = []  # (at, what the router holds, desired, ready)
        started = time.monotonic()
        bench = subprocess.Popen(
            bench_simulated(
                router.http_endpoint,
                "--schedule",
                f"step:{BASE_RPS}@0,{STEP_RPS}@{STEP_AT_S},{BASE_RPS}@{DROP_AT_S}",
                "--duration",
                str(LOAD_S),
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
            with urllib.request.urlopen(control, timeout=2) as reply:
                held = reply.read().decode().strip()
            status = cluster.body.get("status", {})
            shares.append(
                (
                    time.monotonic() - started,
                    held,
                    int(status.get("desiredReplicas", 0)),
                    len(cluster.ready_servers()),
                )
            )

        decisions: list[str] = []
        assert autoscaler.variants is not None
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
            _, stderr = bench.communicate(timeout=LOAD_S + 120)
            assert bench.returncode == 0, stderr[-2000:]
            primary, variant = served(cluster)
        finally:
            stop.set()
            for loop in loops:
                loop.join(timeout=30)
    timeline = [(round(at), held, desired, ready) for at, held, desired, ready in shares]
    print(
        "\n".join(
            f"{at:4d}s {held:10s} desired {desired} ready {ready}" for at, held, desired, ready in timeline
        )
    )
    print("\n".join(d for d in decisions if STEP_AT_S - 4 <= float(d.split("s")[0])))
    rows = [row for row in csv.DictReader(log.open()) if row["latency_ms"]]
    bridge = sorted(
        float(r["latency_ms"])
        for r in rows
        if STEP_AT_S + REACTION_S <= float(r["due_s"]) < STEP_AT_S + COLD_S + 10
    )
    within = sum(latency <= TARGET_MS for latency in bridge) / len(bridge)
    p95 = bridge[int(0.95 * len(bridge))]
    accuracy = (primary + VARIANT_ACCURACY * variant) / (primary + variant)
    print(
        f"while replicas arrived: {100 * within:.1f} % within {TARGET_MS:g} ms, p95 {p95:.0f} ms; "
        f"variant served {variant} of {primary + variant} ({100 * variant / (primary + variant):.1f} %); "
        f"mean accuracy served {accuracy:.4f}"
    )
    events = [reason for _, reason, _ in cluster.events]
    # The variant served while the new replicas started, and only a share within the budget.
    assert variant > 0 and "VariantsServing" in events, timeline
    assert accuracy >= FLOOR, accuracy
    assert any(held != "v0 0" for at, held, _, _ in shares if STEP_AT_S <= at <= STEP_AT_S + COLD_S + 10), (
        timeline
    )
    # New replicas arrived, and the model took back over: no share once they served.
    assert max(ready for _, _, _, ready in shares) >= 2, timeline
    assert all(held == "v0 0" for at, held, _, _ in shares if at >= LOAD_S - 30), timeline
    assert "VariantsStopped" in events
    assert within >= 0.9, f"{100 * within:.1f} % within the objective while replicas arrived"
