"""A rate query in the wrong units, with real components: real tritonservers behind a real
HAProxy rendered for the InferenceService, real Prometheus scraping them, `tritonscale bench`
sending a steady load, and the operator's autoscaler reading both Prometheus and the router.
`rateQuery` counts requests per minute (`increase` where `rate` was meant), a mistake that
reads 60x the load. The model's error cannot be learnt from that rate, and the user is told:
a Warning Event naming both rates and `MetricsAvailable` with reason `RatesDisagree`.
Only the Kubernetes API is replaced, by ProcessBackedCluster.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.process_stack import bench_simulated, process_stack, prometheus_autoscaler, scheduled
from tritonscale.policy.autoscaling import FEEDBACK_PAUSE_NOTICE_S
from tritonscale_sandbox.local_stack import ProcessBackedCluster
from tritonscale_sandbox.prometheus import LocalPrometheus
from tritonscale_sandbox.router import LocalRouter
from tritonscale_sandbox.triton import SimulatedModel, TritonInstall

pytestmark = pytest.mark.integration

NAMESPACE, NAME = "default", "perminute"
LOAD_RPS = 10
# The notice comes FEEDBACK_PAUSE_NOTICE_S after the routers have a rate, plus a tick or two;
# once the query is fixed, the next tick with a fresh sample agrees.
PAUSED_BY_S = FEEDBACK_PAUSE_NOTICE_S + 60
RESUMED_BY_S = 45
LOAD_S = int(PAUSED_BY_S + RESUMED_BY_S + 30)
PER_MINUTE = 'sum(increase(nv_inference_request_success{namespace="${namespace}",pod=~"${pods}"}[1m]))'


@pytest.fixture
def stack(
    triton_install: TritonInstall, tmp_path: Path
) -> Iterator[tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus]]:
    with process_stack(
        tmp_path,
        triton_install,
        namespace=NAMESPACE,
        name=NAME,
        model=SimulatedModel("simulated", base_ms=10, per_item_ms=1, max_batch_size=2, max_queue_delay_us=0),
        autoscaling={
            # One replica: the rate read 60x too high must not start servers this test has no use for.
            "minReplicas": 1,
            "maxReplicas": 1,
            "periodSeconds": 10,
            "latency": {"targetMilliseconds": 150, "percentile": 95},
            "metrics": {"source": "prometheus", "rateQuery": PER_MINUTE},
        },
    ) as parts:
        yield parts


def _metrics_available(cluster: ProcessBackedCluster) -> dict[str, str]:
    conditions = cluster.body["status"].get("conditions", [])
    found: dict[str, str] = next((c for c in conditions if c["type"] == "MetricsAvailable"), {})
    return found


def _events(cluster: ProcessBackedCluster, wanted: str) -> list[str]:
    return [message for _, reason, message in cluster.events if reason == wanted]


def _wait_for(cluster: ProcessBackedCluster, wanted: str, within_s: float) -> list[str]:
    deadline = time.monotonic() + within_s
    while not _events(cluster, wanted) and time.monotonic() < deadline:
        time.sleep(1.0)
    return _events(cluster, wanted)


@pytest.mark.timeout(LOAD_S + 240)
def test_a_rate_query_in_other_units_pauses_the_feedback_and_says_so(
    stack: tuple[ProcessBackedCluster, LocalRouter, LocalPrometheus],
) -> None:
    cluster, router, prometheus = stack
    autoscaler = prometheus_autoscaler(
        cluster, router, prometheus, NAMESPACE, NAME, read_routers=True, window="30s", stale_after_s=60
    )
    stop = threading.Event()
    threads = [
        scheduled(stop, lambda: autoscaler.router_tick(NAMESPACE, NAME), 2.0),
        scheduled(stop, lambda: autoscaler.tick(NAMESPACE, NAME), 10.0),
    ]
    bench = subprocess.Popen(
        bench_simulated(
            router.http_endpoint,
            "--schedule",
            f"step:{LOAD_RPS}@0",
            "--duration",
            str(LOAD_S),
            "--timeout",
            "15",
            "--no-progress",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        paused = _wait_for(cluster, "FeedbackPaused", within_s=PAUSED_BY_S)
        available = _metrics_available(cluster)
        # The user fixes the query: the default one counts requests per second, and the two agree.
        fixed = cluster.get_inference_service(NAMESPACE, NAME)["spec"]["autoscaling"]  # type: ignore[index]
        del fixed["metrics"]["rateQuery"]
        cluster.update_spec({"autoscaling": fixed})
        resumed = _wait_for(cluster, "FeedbackResumed", within_s=RESUMED_BY_S)
        _, stderr = bench.communicate(timeout=LOAD_S + 60)
        assert bench.returncode == 0, stderr[-2000:]
    finally:
        bench.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert len(paused) == 1, cluster.events
    found = re.search(r"the routers count (\d+) req/s, the metrics (\d+)", paused[0])
    assert found, paused[0]
    routed, measured = int(found.group(1)), int(found.group(2))
    assert abs(routed - LOAD_RPS) <= 3, paused[0]
    assert measured >= 30 * LOAD_RPS, paused[0]  # about 60x once the minute has filled
    assert "rateQuery" in paused[0], paused[0]
    assert available.get("status") == "True" and available.get("reason") == "RatesDisagree", available
    assert "model feedback paused" in available.get("message", ""), available
    assert len(resumed) == 1, cluster.events
    assert _events(cluster, "FeedbackPaused") == paused, cluster.events  # not paused again
    assert _metrics_available(cluster).get("reason") == "MetricsFresh", _metrics_available(cluster)
    print(paused[0], resumed[0], sep="\n")
