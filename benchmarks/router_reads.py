"""What the autoscaler's router job costs the operator (issue 10, item 5): every 2 s, for every
autoscaled service, one HTTP read of each router pod's HAProxy stats page, and the change-point
test over the last minute of samples (and a parse of the service, to check it is still
autoscaled).

    .venv/bin/python benchmarks/router_reads.py   # about 1 minute; writes benchmarks/results/router_reads.json

A real HAProxy started from the rendered haproxy.cfg (no replicas behind it: the stats page is
the same size either way) is read READS times with the operator's own reader
(clients.router.HaproxyStats, one keep-alive session); the change-point test runs on full
one-minute histories of a steady and of a surging load. Figures are the operator process's CPU
time per read and per test (time.process_time), and wall time per read, medians of ROUNDS
rounds; the cost at scale is what 300 services with two routers each would take per second.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tritonscale.api.observation import RouterSample
from tritonscale.api.resource import parse_inference_service
from tritonscale.clients.router import HaproxyStats
from tritonscale.policy.surge import ROUTER_PERIOD_S, remember, router_signal
from tritonscale_sandbox.router import DnsServer, LocalRouter

RESULTS = Path(__file__).parent / "results" / "router_reads.json"
READS = 500
ROUNDS = 5
SERVICES, ROUTERS_PER_SERVICE = 300, 2


def histories(rates: list[float], seed: int) -> tuple[RouterSample, ...]:
    rng = np.random.default_rng(seed)
    total, kept = 0.0, (RouterSample(0.0, 0.0, 0.0),)
    for index, rate in enumerate(rates, start=1):
        total += float(rng.poisson(rate * ROUTER_PERIOD_S))
        kept = remember(kept, RouterSample(index * ROUTER_PERIOD_S, total, 10.0))
    return kept


def per_call(function: object, calls: int) -> tuple[float, float]:
    """(CPU s, wall s) per call, medians over ROUNDS rounds."""
    cpu, wall = [], []
    for _ in range(ROUNDS):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            function()  # type: ignore[operator]
        cpu.append((time.process_time() - cpu0) / calls)
        wall.append((time.perf_counter() - wall0) / calls)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    body = {
        "apiVersion": "tritonscale.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "reads", "namespace": "default"},
        "spec": {
            "model": {"repository": "file:///models", "names": ["m"]},
            "replicas": 4,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 20, "latency": {"targetMilliseconds": 100}},
        },
    }
    service = parse_inference_service(body)
    # The job first checks that the service is still autoscaled: a parse of the watch's copy.
    parse_cpu, _ = per_call(lambda: parse_inference_service(body), 2000)
    with (
        tempfile.TemporaryDirectory() as work,
        DnsServer(work_dir=Path(work) / "dns") as dns,
        LocalRouter(service, dns, work_dir=Path(work) / "router") as router,
    ):
        reader = HaproxyStats(port=router.options.metrics_port)
        assert not isinstance(reader(router.bind_address), str)
        read_cpu, read_wall = per_call(lambda: reader(router.bind_address), READS)
    steady = histories([500.0] * 30, seed=1)
    surging = histories([500.0] * 20 + [500.0 + 100.0 * step for step in range(1, 11)], seed=2)
    steady_cpu, _ = per_call(lambda: router_signal(steady, steady[-1].at), 2000)
    surging_cpu, _ = per_call(lambda: router_signal(surging, surging[-1].at), 2000)
    per_service_s = parse_cpu + ROUTERS_PER_SERVICE * read_cpu + max(steady_cpu, surging_cpu)
    at_scale = SERVICES * per_service_s / ROUTER_PERIOD_S
    figures = {
        "parse_cpu_ms": round(parse_cpu * 1000, 3),
        "read_cpu_ms": round(read_cpu * 1000, 3),
        "read_wall_ms": round(read_wall * 1000, 3),
        "change_point_test_cpu_us": {
            "steady": round(steady_cpu * 1e6, 1),
            "surging": round(surging_cpu * 1e6, 1),
        },
        "services": SERVICES,
        "routers_per_service": ROUTERS_PER_SERVICE,
        "operator_cpu_cores_at_scale": round(at_scale, 3),
    }
    print(json.dumps(figures, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/router_reads.py",
                "figures": figures,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
