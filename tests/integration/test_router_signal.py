"""The autoscaler's fast path with real components (issue 10, item 5): the operator's router reader
against a real HAProxy rendered for the InferenceService, real tritonservers behind it, real
Prometheus scraping every 15 s (a common interval) beside it, and `tritonscale bench` stepping
the load. Only the Kubernetes API is replaced, by ProcessBackedCluster.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.integration.process_stack import bench_simulated, process_stack, prometheus_autoscaler, scheduled
from tritonscale.clients.router import HaproxyStats
from tritonscale_sandbox.local_stack import ProcessBackedCluster
from tritonscale_sandbox.prometheus import LocalPrometheus
from tritonscale_sandbox.router import LocalRouter
from tritonscale_sandbox.triton import SimulatedModel, TritonInstall

pytestmark = pytest.mark.integration

NAMESPACE, NAME = "default", "surging"
BASE_RPS, SURGE_RPS = 8, 70
SURGE_AT_S, LOAD_S = 40, 75
SCRAPE_S = 15.0


@pytest.fixture
def stack(
    triton_install: TritonInstall, tmp_path: Path
) -> Iterator[tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus]]:
    # 40 ms per batch of up to 2: one replica serves ~45 req/s flat out.
    with process_stack(
        tmp_path,
        triton_install,
        namespace=NAMESPACE,
        name=NAME,
        model=SimulatedModel("simulated", base_ms=40, per_item_ms=2, max_batch_size=2, max_queue_delay_us=0),
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 4,
            "periodSeconds": 10,
            "latency": {"targetMilliseconds": 150, "percentile": 95},
            "metrics": {"source": "prometheus"},
        },
        prometheus_options={"scrape_interval_s": SCRAPE_S},
    ) as parts:
        yield parts


def _infer(router: LocalRouter, http_requests: int, grpc_requests: int) -> None:
    data = np.ones((1, 1), dtype=np.float32)
    http = httpclient.InferenceServerClient(router.http_endpoint)
    for _ in range(http_requests):
        tensor = httpclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(data)
        http.infer("simulated", [tensor])
    grpc = grpcclient.InferenceServerClient(router.grpc_endpoint)
    for _ in range(grpc_requests):
        tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(data)
        grpc.infer("simulated", [tensor])
    http.close()
    grpc.close()


@pytest.mark.timeout(420)
def test_the_routers_counts_scale_up_for_a_surge_before_the_metrics_show_it(
    stack: tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus],
) -> None:
    cluster, router, prometheus = stack
    surge_asked = threading.Event()
    asked_at: list[float] = []

    def on_surge(namespace: str, name: str) -> None:
        asked_at.append(time.monotonic())
        surge_asked.set()

    autoscaler = prometheus_autoscaler(
        cluster, router, prometheus, NAMESPACE, NAME,
        read_routers=True, window="30s", stale_after_s=60, on_surge=on_surge,
    )  # fmt: skip

    # What the reader counts: one per HTTP request and per gRPC call (streams on one h2
    # connection), nothing else (the health checks go to the servers, not through a backend).
    reader = HaproxyStats(port=router.options.metrics_port)
    before = reader(router.bind_address)
    _infer(router, http_requests=30, grpc_requests=20)
    after = reader(router.bind_address)
    assert not isinstance(before, str) and not isinstance(after, str)
    assert after.routed - before.routed == 50
    assert after.in_flight == 0

    stop = threading.Event()

    def tick() -> None:
        # The autoscale scheduler: every period, and at once when the router job asks.
        while not stop.is_set():
            period = autoscaler.tick(NAMESPACE, NAME) or 10.0
            surge_asked.wait(period)
            surge_asked.clear()

    ticks = threading.Thread(target=tick, daemon=True)
    ticks.start()
    threads = [ticks, scheduled(stop, lambda: autoscaler.router_tick(NAMESPACE, NAME), 2.0)]
    started = time.monotonic()
    try:
        bench = subprocess.run(
            bench_simulated(
                router.http_endpoint,
                "--schedule",
                f"step:{BASE_RPS}@0,{SURGE_RPS}@{SURGE_AT_S}",
                "--duration",
                str(LOAD_S),
                "--timeout",
                "15",
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            timeout=LOAD_S + 120,
            check=False,
        )
        assert bench.returncode == 0, bench.stderr[-2000:]
    finally:
        stop.set()
        surge_asked.set()
        for thread in threads:
            thread.join(timeout=30)

    surge_at = started + SURGE_AT_S
    ups = [message for _, reason, message in cluster.events if reason == "ScaledUp"]
    assert ups, f"no scale-up under a {SURGE_RPS / BASE_RPS:.0f}x surge: {cluster.events}"
    first = ups[0]
    # The first scale-up came from the routers' counts, while the metrics (a 15 s scrape, rates
    # over 30 s) still showed about the load before the surge.
    found = re.search(r"at (\d+) req/s; model says \d+ \(router (\d+) req/s, [^)]*since a change", first)
    assert found, first
    metrics_rps, router_rps = int(found.group(1)), int(found.group(2))
    assert metrics_rps < (BASE_RPS + SURGE_RPS) / 2, first
    assert router_rps >= 2 * BASE_RPS, first
    asked = [at - surge_at for at in asked_at if at >= surge_at - 2]
    assert asked, "the router job never asked for a decision"
    print(f"decision asked {asked[0]:.1f}s after the surge; scale-ups:", *ups, sep="\n")
