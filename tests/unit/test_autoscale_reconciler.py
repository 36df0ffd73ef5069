"""The autoscaling loop against the in-memory cluster: status, events, and applied replicas."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from tests.builders import make_inference_service
from tests.unit.fakes import FakeCluster
from tritonscale.api.observation import Observation, ScalingTarget
from tritonscale.api.resource import PAUSE_ANNOTATION
from tritonscale.handlers.operator import ignored_manual_scale
from tritonscale.reconcilers.autoscale import AutoscaleReconciler
from tritonscale.reconcilers.stack import StackReconciler

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedSource:
    def __init__(self) -> None:
        self.next: Observation | None = None
        self.targets: list[ScalingTarget] = []

    def observe(self, target: ScalingTarget) -> Observation:
        self.targets.append(target)
        assert self.next is not None
        return self.next


def setup(**autoscaling: object) -> tuple[FakeCluster, AutoscaleReconciler, ScriptedSource]:
    cluster = FakeCluster()
    spec = {"minReplicas": 1, "maxReplicas": 8, "periodSeconds": 5, **autoscaling}
    cluster.add_service(
        make_inference_service(name="bert", namespace="nlp", spec__replicas=2, spec__autoscaling=spec)
    )
    stack = StackReconciler(cluster, clock=lambda: NOW)
    stack.reconcile("nlp", "bert")
    cluster.make_all_ready()
    source = ScriptedSource()
    clock = iter(float(t) for t in range(0, 10_000, 5))
    autoscaler = AutoscaleReconciler(
        cluster, stack, lambda s: (source, "triton"), clock=lambda: NOW, monotonic=lambda: next(clock)
    )
    return cluster, autoscaler, source


def status(cluster: FakeCluster) -> dict[str, object]:
    found: dict[str, object] = cluster.services[("nlp", "bert")]["status"]
    return found


def conditions(cluster: FakeCluster) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status(cluster)["conditions"]}  # type: ignore[attr-defined]


def overload() -> Observation:
    return Observation(
        arrival_rate_rps=400.0, latency_ms=180.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )


def test_a_decision_is_recorded_and_applied() -> None:
    cluster, autoscaler, source = setup()
    source.next = overload()
    period = autoscaler.tick("nlp", "bert")
    assert period == 5.0
    desired = status(cluster)["desiredReplicas"]
    assert isinstance(desired, int) and desired > 2
    assert cluster.deployment("nlp", "bert-ondemand")["spec"]["replicas"] == desired
    last = status(cluster)["lastScale"]
    assert (
        last["from"] == 2 and last["to"] == desired and "p95 180 ms > 100 ms at 400 req/s" in last["reason"]
    )  # type: ignore[index]
    assert status(cluster)["observedLatencyMilliseconds"] == 180.0
    assert conditions(cluster)["MetricsAvailable"] == "True"
    assert ("Normal", "ScaledUp") in [(t, r) for t, r, _ in cluster.events]
    assert source.targets[0].pod_prefixes == ("bert-ondemand", "bert-spot")


def test_status_event_and_metric_say_the_same_decision() -> None:
    cluster, autoscaler, source = setup()
    labels = {"namespace": "nlp", "name": "bert", "verdict": "Panic"}
    before = REGISTRY.get_sample_value("tritonscale_autoscaler_decisions_total", labels) or 0.0
    source.next = overload()
    autoscaler.tick("nlp", "bert")
    reason = status(cluster)["lastScale"]["reason"]  # type: ignore[index]
    assert "panic, scaling up 2 -> " in reason  # 180 ms on a 100 ms objective
    assert [m for t, r, m in cluster.events if r == "ScaledUp"] == [reason]
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_decisions_total", labels) == before + 1


def test_missing_metrics_hold_and_warn_once() -> None:
    cluster, autoscaler, source = setup()
    source.next = Observation.unavailable("Prometheus unreachable", ready_replicas=2)
    for _ in range(3):
        autoscaler.tick("nlp", "bert")
    assert status(cluster)["desiredReplicas"] == 2
    assert conditions(cluster)["MetricsAvailable"] == "False"
    assert "observedLatencyMilliseconds" not in status(cluster)
    assert [r for _, r, _ in cluster.events].count("MetricsUnavailable") == 1
    source.next = Observation(arrival_rate_rps=10.0, latency_ms=30.0, ready_replicas=2, mean_compute_ms=23.0)
    autoscaler.tick("nlp", "bert")
    assert conditions(cluster)["MetricsAvailable"] == "True"
    assert "MetricsAvailable" in [r for _, r, _ in cluster.events]


def test_max_replicas_bound_is_a_condition() -> None:
    cluster, autoscaler, source = setup(maxReplicas=3)
    source.next = Observation(
        arrival_rate_rps=3000.0, latency_ms=900.0, ready_replicas=2, mean_compute_ms=23.0
    )
    autoscaler.tick("nlp", "bert")
    assert status(cluster)["desiredReplicas"] == 3
    assert conditions(cluster)["ScalingLimited"] == "True"


def test_switching_autoscaling_off_clears_its_status() -> None:
    cluster, autoscaler, source = setup()
    source.next = overload()
    autoscaler.tick("nlp", "bert")
    cluster.services[("nlp", "bert")]["spec"]["autoscaling"]["enabled"] = False
    autoscaler.tick("nlp", "bert")
    assert "MetricsAvailable" not in conditions(cluster) and "ScalingLimited" not in conditions(cluster)
    assert "observedLatencyMilliseconds" not in status(cluster)


def test_the_pause_annotation_freezes_the_autoscaler_and_spec_replicas_applies() -> None:
    cluster, autoscaler, source = setup()
    source.next = overload()
    autoscaler.tick("nlp", "bert")
    assert conditions(cluster)["ScalingActive"] == "True"
    scaled = status(cluster)["desiredReplicas"]
    service = cluster.services[("nlp", "bert")]
    service["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    service["spec"]["replicas"] = 6  # `kubectl scale --replicas=6` once paused
    asked = len(source.targets)
    assert autoscaler.tick("nlp", "bert") is None, "a paused service is not ticked"
    assert len(source.targets) == asked, "a paused autoscaler observed"
    assert conditions(cluster)["ScalingActive"] == "False"
    assert "MetricsAvailable" not in conditions(cluster)
    autoscaler.stack.reconcile("nlp", "bert")
    assert cluster.deployment("nlp", "bert-ondemand")["spec"]["replicas"] == 6 != scaled
    assert status(cluster)["desiredReplicas"] == 6
    # Removing the annotation gives the count back to the autoscaler.
    del service["metadata"]["annotations"][PAUSE_ANNOTATION]
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == 5.0
    assert conditions(cluster)["ScalingActive"] == "True"


def test_kubectl_scale_of_an_autoscaled_service_is_answered_not_silently_dropped() -> None:
    body = make_inference_service(
        name="bert", namespace="nlp", spec__autoscaling={"minReplicas": 1, "maxReplicas": 8}
    )
    diff = [("change", ("spec", "replicas"), 2, 5)]
    message = ignored_manual_scale(body, diff)  # type: ignore[arg-type]
    assert message is not None
    assert "spec.replicas was set to 5" in message and PAUSE_ANNOTATION in message
    assert ignored_manual_scale(body, [("change", ("spec", "model"), 1, 2)]) is None  # type: ignore[arg-type]
    body["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    assert ignored_manual_scale(body, diff) is None  # type: ignore[arg-type]
    manual = make_inference_service(name="bert", namespace="nlp")
    assert ignored_manual_scale(manual, diff) is None  # type: ignore[arg-type]
