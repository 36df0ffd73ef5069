"""The operator's /metrics: series for every InferenceService, read from its status."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from tritonscale.metrics import InferenceServiceCollector


def body(name: str, status: dict[str, Any], autoscaling: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"repository": "s3://m", "names": ["m"]}}
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec, "status": status}


AUTOSCALED = body(
    "bert",
    {
        "desiredReplicas": 5,
        "onDemandReplicas": 1,
        "spotReplicas": 3,
        "routerReplicas": 2,
        "observedLatencyMilliseconds": 142.0,
        "targetLatencyMilliseconds": 100.0,
        "latencyPercentile": 95.0,
        "observedRateRps": 310.0,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ScalingUp",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    },
    {"minReplicas": 2, "maxReplicas": 8},
)
FIXED = body("echo", {"desiredReplicas": 1, "onDemandReplicas": 1, "routerReplicas": 1})


def scrape(*bodies: dict[str, Any]) -> dict[str, float]:
    collector = InferenceServiceCollector()
    collector.source = lambda: list(bodies)
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def test_every_service_has_replica_series_autoscaled_or_not() -> None:
    samples = scrape(AUTOSCALED, FIXED)
    assert samples['tritonscale_desired_replicas{name="echo",namespace="ns"}'] == 1
    assert samples['tritonscale_ready_replicas{capacity_type="on-demand",name="echo",namespace="ns"}'] == 1
    assert samples['tritonscale_ready_replicas{capacity_type="spot",name="echo",namespace="ns"}'] == 0
    assert samples['tritonscale_desired_replicas{name="bert",namespace="ns"}'] == 5
    assert samples['tritonscale_ready_replicas{capacity_type="spot",name="bert",namespace="ns"}'] == 3
    assert samples['tritonscale_router_ready_replicas{name="bert",namespace="ns"}'] == 2


def test_latency_target_rate_bounds_and_conditions() -> None:
    samples = scrape(AUTOSCALED, FIXED)
    assert (
        samples['tritonscale_observed_latency_milliseconds{name="bert",namespace="ns",percentile="95"}']
        == 142
    )
    assert (
        samples['tritonscale_target_latency_milliseconds{name="bert",namespace="ns",percentile="95"}'] == 100
    )
    assert samples['tritonscale_observed_rate_rps{name="bert",namespace="ns"}'] == 310
    assert samples['tritonscale_autoscaling_replicas_limit{bound="max",name="bert",namespace="ns"}'] == 8
    assert samples['tritonscale_condition{condition="Ready",name="bert",namespace="ns",status="false"}'] == 1
    assert samples['tritonscale_condition{condition="Ready",name="bert",namespace="ns",status="true"}'] == 0
    assert not any('name="echo"' in s and "latency" in s for s in samples)  # nothing measured, no series
    assert not any('name="echo"' in s and "replicas_limit" in s for s in samples)


def test_a_deleted_service_leaves_no_series_and_a_bad_status_gives_none() -> None:
    assert not any('name="bert"' in s for s in scrape(FIXED))
    broken = body("broken", {"desiredReplicas": "many"})
    assert not any('name="broken"' in s for s in scrape(broken))
