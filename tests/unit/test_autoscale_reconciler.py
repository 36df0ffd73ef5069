"""The autoscaling loop against the in-memory cluster: status, events, and applied replicas."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.builders import make_inference_service
from tests.unit.fakes import FakeCluster
from tritonscale.api.observation import Observation, RouterReading, RouterSignal, ScalingTarget
from tritonscale.api.resource import PAUSE_ANNOTATION, InferenceService, parse_inference_service
from tritonscale.clients.pod_watch import ManagedPods
from tritonscale.errors import TransientError
from tritonscale.handlers.operator import ignored_manual_scale
from tritonscale.policy.autoscaling import FEEDBACK_PAUSE_NOTICE_S, Verdict
from tritonscale.reconcilers.autoscale import CONFLICT_RETRY_S, AutoscaleReconciler
from tritonscale.reconcilers.stack import StackReconciler
from tritonscale.reconcilers.variants import VariantController
from tritonscale.render.names import COMPONENT_ROUTER, COMPONENT_TRITON, StackNames
from tritonscale.render.router import variant_cuts

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedSource:
    def __init__(self) -> None:
        self.next: Observation | None = None
        self.targets: list[ScalingTarget] = []
        self.forgotten: list[tuple[str, str]] = []

    def observe(self, target: ScalingTarget) -> Observation:
        self.targets.append(target)
        assert self.next is not None
        return self.next

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))


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


def test_a_count_whose_apply_failed_for_now_is_applied_at_the_next_tick() -> None:
    """Status holds the new count before it is applied; a transient failure of the apply must
    not leave it there unapplied (the next tick sees no change to make)."""
    cluster, autoscaler, source = setup()
    real_apply = cluster.apply
    failures = iter([TransientError("429: too many requests", delay=2.0)])

    def throttled_once(
        obj: dict[str, Any], *, current: dict[str, Any] | None, dry_run: bool = False
    ) -> dict[str, Any]:
        if not dry_run and (error := next(failures, None)) is not None:
            raise error
        return real_apply(obj, current=current, dry_run=dry_run)

    cluster.apply = throttled_once  # type: ignore[method-assign]
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == 2.0  # again as soon as the API server asks
    desired = status(cluster)["desiredReplicas"]
    assert isinstance(desired, int) and desired > 2
    assert cluster.deployment("nlp", "bert-ondemand")["spec"]["replicas"] == 2
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == 5.0
    assert status(cluster)["desiredReplicas"] == desired
    assert cluster.deployment("nlp", "bert-ondemand")["spec"]["replicas"] == desired


def test_status_event_and_metric_say_the_same_decision() -> None:
    cluster, autoscaler, source = setup()

    def counts() -> dict[Verdict, float]:
        return {
            verdict: REGISTRY.get_sample_value(
                "tritonscale_autoscaler_decisions_total",
                {"namespace": "nlp", "name": "bert", "verdict": verdict.value},
            )
            or 0.0
            for verdict in Verdict
        }

    before = counts()
    source.next = overload()
    autoscaler.tick("nlp", "bert")
    after = counts()
    reason = status(cluster)["lastScale"]["reason"]  # type: ignore[index]
    assert "; scaling up 2 -> " in reason  # 180 ms on a 100 ms objective
    assert [m for t, r, m in cluster.events if r == "ScaledUp"] == [reason]
    assert [v for v in Verdict if after[v] != before[v]] == [Verdict.SCALE_UP]
    assert after[Verdict.SCALE_UP] == before[Verdict.SCALE_UP] + 1


def test_every_decision_is_logged_changes_at_info_holds_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    cluster, autoscaler, source = setup()
    caplog.set_level(logging.DEBUG, logger="tritonscale.reconcilers.autoscale")
    source.next = overload()
    autoscaler.tick("nlp", "bert")
    source.next = Observation.unavailable("Prometheus unreachable", ready_replicas=2)
    autoscaler.tick("nlp", "bert")
    logged = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "tritonscale.reconcilers.autoscale"
    ]
    reason = status(cluster)["lastScale"]["reason"]  # type: ignore[index]
    assert logged[0] == (logging.INFO, f"nlp/bert ScaleUp: {reason}")
    assert logged[1][0] == logging.DEBUG
    assert logged[1][1].startswith("nlp/bert MetricsMissing: metrics missing (Prometheus unreachable)")


def test_missing_metrics_hold_and_warn_once() -> None:
    cluster, autoscaler, source = setup()
    source.next = Observation.unavailable("Prometheus unreachable", ready_replicas=2)
    for _ in range(3):
        autoscaler.tick("nlp", "bert")
    assert status(cluster)["desiredReplicas"] == 2
    assert conditions(cluster)["MetricsAvailable"] == "False"
    missing = next(c for c in status(cluster)["conditions"] if c["type"] == "MetricsAvailable")
    assert "never scaled down without them" in missing["message"]
    assert "observedLatencyMilliseconds" not in status(cluster)
    assert status(cluster)["latencyOfObjective"] == "p95 -/100ms"
    assert [r for _, r, _ in cluster.events].count("MetricsUnavailable") == 1
    source.next = Observation(arrival_rate_rps=10.0, latency_ms=30.0, ready_replicas=2, mean_compute_ms=23.0)
    autoscaler.tick("nlp", "bert")
    assert conditions(cluster)["MetricsAvailable"] == "True"
    assert "MetricsAvailable" in [r for _, r, _ in cluster.events]


def test_partial_metrics_are_said_in_the_condition_and_the_reason() -> None:
    cluster, autoscaler, source = setup()
    partial = "statistics from 1 of 2 ready pods; 10.0.0.2 connection refused"
    source.next = Observation(
        arrival_rate_rps=1.0, latency_ms=5.0, ready_replicas=2, mean_compute_ms=23.0, partial=partial
    )
    for _ in range(3):
        autoscaler.tick("nlp", "bert")
    metrics = next(c for c in status(cluster)["conditions"] if c["type"] == "MetricsAvailable")  # type: ignore[attr-defined]
    assert (metrics["status"], metrics["reason"]) == ("True", "MetricsPartial")
    assert partial in metrics["message"] and "no scale-down" in metrics["message"]
    assert status(cluster)["desiredReplicas"] == 2


def test_max_replicas_bound_is_a_condition() -> None:
    cluster, autoscaler, source = setup(maxReplicas=3)
    source.next = Observation(
        arrival_rate_rps=3000.0, latency_ms=900.0, ready_replicas=2, mean_compute_ms=23.0
    )
    autoscaler.tick("nlp", "bert")
    assert status(cluster)["desiredReplicas"] == 3
    assert conditions(cluster)["ScalingLimited"] == "True"
    limited = next(c for c in status(cluster)["conditions"] if c["type"] == "ScalingLimited")
    assert limited["reason"] == "AtMaxReplicas"
    assert "(limited by maxReplicas 3)" in limited["message"]
    assert limited["message"].endswith("raise spec.autoscaling.maxReplicas to let it hold the objective")
    # kubectl get shows ready of desired and the latency against the objective.
    assert status(cluster)["readyOfDesired"] == "2/3"
    assert status(cluster)["latencyOfObjective"] == "p95 900/100ms"


def test_switching_autoscaling_off_clears_its_status() -> None:
    cluster, autoscaler, source = setup()
    source.next = overload()
    autoscaler.tick("nlp", "bert")
    cluster.services[("nlp", "bert")]["spec"]["autoscaling"]["enabled"] = False
    autoscaler.tick("nlp", "bert")
    assert "MetricsAvailable" not in conditions(cluster) and "ScalingLimited" not in conditions(cluster)
    assert "observedLatencyMilliseconds" not in status(cluster)
    # Its source forgets the counters too: a rate from them after a pause would average it in.
    assert source.forgotten == [("nlp", "bert")]


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


def triton_pod(name: str, created: str, ready_at: str, ip: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "nlp",
            "creationTimestamp": created,
            "labels": {
                "app.kubernetes.io/instance": "bert",
                "app.kubernetes.io/component": "triton",
                "app.kubernetes.io/managed-by": "tritonscale",
            },
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}],
        },
    }


def test_cold_start_and_batching_are_learnt_from_the_service_and_shown() -> None:
    cluster, autoscaler, source = setup()
    asked: list[list[str]] = []

    def configs(target: ScalingTarget, hosts: list[str]) -> list[dict[str, object]] | str:
        asked.append(hosts)
        return [{"max_batch_size": 4, "dynamic_batching": {}}]

    autoscaler.read_model_configs = configs
    cluster.pods[("nlp", "bert-a")] = triton_pod(
        "bert-a", "2026-01-01T00:00:00Z", "2026-01-01T00:00:40Z", "10.0.0.1"
    )
    cluster.pods[("nlp", "bert-b")] = triton_pod(
        "bert-b", "2026-01-01T00:01:00Z", "2026-01-01T00:01:50Z", "10.0.0.2"
    )
    source.next = Observation(
        arrival_rate_rps=40.0, latency_ms=50.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    autoscaler.tick("nlp", "bert")
    model = status(cluster)["capacityModel"]
    assert model == {
        "coldStartSeconds": 45.0,
        "coldStartSource": "median of the last 2 pod starts",
        "maxBatch": 4,
        "maxBatchSource": "model configuration (dynamic batching, max_batch_size 4)",
    }
    assert asked == [["10.0.0.1", "10.0.0.2"]]
    autoscaler.tick("nlp", "bert")  # nothing changed: nothing re-read
    assert len(asked) == 1
    cluster.pods[("nlp", "bert-c")] = triton_pod(
        "bert-c", "2026-01-01T00:02:00Z", "2026-01-01T00:03:40Z", "10.0.0.3"
    )
    source.next = Observation(
        arrival_rate_rps=40.0, latency_ms=50.0, ready_replicas=3, mean_compute_ms=23.0, average_batch=1.0
    )
    autoscaler.tick("nlp", "bert")  # one more ready pod: a new start to learn from
    assert len(asked) == 2
    assert status(cluster)["capacityModel"]["coldStartSeconds"] == 50.0  # type: ignore[index]


class _NoPodServer:
    def list_pod_for_all_namespaces(self, **_: object) -> None:
        raise AssertionError("the watch is fed by hand here")


def test_cold_start_and_configurations_come_from_the_pod_watch_without_a_list() -> None:
    """At 1,000 services a list of each one's Triton pods every 10 minutes was 1.7 requests a
    second; the watch already holds their starts and addresses. A watch behind the count of
    ready pods is looked at again within a minute; while it cannot answer (not listed yet,
    reconnecting) the pods are listed as before."""
    cluster, autoscaler, source = setup()
    listed: list[dict[str, str]] = []
    list_pods = cluster.list_pods
    cluster.list_pods = lambda namespace, selector: listed.append(selector) or list_pods(namespace, selector)  # type: ignore[method-assign,func-returns-value]
    asked: list[list[str]] = []
    autoscaler.read_model_configs = lambda target, hosts: (
        asked.append(hosts) or [{"max_batch_size": 4, "dynamic_batching": {}}]
    )  # type: ignore[func-returns-value]
    managed = ManagedPods(_NoPodServer())
    (scope,) = managed.watches.values()

    def watched(name: str, created: str, ready_at: str, ip: str) -> None:
        pod = triton_pod(name, created, ready_at, ip)
        pod["metadata"]["resourceVersion"] = "1"  # type: ignore[index]
        scope.apply("ADDED", pod)  # not in the cluster's list: a list finds no start

    watched("bert-a", "2026-01-01T00:00:00Z", "2026-01-01T00:00:40Z", "10.0.0.1")
    watched("bert-b", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "10.0.0.2")
    router = triton_pod("bert-router-a", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "10.0.9.1")
    router["metadata"]["labels"]["app.kubernetes.io/component"] = "router"  # type: ignore[index]
    router["metadata"]["resourceVersion"] = "1"  # type: ignore[index]
    scope.apply("ADDED", router)  # not a Triton pod: neither a start nor a configuration
    scope.synced = True
    autoscaler.pod_addresses = managed.ready_addresses
    autoscaler.starts_and_addresses = managed.starts_and_addresses
    now = [0.0]
    autoscaler.monotonic = lambda: now[0]

    def tick(at: float, ready: int) -> float:
        now[0] = at
        source.next = Observation(
            arrival_rate_rps=40.0,
            latency_ms=50.0,
            ready_replicas=ready,
            mean_compute_ms=23.0,
            average_batch=1.0,
        )
        autoscaler.tick("nlp", "bert")
        return status(cluster)["capacityModel"]["coldStartSeconds"]  # type: ignore[index,no-any-return]

    assert tick(0.0, ready=2) == 50.0
    assert status(cluster)["capacityModel"]["maxBatch"] == 4  # type: ignore[index]
    assert listed == [] and asked == [["10.0.0.1", "10.0.0.2"]]
    # A third pod counted Ready before the watch shows it: looked for again within a minute,
    # not in ten.
    assert tick(10.0, ready=3) == 50.0 and len(asked) == 2
    watched("bert-c", "2026-01-01T00:02:00Z", "2026-01-01T00:03:10Z", "10.0.0.3")
    assert tick(20.0, ready=3) == 50.0 and len(asked) == 2
    assert tick(71.0, ready=3) == 60.0  # the median of 40, 60 and 70 s
    assert asked[-1] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] and listed == []
    assert tick(90.0, ready=3) == 60.0 and len(asked) == 3  # all found: the next look in 10 minutes
    scope.synced = False  # the watch reconnects: the next re-learning lists
    cluster.pods[("nlp", "bert-d")] = triton_pod(
        "bert-d", "2026-01-01T00:02:00Z", "2026-01-01T00:02:45Z", "10.0.0.4"
    )
    assert tick(672.0, ready=3) == 45.0
    assert listed == [StackNames("bert", "nlp").component_selector(COMPONENT_TRITON)]
    assert asked[-1] == ["10.0.0.4"]


def test_an_operator_that_does_not_read_triton_pods_does_not_list_them_for_a_configuration() -> None:
    """An unread model configuration is tried again every minute (a pod may answer next time);
    an operator that never reads one (--no-read-triton-pods) lists the pods only as often as
    the cold start is re-learnt: 1,000 services listing every minute cost 17 requests a second."""

    def lists_in_five_minutes(reader: object) -> tuple[int, str]:
        cluster, autoscaler, source = setup()  # no configuration reader: switched off
        if reader is not None:
            autoscaler.read_model_configs = reader  # type: ignore[assignment]
        listed: list[dict[str, str]] = []
        list_pods = cluster.list_pods
        cluster.list_pods = lambda namespace, selector: (
            listed.append(selector) or list_pods(namespace, selector)
        )  # type: ignore[method-assign]
        cluster.pods[("nlp", "bert-a")] = triton_pod(
            "bert-a", "2026-01-01T00:00:00Z", "2026-01-01T00:00:40Z", "10.0.0.1"
        )
        source.next = Observation(
            arrival_rate_rps=40.0, latency_ms=50.0, ready_replicas=1, mean_compute_ms=23.0
        )
        now = [0.0]
        autoscaler.monotonic = lambda: now[0]
        for _ in range(60):  # 5 minutes of ticks 5 s apart
            autoscaler.tick("nlp", "bert")
            now[0] += 5.0
        return len(listed), status(cluster)["capacityModel"]["maxBatchSource"]  # type: ignore[index]

    switched_off = lists_in_five_minutes(None)
    assert switched_off[0] == 1 and "switched off" in switched_off[1]
    unanswered = lists_in_five_minutes(lambda target, hosts: "10.0.0.1 connection refused")
    assert unanswered[0] == 5 and "connection refused" in unanswered[1]


def test_the_spec_cold_start_wins_and_an_unreadable_configuration_says_why() -> None:
    cluster, autoscaler, source = setup(coldStartSeconds=120)
    autoscaler.read_model_configs = lambda target, hosts: "10.0.0.1 connection refused"
    cluster.pods[("nlp", "bert-a")] = triton_pod(
        "bert-a", "2026-01-01T00:00:00Z", "2026-01-01T00:00:40Z", "10.0.0.1"
    )
    source.next = Observation(arrival_rate_rps=40.0, latency_ms=50.0, ready_replicas=1, mean_compute_ms=23.0)
    autoscaler.tick("nlp", "bert")
    model = status(cluster)["capacityModel"]
    assert model["coldStartSeconds"] == 120.0  # type: ignore[index]
    assert model["coldStartSource"] == "spec.autoscaling.coldStartSeconds"  # type: ignore[index]
    assert model["maxBatch"] == 1  # type: ignore[index]
    assert "connection refused" in model["maxBatchSource"]  # type: ignore[index]


def _router_setup(
    readings: dict[str, RouterReading | str],
    variants: bool = False,
    cuts: dict[str, list[dict[str, int]]] | None = None,
    metrics: dict[str, str] | None = None,
    steady_spend: float = 0.0,
) -> tuple[FakeCluster, AutoscaleReconciler, ScriptedSource, list[float], list[tuple[str, str]]]:
    """A service with two Ready router pods read through `readings` (address -> counters or why
    not), a clock the test moves, and the surges the router job asked ticks for; with
    `variants`, an int8 variant under a 1-point budget whose cuts each router gets go to `cuts`."""
    cluster = FakeCluster()
    spec: dict[str, object] = {"minReplicas": 1, "maxReplicas": 40, "periodSeconds": 10}
    if metrics is not None:
        spec["metrics"] = metrics
    overrides: dict[str, object] = {}
    if variants:
        spec["accuracy"] = {"floor": 0.99, "steadySpend": steady_spend}
        overrides["spec__model"] = {
            "repository": "/models",
            "names": ["bert"],
            "variants": [{"name": "bert-int8", "accuracy": 0.99, "speedup": 2}],
        }
    cluster.add_service(
        make_inference_service(
            name="bert", namespace="nlp", spec__replicas=2, spec__autoscaling=spec, **overrides
        )
    )
    stack = StackReconciler(cluster, clock=lambda: NOW)
    stack.reconcile("nlp", "bert")
    cluster.make_all_ready()
    for index, address in enumerate(("10.0.0.1", "10.0.0.2")):
        cluster.pods[("nlp", f"bert-router-{index}")] = {
            "metadata": {
                "name": f"bert-router-{index}",
                "labels": StackNames("bert", "nlp").component_selector(COMPONENT_ROUTER),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "status": {
                "podIP": address,
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}
                ],
            },
        }
    source = ScriptedSource()
    now = [0.0]
    asked: list[tuple[str, str]] = []
    autoscaler = AutoscaleReconciler(
        cluster,
        stack,
        lambda s: (source, "prometheus"),
        clock=lambda: NOW,
        monotonic=lambda: now[0],
        read_router=lambda address: readings[address],
        on_surge=lambda namespace, name: asked.append((namespace, name)),
        set_router_cuts=(lambda address, held: cuts.setdefault(address, []).append(held) or held)
        if cuts is not None
        else None,
    )
    return cluster, autoscaler, source, now, asked


def test_the_router_job_sums_the_routers_and_asks_for_a_tick_when_they_surge() -> None:
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=1000.0, in_flight=3.0),
        "10.0.0.2": RouterReading(routed=5000.0, in_flight=4.0),
    }
    cluster, autoscaler, source, now, asked = _router_setup(readings)
    source.next = Observation(
        arrival_rate_rps=100.0, latency_ms=50.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    # 100 req/s in all for a minute (60 + 40 per 2 s), a decision at that rate...
    for step in range(31):
        now[0] = 2.0 * step
        assert autoscaler.router_tick("nlp", "bert") == 2.0
        readings["10.0.0.1"] = RouterReading(readings["10.0.0.1"].routed + 120, 3.0)  # type: ignore[union-attr]
        readings["10.0.0.2"] = RouterReading(readings["10.0.0.2"].routed + 80, 4.0)  # type: ignore[union-attr]
    autoscaler.tick("nlp", "bert")
    assert asked == []
    before = status(cluster)["desiredReplicas"]
    # ... then 1000 req/s: within a few reads the job asks for a tick, and the tick scales up
    # for the routers' rate while the metrics still say 100 req/s.
    for step in range(31, 35):
        now[0] = 2.0 * step
        autoscaler.router_tick("nlp", "bert")
        readings["10.0.0.1"] = RouterReading(readings["10.0.0.1"].routed + 1200, 30.0)  # type: ignore[union-attr]
        readings["10.0.0.2"] = RouterReading(readings["10.0.0.2"].routed + 800, 40.0)  # type: ignore[union-attr]
    assert asked and asked[0] == ("nlp", "bert")
    labels = {"namespace": "nlp", "name": "bert"}
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_surge_decisions_total", labels) >= len(asked)
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_router_rate_rps", labels) == 1000.0
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_router_in_flight_requests", labels) == 70.0
    autoscaler.tick("nlp", "bert")
    after = status(cluster)["desiredReplicas"]
    assert isinstance(before, int) and isinstance(after, int) and after > before
    assert "router 1000 req/s" in status(cluster)["lastScale"]["reason"]  # type: ignore[index]


def test_rates_that_disagree_for_minutes_warn_once_and_say_when_they_agree_again() -> None:
    """The metrics' rate reads 60x what the routers count (a rateQuery in requests per minute):
    the model's error cannot be learnt. A Warning Event, a log line and a gauge say so once
    the two have disagreed for FEEDBACK_PAUSE_NOTICE_S, and a Normal Event when they agree."""
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=1000.0, in_flight=1.0),
        "10.0.0.2": RouterReading(routed=1000.0, in_flight=1.0),
    }
    per_minute = "sum(increase(nv_inference_request_success[1m]))"
    cluster, autoscaler, source, now, _ = _router_setup(readings, metrics={"rateQuery": per_minute})
    labels = {"namespace": "nlp", "name": "bert"}

    def run_for(seconds: float, metrics_rps: float) -> None:
        source.next = Observation(
            arrival_rate_rps=metrics_rps,
            latency_ms=40.0,
            ready_replicas=2,
            mean_compute_ms=23.0,
            average_batch=1.0,
        )
        for _ in range(int(seconds / 2)):
            now[0] += 2.0
            autoscaler.router_tick("nlp", "bert")
            for address, reading in readings.items():  # 100 req/s in all
                readings[address] = RouterReading(reading.routed + 100, 1.0)  # type: ignore[union-attr]
            if now[0] % 10 == 0:
                autoscaler.tick("nlp", "bert")

    def warnings() -> list[str]:
        return [message for _, reason, message in cluster.events if reason == "FeedbackPaused"]

    run_for(60, 100.0)  # agreeing: the routers' rate since their change point is the load
    run_for(FEEDBACK_PAUSE_NOTICE_S - 20, 6000.0)
    assert warnings() == []
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_feedback_paused", labels) == 0.0
    run_for(60, 6000.0)
    (warning,) = warnings()
    assert "the routers count 100 req/s, the metrics 6000" in warning
    assert "does spec.autoscaling.metrics.rateQuery return requests per second" in warning
    available = next(c for c in status(cluster)["conditions"] if c["type"] == "MetricsAvailable")  # type: ignore[attr-defined]
    assert available["reason"] == "RatesDisagree" and "routers count 100 req/s" in available["message"]
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_feedback_paused", labels) == 1.0
    run_for(20, 100.0)
    assert len(warnings()) == 1
    assert "FeedbackResumed" in [reason for _, reason, _ in cluster.events]
    assert conditions(cluster)["MetricsAvailable"] == "True"
    available = next(c for c in status(cluster)["conditions"] if c["type"] == "MetricsAvailable")  # type: ignore[attr-defined]
    assert available["reason"] == "MetricsFresh"
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_feedback_paused", labels) == 0.0


def test_a_router_that_goes_away_or_restarts_is_not_a_surge() -> None:
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=1000.0, in_flight=1.0),
        "10.0.0.2": RouterReading(routed=1000.0, in_flight=1.0),
    }
    _, autoscaler, source, now, asked = _router_setup(readings)
    source.next = Observation(
        arrival_rate_rps=100.0, latency_ms=50.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    for step in range(40):
        now[0] = 2.0 * step
        autoscaler.router_tick("nlp", "bert")
        if step == 10:
            autoscaler.tick("nlp", "bert")
        if step == 15:
            readings["10.0.0.2"] = "connection refused"
        elif step == 20:
            readings["10.0.0.2"] = RouterReading(routed=7.0, in_flight=1.0)  # restarted
        else:
            for address, reading in readings.items():
                if isinstance(reading, RouterReading):
                    readings[address] = RouterReading(reading.routed + 100, 1.0)
    assert asked == []
    signal = autoscaler._router_signal("nlp", "bert")
    assert signal is not None and not signal.surged


def test_with_no_router_answering_the_job_waits_and_the_ticks_go_on_without() -> None:
    readings: dict[str, RouterReading | str] = {"10.0.0.1": "timeout", "10.0.0.2": "timeout"}
    _, autoscaler, source, now, asked = _router_setup(readings)
    source.next = Observation(
        arrival_rate_rps=100.0, latency_ms=50.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    labels = {"namespace": "nlp", "name": "bert"}
    failures = REGISTRY.get_sample_value("tritonscale_autoscaler_router_read_failures_total", labels) or 0.0
    calls = []
    autoscaler.read_router = lambda address: calls.append(address) or readings[address]  # type: ignore[func-returns-value]
    assert autoscaler.router_tick("nlp", "bert") == 2.0
    now[0] = 10.0
    assert autoscaler.router_tick("nlp", "bert") == 2.0  # within the retry delay: no read
    assert len(calls) == 2
    assert (
        REGISTRY.get_sample_value("tritonscale_autoscaler_router_read_failures_total", labels) == failures + 2
    )
    assert REGISTRY.get_sample_value("tritonscale_autoscaler_router_rate_rps", labels) is None
    now[0] = 31.0
    autoscaler.router_tick("nlp", "bert")
    assert len(calls) == 4
    assert autoscaler.tick("nlp", "bert") == 10.0 and asked == []
    assert autoscaler._router_signal("nlp", "bert") is None


def test_a_surge_asks_for_one_decision_even_when_that_decision_cannot_act() -> None:
    """Metrics missing: the tick holds and sizes for nothing, so the router job must not ask
    again at every read for the same surge."""
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=0.0, in_flight=1.0),
        "10.0.0.2": RouterReading(routed=0.0, in_flight=1.0),
    }
    _, autoscaler, source, now, asked = _router_setup(readings)
    source.next = Observation.unavailable("Prometheus unreachable", ready_replicas=2)
    for step in range(60):
        now[0] = 2.0 * step
        autoscaler.router_tick("nlp", "bert")
        if step == 5:
            autoscaler.tick("nlp", "bert")  # a state exists: the job may ask from now on
        per_router = 100 if step < 30 else 1000  # a tenfold surge at 60 s
        for address, reading in readings.items():
            assert isinstance(reading, RouterReading)
            readings[address] = RouterReading(reading.routed + per_router, 1.0)
        if step > 30 and asked:
            autoscaler.tick("nlp", "bert")  # what the scheduler does when asked
    # Once per 10 % rise of the estimate as the segment after the change fills, not every read.
    assert 1 <= len(asked) <= 3, asked


def _advance_routers(
    readings: dict[str, RouterReading | str],
    now: list[float],
    autoscaler: AutoscaleReconciler,
    steps: int,
    per_router_rps: float,
    in_flight: float,
    variant_fraction: float = 0.0,
) -> None:
    """`steps` router reads 2 s apart, each router serving `per_router_rps`, that fraction of it
    on the variant."""
    for _ in range(steps):
        now[0] += 2.0
        for address, reading in list(readings.items()):
            assert isinstance(reading, RouterReading)
            done = 2.0 * per_router_rps
            served = (
                reading.served[0] + done * (1 - variant_fraction),
                reading.served[1] + done * variant_fraction,
            )
            readings[address] = RouterReading(reading.routed + done, in_flight, served)
        autoscaler.router_tick("nlp", "bert")


def test_an_overload_sends_the_variant_a_share_on_every_router_within_the_budget() -> None:
    """The operator's variant path on the in-memory cluster: routers read every 2 s, shares
    decided and set on each router, an Event when they start and stop, status and metrics."""
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0)),
        "10.0.0.2": RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0)),
    }
    cuts: dict[str, list[dict[str, int]]] = {}
    cluster, autoscaler, source, now, _ = _router_setup(readings, variants=True, cuts=cuts)

    def advance(steps: int, per_router_rps: float, in_flight: float) -> None:
        _advance_routers(readings, now, autoscaler, steps, per_router_rps, in_flight)

    # Steady at 2 x 40 req/s on 2 replicas: the model serves everything, no share is set.
    source.next = Observation(
        arrival_rate_rps=80.0, latency_ms=40.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    advance(30, 40.0, 2.0)
    autoscaler.tick("nlp", "bert")
    advance(30, 40.0, 2.0)
    assert {address: held[-1] for address, held in cuts.items()} == {
        "10.0.0.1": {"v0": 0},
        "10.0.0.2": {"v0": 0},
    }
    # A surge to 2 x 300 req/s with a queue at the routers: 2 replicas cannot carry it.
    advance(3, 300.0, 200.0)
    last = {address: held[-1]["v0"] for address, held in cuts.items()}
    assert all(cut > 0 for cut in last.values()) and len(set(last.values())) == 1
    labels = {"namespace": "nlp", "name": "bert"}
    share = REGISTRY.get_sample_value("tritonscale_variant_share", {**labels, "variant": "bert-int8"})
    assert share == last["10.0.0.1"] / 10000
    assert REGISTRY.get_sample_value("tritonscale_accuracy_budget_left_points", labels) is not None
    assert ("Normal", "VariantsServing") in [(t, r) for t, r, _ in cluster.events]
    serving = next(m for _, r, m in cluster.events if r == "VariantsServing")
    assert "on bert-int8 (accuracy 0.99)" in serving and "budget left" in serving
    source.next = Observation(
        arrival_rate_rps=600.0, latency_ms=300.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    autoscaler.tick("nlp", "bert")
    variants = status(cluster)["variants"]
    assert variants["shares"] == [{"name": "bert-int8", "share": share}]  # type: ignore[index]
    assert 0.0 < variants["budgetLeftPoints"] <= 1.0  # type: ignore[index]
    # The load falls back: the share steps down to nothing and an Event says so.
    advance(40, 40.0, 2.0)
    assert all(held[-1] == {"v0": 0} for held in cuts.values())
    assert ("Normal", "VariantsStopped") in [(t, r) for t, r, _ in cluster.events]
    # Overloaded again, then paused: nothing decides the shares any more, so the routers are
    # sent back to the model only.
    advance(3, 300.0, 200.0)
    assert all(held[-1]["v0"] > 0 for held in cuts.values())
    cluster.services[("nlp", "bert")]["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    assert autoscaler.router_tick("nlp", "bert") is None
    assert all(held[-1] == {"v0": 0} for held in cuts.values())


def test_with_a_steady_spend_the_events_mark_only_what_a_surge_adds_to_the_standing_share() -> None:
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0)),
        "10.0.0.2": RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0)),
    }
    cuts: dict[str, list[dict[str, int]]] = {}
    cluster, autoscaler, source, now, _ = _router_setup(readings, variants=True, cuts=cuts, steady_spend=0.5)

    def advance(steps: int, per_router_rps: float, in_flight: float) -> None:
        _advance_routers(readings, now, autoscaler, steps, per_router_rps, in_flight, variant_fraction=0.5)

    source.next = Observation(
        arrival_rate_rps=80.0, latency_ms=40.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    advance(30, 40.0, 2.0)
    autoscaler.tick("nlp", "bert")
    advance(30, 40.0, 2.0)
    # Half of a 1-point budget on int8 (1 point a request): a standing half, and no Event for it.
    assert all(held[-1] == {"v0": 5000} for held in cuts.values())
    assert "VariantsServing" not in [r for _, r, _ in cluster.events]
    # A surge adds to it: an Event; back to the standing share: another.
    advance(3, 300.0, 200.0)
    assert all(held[-1]["v0"] > 5000 for held in cuts.values())
    assert "VariantsServing" in [r for _, r, _ in cluster.events]
    advance(40, 40.0, 2.0)
    assert all(held[-1] == {"v0": 5000} for held in cuts.values())
    assert "VariantsStopped" in [r for _, r, _ in cluster.events]


def _serving_a_standing_half() -> tuple[
    FakeCluster, Callable[[int, float], None], dict[str, list[dict[str, int]]]
]:
    """A calm load with half of a 1-point budget spent on int8 all the time: a standing half on
    both routers. Returns the cluster, a function that advances the routers (steps, the share
    they serve on the variant) and the cuts each router was given."""
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0)),
        "10.0.0.2": RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0)),
    }
    cuts: dict[str, list[dict[str, int]]] = {}
    cluster, autoscaler, source, now, _ = _router_setup(readings, variants=True, cuts=cuts, steady_spend=0.5)
    source.next = Observation(
        arrival_rate_rps=80.0, latency_ms=40.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )

    def advance(steps: int, variant_fraction: float) -> None:
        _advance_routers(readings, now, autoscaler, steps, 40.0, 2.0, variant_fraction=variant_fraction)

    advance(30, 0.5)
    autoscaler.tick("nlp", "bert")
    advance(5, 0.5)
    assert all(held[-1] == {"v0": 5000} for held in cuts.values())
    return cluster, advance, cuts


def test_adding_a_variant_to_a_standing_share_posts_no_event() -> None:
    """The standing share is no surge before the spec change nor after it: a second variant
    added changes the shares' length, and must not read as a surge's share stopping."""
    cluster, advance, cuts = _serving_a_standing_half()
    model = cluster.services[("nlp", "bert")]["spec"]["model"]
    model["variants"] = [*model["variants"], {"name": "bert-pruned", "accuracy": 0.999, "speedup": 2}]
    advance(5, 0.5)
    assert all(held[-1] == variant_cuts((0.5, 0.0)) for held in cuts.values()), cuts
    assert [r for _, r, _ in cluster.events if r.startswith("Variants")] == []


def test_lowering_the_steady_spend_posts_no_event() -> None:
    """The standing share stepping down to a lowered one, at a calm load, is no surge."""
    cluster, advance, cuts = _serving_a_standing_half()
    cluster.services[("nlp", "bert")]["spec"]["autoscaling"]["accuracy"]["steadySpend"] = 0.25
    advance(10, 0.25)
    held = next(iter(cuts.values()))
    assert {"v0": 4000} in held and held[-1] == {"v0": 2500}  # stepped down, as it does
    assert [r for _, r, _ in cluster.events if r.startswith("Variants")] == []


def test_before_the_models_configuration_is_read_a_few_requests_in_flight_bring_no_share() -> None:
    """A service's first seconds: 8 in flight at 1.5 req/s on 2 replicas reads as 5 s by
    Little's law, but replicas that batch may be executing all of it. Once the model's
    configuration says it runs one request at a time, the same is a queue."""
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=0.0, in_flight=4.0, served=(0.0, 0.0)),
        "10.0.0.2": RouterReading(routed=0.0, in_flight=4.0, served=(0.0, 0.0)),
    }
    cuts: dict[str, list[dict[str, int]]] = {}
    cluster, autoscaler, source, now, _ = _router_setup(readings, variants=True, cuts=cuts)
    cluster.services[("nlp", "bert")].setdefault("status", {})["replicas"] = 2
    _advance_routers(readings, now, autoscaler, 10, 0.75, 4.0)
    last = autoscaler.variants.last("nlp", "bert") if autoscaler.variants else None
    assert last is not None and "no service-time estimate yet; primary only" in last.reason
    assert all(all(cut == {"v0": 0} for cut in held) for held in cuts.values())
    autoscaler.read_model_configs = lambda target, hosts: [{"max_batch_size": 0}]
    for index, ip in enumerate(("10.0.1.1", "10.0.1.2")):
        cluster.pods[("nlp", f"bert-triton-{index}")] = triton_pod(
            f"bert-triton-{index}", "2026-01-01T00:00:00Z", "2026-01-01T00:00:40Z", ip
        )
    source.next = Observation(arrival_rate_rps=1.5, latency_ms=None, ready_replicas=2)
    autoscaler.tick("nlp", "bert")
    assert status(cluster)["capacityModel"]["maxBatch"] == 1  # type: ignore[index]
    _advance_routers(readings, now, autoscaler, 2, 0.75, 4.0)
    assert all(held[-1]["v0"] > 0 for held in cuts.values())


def test_a_service_without_variants_sets_no_share() -> None:
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=0.0, in_flight=2.0),
        "10.0.0.2": RouterReading(routed=0.0, in_flight=2.0),
    }
    cuts: dict[str, list[dict[str, int]]] = {}
    _, autoscaler, _source, now, _ = _router_setup(readings, cuts=cuts)
    for step in range(40):
        now[0] = 2.0 * step
        for address, reading in list(readings.items()):
            assert isinstance(reading, RouterReading)
            readings[address] = RouterReading(reading.routed + 600, 300.0, (reading.routed + 600,))
        autoscaler.router_tick("nlp", "bert")
    assert cuts == {}


def test_variants_an_operator_cannot_serve_are_said_in_status() -> None:
    """Run with --no-read-routers, the operator cannot set the variants' shares (they are set
    through the routers): status says so rather than leaving the field without behaviour."""
    cluster, autoscaler, source, _now, _ = _router_setup({}, variants=True)
    source.next = Observation(
        arrival_rate_rps=80.0, latency_ms=40.0, ready_replicas=2, mean_compute_ms=23.0, average_batch=1.0
    )
    autoscaler.tick("nlp", "bert")
    variants = status(cluster)["variants"]
    assert isinstance(variants, dict)
    assert variants["shares"] == [{"name": "bert-int8", "share": 0.0}]
    assert variants["budgetLeftPoints"] == 1.0
    assert "--no-read-routers" in variants["reason"]


def _variant_service(
    *variants: str, rate_query: str | None = None, accuracy: float = 0.99, steady_spend: float = 0.0
) -> InferenceService:
    metrics = {"metrics": {"rateQuery": rate_query}} if rate_query else {}
    return parse_inference_service(
        make_inference_service(
            name="bert",
            namespace="nlp",
            spec__autoscaling={"accuracy": {"floor": 0.99, "steadySpend": steady_spend}, **metrics},
            spec__model={
                "repository": "/models",
                "names": ["bert"],
                "variants": [{"name": v, "accuracy": accuracy, "speedup": 2} for v in variants],
            },
        )
    )


def test_a_steady_spend_sends_the_routers_a_standing_share_at_a_calm_load() -> None:
    held: dict[str, list[dict[str, int]]] = {}
    controller = VariantController(lambda address, cuts: held.setdefault(address, []).append(cuts) or cuts)
    calm = RouterSignal(100.0, 60.0, 100.0, 0.0, None, in_flight=2.0, age_s=0.0)
    reading = RouterReading(routed=0.0, in_flight=2.0, served=(0.0, 0.0))
    surges_only = controller.decide(
        _variant_service("bert-int8"), 0.0, {"10.0.0.1": reading}, calm, None, None, 4, 4
    )
    assert surges_only is not None and surges_only.shares == (0.0,)
    # Half of a 1-point budget, spent all the time on int8 (1 point a request): half the requests.
    steady = _variant_service("bert-int8", steady_spend=0.5)
    decision = controller.decide(steady, 2.0, {"10.0.0.1": reading}, calm, None, None, 4, 4)
    assert decision is not None and decision.shares == pytest.approx((0.5,))
    assert held["10.0.0.1"][-1] == {"v0": 5000}


def test_the_models_own_rate_counts_what_the_variants_served() -> None:
    """The model's metrics cover only its own servers: while a variant serves half the requests,
    the autoscaler's rate is the routers' whole rate, and it is told a variant served."""
    held: dict[str, list[dict[str, int]]] = {}
    controller = VariantController(lambda address, cuts: held.setdefault(address, []).append(cuts) or cuts)
    service = _variant_service("bert-int8")
    signal = RouterSignal(200.0, 60.0, 200.0, 0.0, None, in_flight=4.0, age_s=0.0)
    for step in range(31):  # 60 s at 200 req/s, half of it on the variant
        reading = RouterReading(routed=400.0 * step, in_flight=4.0, served=(200.0 * step, 200.0 * step))
        controller.decide(service, 2.0 * step, {"10.0.0.1": reading}, signal, None, None, 4, 4)
    metrics = Observation(arrival_rate_rps=100.0, latency_ms=40.0, ready_replicas=4, rate_age_s=17.5)
    counted = controller.account(service, metrics, now=60.0)
    assert counted.arrival_rate_rps == pytest.approx(200.0)
    assert counted.variant_share == pytest.approx(0.5)
    # The variant serving everything: the model's own metrics see nothing, the routers all of it.
    for step in range(31, 62):
        served = (200.0 * 30, 200.0 * 30 + 200.0 * 2 * (step - 30))
        reading = RouterReading(routed=sum(served), in_flight=4.0, served=served)
        controller.decide(service, 2.0 * step, {"10.0.0.1": reading}, signal, None, None, 4, 4)
    idle_model = Observation(arrival_rate_rps=0.0, latency_ms=None, ready_replicas=4, rate_age_s=17.5)
    taken_over = controller.account(service, idle_model, now=122.0)
    assert taken_over.arrival_rate_rps == pytest.approx(200.0) and taken_over.variant_share == 1.0
    # A rate query of the user's own is theirs: its rate is left as it is (the share is said).
    queried = _variant_service("bert-int8", rate_query='sum(rate(my_requests_total{job="x"}[1m]))')
    theirs = controller.account(queried, idle_model, now=122.0)
    assert theirs.arrival_rate_rps == idle_model.arrival_rate_rps and theirs.variant_share == 1.0
    # A service serving no variant is left as it was.
    plain = parse_inference_service(make_inference_service(name="bert", namespace="nlp"))
    assert controller.account(plain, metrics, now=60.0) == metrics


def test_changing_the_variants_starts_a_new_ledger_and_forgetting_takes_every_share_back() -> None:
    held: dict[str, list[dict[str, int]]] = {}
    controller = VariantController(lambda address, cuts: held.setdefault(address, []).append(cuts) or cuts)
    overloaded = RouterSignal(400.0, 6.0, 400.0, 0.0, 100.0, in_flight=2000.0, age_s=0.0)
    one = _variant_service("bert-int8")
    for step in range(3):
        reading = RouterReading(routed=800.0 * step, in_flight=2000.0, served=(800.0 * step, 0.0))
        decision = controller.decide(one, 2.0 * step, {"10.0.0.1": reading}, overloaded, None, None, 1, 4)
    assert decision is not None and decision.shares[0] > 0
    # A second variant declared: the routers report one more count, and nothing breaks.
    two = _variant_service("bert-int8", "bert-small")
    reading = RouterReading(routed=3000.0, in_flight=2000.0, served=(3000.0, 0.0, 0.0))
    decision = controller.decide(two, 8.0, {"10.0.0.1": reading}, overloaded, None, None, 1, 4)
    assert decision is not None and len(decision.shares) == 2
    assert any(held["10.0.0.1"][-1].values())
    # Re-measured (same names, another accuracy): the ledger goes on counting.
    before = decision.served_accuracy
    remeasured = _variant_service("bert-int8", "bert-small", accuracy=0.98)
    reading = RouterReading(routed=3800.0, in_flight=2000.0, served=(3800.0, 0.0, 0.0))
    decision = controller.decide(remeasured, 10.0, {"10.0.0.1": reading}, overloaded, None, None, 1, 4)
    assert decision is not None and decision.served_accuracy == before == 1.0
    assert controller._watches[("nlp", "bert")].totals == (800.0, 0.0, 0.0)
    # Deleted: its routers go with it, nothing is sent.
    pushes = len(held["10.0.0.1"])
    controller.forget("nlp", "bert")
    assert len(held["10.0.0.1"]) == pushes
    # No longer decided for while it exists (autoscaling paused or switched off): the router is
    # sent back to the model only, since nothing else would take its share back.
    controller.decide(remeasured, 12.0, {"10.0.0.1": reading}, overloaded, None, None, 1, 4)
    assert any(held["10.0.0.1"][-1].values())
    controller.forget("nlp", "bert", release_routers=True)
    assert held["10.0.0.1"][-1] == {"v0": 0, "v1": 0}


def test_the_accuracy_ledger_counts_through_a_router_unread_and_a_router_restarted() -> None:
    """Router A serves only the model, B only the variant, 100 requests a read each. B is not
    read once, then restarts (its counters back at zero): the ledger still counts every
    request served, so the accuracy served is the true one."""
    controller = VariantController(lambda address, cuts: cuts)
    service = _variant_service("bert-int8")
    signal = RouterSignal(100.0, 60.0, 100.0, 0.0, None, in_flight=0.0, age_s=0.0)
    b_base, true_model, true_variant = 0.0, 0.0, 0.0
    decision = None
    for step in range(12):
        readings = {"10.0.0.1": RouterReading(routed=100.0 * step, in_flight=0.0, served=(100.0 * step, 0.0))}
        if step == 7:
            b_base = -600.0  # B restarted between reads 6 and 7, and has served 100 since
        if step != 5:  # read 5 times out
            b_count = 100.0 * step + b_base
            readings["10.0.0.2"] = RouterReading(routed=b_count, in_flight=0.0, served=(0.0, b_count))
        decision = controller.decide(service, 2.0 * step, readings, signal, None, None, 4, 4)
        if step > 0:
            true_model += 100.0
            true_variant += 100.0
    assert decision is not None
    assert decision.served_accuracy == pytest.approx(
        (true_model + 0.99 * true_variant) / (true_model + true_variant)
    )


def _six_replicas(spot: bool, source: ScriptedSource) -> tuple[FakeCluster, AutoscaleReconciler]:
    """A service at six ready replicas, with spot on (onDemandBase 1, maxFraction 0.75: four
    on spot) or off, autoscaled on `source`."""
    cluster = FakeCluster()
    cluster.add_service(
        make_inference_service(
            name="bert",
            namespace="nlp",
            spec__replicas=6,
            spec__autoscaling={"minReplicas": 1, "maxReplicas": 20, "periodSeconds": 5},
            spec__capacity={"onDemandBase": 1, "spot": {"enabled": spot, "maxFraction": 0.75}},
        )
    )
    stack = StackReconciler(cluster, clock=lambda: NOW)
    stack.reconcile("nlp", "bert")
    cluster.make_all_ready()
    stack.reconcile("nlp", "bert")
    assert status(cluster)["spotReplicas"] == (4 if spot else 0)
    clock = iter(float(t) for t in range(0, 10_000, 5))
    autoscaler = AutoscaleReconciler(
        cluster, stack, lambda s: (source, "triton"), clock=lambda: NOW, monotonic=lambda: next(clock)
    )
    return cluster, autoscaler


STEADY_950 = Observation(
    arrival_rate_rps=950.0, latency_ms=60.0, ready_replicas=6, mean_compute_ms=44.0, average_batch=8.0
)


def _decisions_with(spot: bool) -> list[dict[str, object]]:
    """The status after each of two decisions on a steady 950 req/s at six ready replicas of
    44 ms batches of 8, with spot on or off; between them a spot replica stops being ready (a
    reclaim)."""
    source = ScriptedSource()
    source.next = STEADY_950
    cluster, autoscaler = _six_replicas(spot, source)
    autoscaler.tick("nlp", "bert")
    first = dict(status(cluster))
    # A replica lost at once (a reclaim, or with spot off a crash): one short, nothing standing in.
    status(cluster)["spotReplicas"] = 3 if spot else 0  # type: ignore[index]
    source.next = replace(source.next, ready_replicas=5)
    autoscaler.tick("nlp", "bert")
    return [first, dict(status(cluster))]


class _ReclaimDuringTheQuery(ScriptedSource):
    """Reads ready replicas from the target, as the Prometheus source does (the status as the
    tick began); during the first query the status write of a spot reclaim lands."""

    def __init__(self, cluster: dict[str, FakeCluster]) -> None:
        super().__init__()
        self.cluster = cluster

    def observe(self, target: ScalingTarget) -> Observation:
        self.targets.append(target)
        if len(self.targets) == 1:
            current = status(self.cluster["it"])
            current["replicas"], current["spotReplicas"] = 5, 3
        return replace(STEADY_950, ready_replicas=target.ready_replicas or 0)


def test_a_reclaim_written_to_status_during_the_query_is_still_seen() -> None:
    """The ready count and the spot count come from one copy of the status: a reclaim whose
    status write lands while the metrics are queried is seen at the next tick (read half from
    each copy, spot fell while nothing looked short, and the loss was never noted)."""
    holder: dict[str, FakeCluster] = {}
    source = _ReclaimDuringTheQuery(holder)
    holder["it"], autoscaler = _six_replicas(True, source)
    autoscaler.tick("nlp", "bert")
    autoscaler.tick("nlp", "bert")
    assert "(one spare on spot, which took a replica 0s ago:" in status(holder["it"])["lastScale"]["reason"]  # type: ignore[index]


def test_once_spot_has_taken_a_replica_the_decision_keeps_a_spare() -> None:
    """status.spotReplicas (ready on spot) and spec.capacity reach the policy: six replicas
    meet the objective at 950 req/s; once spot has taken one, one more than the same
    observations ask for with spot off is kept (N+1)."""
    off_first, off_second = _decisions_with(spot=False)
    first, second = _decisions_with(spot=True)
    assert off_first["desiredReplicas"] == first["desiredReplicas"] == 6  # a calm market: no spare
    needed = off_second["desiredReplicas"]
    assert isinstance(needed, int) and second["desiredReplicas"] == needed + 1
    reason = second["lastScale"]["reason"]  # type: ignore[index]
    assert f"(one spare on spot, which took a replica 0s ago: {needed} + 1)" in reason


def test_the_router_job_reads_the_routers_the_pod_watch_knows_and_lists_none() -> None:
    """With the pod watch answering, the routers it names are read and no pod is listed (at
    1,000 services, a list each 30 s per service was tens a second); while it cannot answer
    (None: not yet listed, reconnecting), the router pods are listed as before."""
    readings: dict[str, RouterReading | str] = {
        "10.0.0.1": RouterReading(routed=1000.0, in_flight=1.0),
        "10.0.0.2": RouterReading(routed=1000.0, in_flight=1.0),
        "10.0.0.9": RouterReading(routed=1000.0, in_flight=1.0),
    }
    cluster, autoscaler, _, now, _ = _router_setup(readings)
    listed: list[dict[str, str]] = []
    list_pods = cluster.list_pods
    cluster.list_pods = lambda namespace, selector: listed.append(selector) or list_pods(namespace, selector)  # type: ignore[method-assign,func-returns-value]
    watched: dict[str, list[str] | None] = {"addresses": ["10.0.0.9"]}
    asked: list[tuple[str, Mapping[str, str]]] = []
    autoscaler.pod_addresses = lambda namespace, selector: (
        asked.append((namespace, selector)) or watched["addresses"]
    )  # type: ignore[func-returns-value]
    read: list[str] = []
    autoscaler.read_router = lambda address: read.append(address) or readings[address]  # type: ignore[func-returns-value]
    for step in range(20):
        now[0] = 2.0 * step
        autoscaler.router_tick("nlp", "bert")
    assert listed == []
    assert set(read) == {"10.0.0.9"}
    assert asked[0] == ("nlp", StackNames("bert", "nlp").component_selector(COMPONENT_ROUTER))
    # The watch stops answering (at 38 s it last did): the last answer stands until a list is
    # due, 30 s after it, so that every service does not list at once.
    watched["addresses"] = None
    read.clear()
    now[0] = 40.0
    autoscaler.router_tick("nlp", "bert")
    assert listed == [] and set(read) == {"10.0.0.9"}
    read.clear()
    now[0] = 68.0
    autoscaler.router_tick("nlp", "bert")
    assert listed == [StackNames("bert", "nlp").component_selector(COMPONENT_ROUTER)]
    assert set(read) == {"10.0.0.1", "10.0.0.2"}


def _behind_the_resource() -> tuple[FakeCluster, AutoscaleReconciler, ScriptedSource, list[int]]:
    """An autoscaler whose copy of the resource (the watch's, in the operator) was taken before
    a status write it has not seen yet; and the resourceVersion each of its status writes
    carries."""
    cluster, built, source = setup()
    behind = copy.deepcopy(cluster.services[("nlp", "bert")])
    cluster.patch_inference_service_status("nlp", "bert", {"message": "written after the copy"})
    tried: list[int] = []
    patch = cluster.patch_inference_service_status

    def counted(
        namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        if resource_version is not None:  # the autoscaler's (the stack writes without one)
            tried.append(int(resource_version))
        patch(namespace, name, status, resource_version)

    cluster.patch_inference_service_status = counted  # type: ignore[method-assign]
    clock = iter(float(t) for t in range(0, 10_000, 5))
    autoscaler = AutoscaleReconciler(
        cluster,
        built.stack,
        lambda s: (source, "triton"),
        clock=lambda: NOW,
        monotonic=lambda: next(clock),
        read=lambda namespace, name: copy.deepcopy(behind),
    )
    return cluster, autoscaler, source, tried


def test_a_copy_behind_a_status_write_is_read_again_and_decided_on_at_once() -> None:
    """The stack writes status while it settles, and the watch's copy lags: the tick's write
    loses to it (409) and is decided again on the resource as read now, not a second later."""
    cluster, autoscaler, source, tried = _behind_the_resource()
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == 5.0
    assert len(tried) == 2 and tried[1] > tried[0]  # the copy's version, then the resource's
    desired = status(cluster)["desiredReplicas"]
    assert isinstance(desired, int) and desired > 2
    assert cluster.deployment("nlp", "bert-ondemand")["spec"]["replicas"] == desired
    assert [r for _, r, _ in cluster.events].count("ScaledUp") == 1  # one decision announced


def test_a_status_written_again_under_the_second_decision_waits_a_moment() -> None:
    """Someone else keeps writing: after two lost writes the tick comes back soon, having
    applied and announced nothing."""
    cluster, autoscaler, source, tried = _behind_the_resource()
    write = cluster.patch_inference_service_status

    def raced(namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None) -> None:
        cluster.services[(namespace, name)]["metadata"]["resourceVersion"] = str(10 + len(tried))
        write(namespace, name, status, resource_version)

    cluster.patch_inference_service_status = raced  # type: ignore[method-assign]
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == CONFLICT_RETRY_S
    assert len(tried) == 2
    assert cluster.deployment("nlp", "bert-ondemand")["spec"]["replicas"] == 2
    assert "ScaledUp" not in [r for _, r, _ in cluster.events]


def test_a_failed_read_after_a_lost_status_write_waits_as_the_server_asks() -> None:
    cluster, autoscaler, source, tried = _behind_the_resource()
    write = cluster.patch_inference_service_status

    def lost_then_unreadable(
        namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        try:
            write(namespace, name, status, resource_version)
        finally:
            cluster.fail_next = "429: too many requests"  # the read that follows the lost write

    cluster.patch_inference_service_status = lost_then_unreadable  # type: ignore[method-assign]
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == 1.0  # the delay the failure asks for, not a crash
    assert len(tried) == 1
    assert "ScaledUp" not in [r for _, r, _ in cluster.events]


def test_a_service_whose_stack_was_never_applied_is_not_observed_until_it_is() -> None:
    """Hundreds of new resources at an operator's start: ticking them before their first
    reconcile costs queries and status writes for stacks that do not exist yet."""
    cluster = FakeCluster()
    spec = {"minReplicas": 1, "maxReplicas": 8, "periodSeconds": 5}
    cluster.add_service(
        make_inference_service(name="bert", namespace="nlp", spec__replicas=2, spec__autoscaling=spec)
    )
    stack = StackReconciler(cluster, clock=lambda: NOW)
    source = ScriptedSource()
    clock = iter(float(t) for t in range(0, 10_000, 5))
    autoscaler = AutoscaleReconciler(
        cluster, stack, lambda s: (source, "triton"), clock=lambda: NOW, monotonic=lambda: next(clock)
    )
    source.next = overload()
    assert autoscaler.tick("nlp", "bert") == 5.0
    assert source.targets == [] and "status" not in cluster.services[("nlp", "bert")]
    stack.reconcile("nlp", "bert")
    cluster.make_all_ready()
    assert autoscaler.tick("nlp", "bert") == 5.0
    assert len(source.targets) == 1 and status(cluster)["desiredReplicas"] > 2  # type: ignore[operator]
