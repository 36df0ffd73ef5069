"""The fleet's latency percentile (issue 10, item 6) on real tritonservers.

Three replicas of unequal speed (one 4x slower, as on a slow node) under unequal load, each
driven by its own `tritonscale bench` writing a request log. The exact p95 of every request in
the summary window, from the logs, against what the operator estimates from Triton's own
summaries (TritonSource: the mixture of the replicas' distributions weighted by what each
served, policy/fleet_percentile.py), and against the two estimators used before: the weighted
mean of the replicas' p95 (the Triton source until now) and their maximum (the Prometheus
query until now).
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.integration.process_stack import bench_simulated
from tritonscale.api.observation import ScalingTarget
from tritonscale.clients.observations import TritonSource, _summaries
from tritonscale_sandbox.triton import SimulatedModel, TritonInstall, TritonPool, model_repository

pytestmark = pytest.mark.integration

MODEL = SimulatedModel(base_ms=15.0, per_item_ms=1.0, max_batch_size=4, max_queue_delay_us=0, jitter=0.4)
SLOW_FACTORS = {2: 4.0}
RATES = (24.0, 16.0, 4.0)
"""Requests per second to each replica: the slow one serves 9 % of them, more than the 5 %
beyond the p95, so the fleet's p95 lies inside its distribution and far from everyone's p95."""
SUMMARY_WINDOW_S = 60.0  # prometheus-cpp's Summary default max_age, which Triton keeps
DURATION_S = 90.0
OBJECTIVE_MS = 100.0
"""The objective the issue's bound is stated against: error <= 10 % of it."""


@pytest.fixture
def pool(triton_install: TritonInstall, tmp_path: Path) -> Iterator[TritonPool]:
    repository = model_repository(tmp_path / "models", [MODEL])
    with TritonPool(
        len(RATES),
        repository,
        install=triton_install,
        log_dir=tmp_path / "logs",
        models=(MODEL.name,),
        slow_factors=SLOW_FACTORS,
    ) as started:
        yield started


def _window_latencies_ms(log: Path, since_s: float) -> list[float]:
    with log.open() as rows:
        return [
            float(row["service_latency_ms"])
            for row in csv.DictReader(rows)
            if not row["error"] and float(row["due_s"]) >= since_s
        ]


@pytest.mark.timeout(300)
def test_the_operators_fleet_p95_is_within_a_tenth_of_the_objective_of_the_exact_one(
    pool: TritonPool, tmp_path: Path
) -> None:
    servers = pool.servers
    ((http_port, metrics_port),) = {(s.http_port, s.metrics_port) for s in servers}
    source = TritonSource(
        lambda target: [s.host for s in servers], http_port=http_port, metrics_port=metrics_port
    )
    target = ScalingTarget(
        namespace="t", name="fleet", models=(MODEL.name,), percentile=95.0, pod_prefixes=("fleet-ondemand",),
        ready_replicas=len(servers), pod_selector={"app.kubernetes.io/instance": "fleet"},
    )  # fmt: skip
    logs = [tmp_path / f"requests-{index}.csv" for index in range(len(servers))]
    benches = [
        subprocess.Popen(
            bench_simulated(
                f"{server.host}:{server.http_port}",
                "--rate",
                f"{rate:g}",
                "--duration",
                f"{DURATION_S:g}",
                "--timeout",
                "10",
                "--no-progress",
                "--requests-log",
                str(log),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for server, rate, log in zip(servers, RATES, logs, strict=True)
    ]
    try:
        time.sleep(DURATION_S - SUMMARY_WINDOW_S)
        source.observe(target)  # the counters at the window's start
        for bench in benches:
            _, stderr = bench.communicate(timeout=DURATION_S + 60)
            assert bench.returncode == 0, stderr[-2000:]
        observed = source.observe(target)
        summaries = [
            _summaries(
                requests.get(f"http://{s.host}:{metrics_port}/metrics", timeout=5).text, (MODEL.name,)
            )[0]
            for s in servers
        ]
    finally:
        for bench in benches:
            bench.kill()
    window = [_window_latencies_ms(log, DURATION_S - SUMMARY_WINDOW_S) for log in logs]
    exact = float(np.percentile(np.concatenate(window), 95))
    served = [len(latencies) for latencies in window]
    p95s = [summary[MODEL.name][0.95] for summary in summaries]
    weighted_mean = sum(n * p for n, p in zip(served, p95s, strict=True)) / sum(served)
    figures = {
        "exact_p95_ms": round(exact, 1),
        "operator_p95_ms": round(observed.latency_ms or float("nan"), 1),
        "weighted_mean_of_p95_ms": round(weighted_mean, 1),
        "max_of_p95_ms": round(max(p95s), 1),
        "replica_p95_ms": [round(p, 1) for p in p95s],
        "requests_in_window": served,
    }
    print(json.dumps(figures))
    assert observed.latency_ms is not None, observed
    error = abs(observed.latency_ms - exact)
    assert error <= 0.1 * OBJECTIVE_MS, figures
    assert error < abs(weighted_mean - exact) and error < abs(max(p95s) - exact), figures
