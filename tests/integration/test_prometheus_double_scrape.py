"""A Triton pod scraped twice (the chart's PodMonitor and an annotation-based kubernetes-pods
job: the pods carry prometheus.io/scrape) has each series twice in a real Prometheus. The
operator's rate and pending queries count each server once, not each scrape."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.observations import PrometheusSource
from tritonscale_sandbox.prometheus import LocalPrometheus, ScrapeTarget
from tritonscale_sandbox.triton import SIMULATED_MODEL, TritonPool

pytestmark = pytest.mark.integration

POD = "svc-ondemand-0"


def _drive(server_endpoint: str, stop: threading.Event) -> None:
    client = httpclient.InferenceServerClient(url=server_endpoint, connection_timeout=10, network_timeout=30)
    data = np.zeros((1, 3), dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 3], "FP32")
    tensor.set_data_from_numpy(data)
    while not stop.is_set():
        client.infer(SIMULATED_MODEL, [tensor])
        time.sleep(0.02)


@pytest.mark.timeout(180)
def test_a_pod_scraped_by_two_jobs_is_counted_once(triton_pool: TritonPool, tmp_path: Path) -> None:
    server = triton_pool[0]
    address = f"{server.host}:{server.metrics_port}"
    labels = {"namespace": "t", "pod": POD}
    prometheus = LocalPrometheus(
        [
            ScrapeTarget(address, {**labels, "scraped_by": "podmonitor"}),
            ScrapeTarget(address, {**labels, "scraped_by": "kubernetes-pods"}),
        ],
        scrape_interval_s=1.0,
        work_dir=tmp_path / "prometheus",
    )
    target = ScalingTarget(
        namespace="t", name="svc", models=(SIMULATED_MODEL,), percentile=95.0, pod_prefixes=("svc-ondemand",),
        ready_replicas=1, pod_selector={"app.kubernetes.io/instance": "svc"},
    )  # fmt: skip
    stop = threading.Event()
    driver = threading.Thread(target=_drive, args=(server.http_endpoint, stop), daemon=True)
    with prometheus:
        driver.start()
        try:
            time.sleep(20)  # the window below, full: about twenty scrapes by each job
            selector = f'namespace="t",pod="{POD}",model="{SIMULATED_MODEL}"'
            once = f'sum(rate(nv_inference_request_success{{{selector},scraped_by="podmonitor"}}[15s]))'
            every = f"sum(rate(nv_inference_request_success{{{selector}}}[15s]))"
            observation = PrometheusSource(prometheus.url, window="15s").observe(target)
            single = float(prometheus.query(once)[0]["value"][1])  # type: ignore[index]
            summed = float(prometheus.query(every)[0]["value"][1])  # type: ignore[index]
        finally:
            stop.set()
            driver.join(10)
    assert single > 5, single  # traffic reached the server and was scraped
    assert summed > 1.8 * single, (summed, single)  # both jobs' series are there
    assert observation.arrival_rate_rps is not None
    # The scrapes are a second apart, so the two jobs' windows differ a little.
    assert observation.arrival_rate_rps == pytest.approx(single, rel=0.15), (observation, single)
