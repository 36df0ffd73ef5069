"""The operator's own Prometheus metrics."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from tritonscale.api.observation import RouterSignal
from tritonscale.api.resource import InferenceService
from tritonscale.api.status import ConditionStatus, InferenceServiceStatus
from tritonscale.policy.autoscaling import FEEDBACK_PAUSE_NOTICE_S, LEARN_RATE_AGREEMENT, Decision, Verdict
from tritonscale.policy.variants import VariantDecision

RECONCILES = Counter(
    "tritonscale_reconcile_total",
    "Reconciles of InferenceServices, by outcome (ok, retry, rejected, skipped: the operator was stopping).",
    ["outcome"],
)
RECONCILE_SECONDS = Histogram(
    "tritonscale_reconcile_duration_seconds",
    "Time one reconcile took (render, apply, observe, status).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

LEADER = Gauge(
    "tritonscale_leader",
    "1 while this operator replica writes (it holds the leader Lease, or runs without leader "
    "election); 0 while it stands by.",
)

TICK_LATENESS = Histogram(
    "tritonscale_autoscale_tick_lateness_seconds",
    "How late an autoscaling tick started against its schedule.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


class InferenceServiceCollector:
    """Series for every InferenceService, autoscaled or not, read at scrape time from the
    watch's copy of each resource (as kube-state-metrics does): its status is the one source, so
    a deleted service has no series left behind and `ready < desired` can be alerted on for all."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[Mapping[str, Any]]] = list

    def describe(self) -> list[Metric]:
        return []  # no fixed description: the series come and go with the resources

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "name"]
        desired = GaugeMetricFamily(
            "tritonscale_desired_replicas", "Triton replicas the operator wants.", labels=labels
        )
        ready = GaugeMetricFamily(
            "tritonscale_ready_replicas",
            "Ready Triton replicas, by capacity type (on-demand, spot).",
            labels=[*labels, "capacity_type"],
        )
        routers = GaugeMetricFamily(
            "tritonscale_router_ready_replicas", "Ready router replicas.", labels=labels
        )
        bounds = GaugeMetricFamily(
            "tritonscale_autoscaling_replicas_limit",
            "The autoscaler's minReplicas and maxReplicas (bound: min, max).",
            labels=[*labels, "bound"],
        )
        latency = GaugeMetricFamily(
            "tritonscale_observed_latency_milliseconds",
            "Measured latency at the objective's percentile.",
            labels=[*labels, "percentile"],
        )
        target = GaugeMetricFamily(
            "tritonscale_target_latency_milliseconds",
            "The latency objective, at its percentile.",
            labels=[*labels, "percentile"],
        )
        rate = GaugeMetricFamily(
            "tritonscale_observed_rate_rps", "Measured arrival rate (requests per second).", labels=labels
        )
        stand_ins = GaugeMetricFamily(
            "tritonscale_spot_fallback_replicas",
            "On-demand replicas standing in for spot replicas that cannot be scheduled (services with spot).",
            labels=labels,
        )
        conditions = GaugeMetricFamily(
            "tritonscale_condition",
            "1 for a condition's current status (true, false, unknown), 0 for the others.",
            labels=[*labels, "condition", "status"],
        )
        for body in self.source():
            metadata = body.get("metadata", {})
            key = [str(metadata.get("namespace")), str(metadata.get("name"))]
            try:
                status = InferenceServiceStatus.model_validate(body.get("status") or {})
            except ValueError:
                continue  # a status this version cannot read: no series rather than wrong ones
            if status.desired_replicas is not None:
                desired.add_metric(key, status.desired_replicas)
            ready.add_metric([*key, "on-demand"], status.on_demand_replicas or 0)
            ready.add_metric([*key, "spot"], status.spot_replicas or 0)
            routers.add_metric(key, status.router_replicas or 0)
            autoscaling = (body.get("spec") or {}).get("autoscaling") or {}
            if autoscaling.get("enabled", True) and autoscaling:
                for bound, field in (("min", "minReplicas"), ("max", "maxReplicas")):
                    if isinstance(autoscaling.get(field), int):
                        bounds.add_metric([*key, bound], autoscaling[field])
            if status.latency_percentile is not None:
                percentile = f"{status.latency_percentile:g}"
                if status.observed_latency_milliseconds is not None:
                    latency.add_metric([*key, percentile], status.observed_latency_milliseconds)
                if status.target_latency_milliseconds is not None:
                    target.add_metric([*key, percentile], status.target_latency_milliseconds)
            if status.observed_rate_rps is not None:
                rate.add_metric(key, status.observed_rate_rps)
            if status.spot_fallback is not None:
                stand_ins.add_metric(key, status.spot_fallback.stand_ins)
            for condition in status.conditions:
                for value in ConditionStatus:
                    conditions.add_metric(
                        [*key, condition.type, value.value.lower()], 1.0 if condition.status == value else 0.0
                    )
        yield from (desired, ready, routers, bounds, latency, target, rate, stand_ins, conditions)


SERVICES = InferenceServiceCollector()
REGISTRY.register(SERVICES)


class AutoscalerMetrics:
    """What only the autoscaling loop knows: its decisions (the rest is in status, above)."""

    def __init__(self) -> None:
        labels = ["namespace", "name"]
        self.model_replicas = Gauge(
            "tritonscale_autoscaler_model_replicas",
            "Triton replicas the queueing model asks for at the expected rate (before the "
            "stabilization window, the step limit and min/max).",
            labels,
        )
        self.predicted_latency = Gauge(
            "tritonscale_autoscaler_predicted_latency_milliseconds",
            "The model's latency at the objective's percentile for the replicas it asks for: "
            "the headroom is the target minus this.",
            labels,
        )
        self.scale_events = Counter(
            "tritonscale_scale_events_total",
            "Changes of desired replicas, by direction.",
            [*labels, "direction"],
        )
        self.decisions = Counter(
            "tritonscale_autoscaler_decisions_total",
            "Autoscaling decisions, by verdict (ScaleUp, Panic, ScaleDown, WaitForHistory, Hold, "
            "MetricsMissing): the same word the decision's status reason and log line render.",
            [*labels, "verdict"],
        )
        self.router_rate = Gauge(
            "tritonscale_autoscaler_router_rate_rps",
            "The arrival rate the routers' counts show now (read every 2 s; since the last change "
            "point, carried to the present on a rising ramp).",
            labels,
        )
        self.router_in_flight = Gauge(
            "tritonscale_autoscaler_router_in_flight_requests",
            "Requests at the Triton replicas or queued in the routers, summed over the routers.",
            labels,
        )
        self.variant_share = Gauge(
            "tritonscale_variant_share",
            "The share of requests the routers send to each faster variant (spec.model.variants), "
            "set every 2 s.",
            [*labels, "variant"],
        )
        self.served_accuracy = Gauge(
            "tritonscale_served_accuracy",
            "Mean accuracy served over the budget's window, relative to the model's (1), as the "
            "routers counted what each variant answered.",
            labels,
        )
        self.accuracy_budget_left = Gauge(
            "tritonscale_accuracy_budget_left_points",
            "Accuracy points the window may still lose to the variants (spec.autoscaling.accuracy).",
            labels,
        )
        self.surge_decisions = Counter(
            "tritonscale_autoscaler_surge_decisions_total",
            "Decisions asked for at once because the routers showed a surge over what the last "
            "decision sized for.",
            labels,
        )
        self.forecast_decisions = Counter(
            "tritonscale_autoscaler_forecast_decisions_total",
            "Decisions a forecast from the service's own history shaped (a period proven on its "
            "last cycles): sized for a recurring surge before or while it came, or scaled down "
            "once settled because no surge is forecast for a stabilization window.",
            labels,
        )
        self.router_read_failures = Counter(
            "tritonscale_autoscaler_router_read_failures_total",
            "Router pods whose stats page could not be read (the autoscaler then runs on its "
            "metrics alone for the moment).",
            labels,
        )
        self.feedback_paused = Gauge(
            "tritonscale_autoscaler_feedback_paused",
            f"1 while the model's error has not been learnt for {FEEDBACK_PAUSE_NOTICE_S:g}s or "
            f"more because the routers' and the metrics' rates disagree by more than "
            f"{LEARN_RATE_AGREEMENT:g}x (the MetricsAvailable condition says both); else 0, and 0 "
            "while metrics are missing.",
            labels,
        )
        self.decision_seconds = Histogram(
            "tritonscale_autoscaler_decision_duration_seconds",
            "Time one autoscaling decision took, its observation and status write included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    def record(self, namespace: str, name: str, decision: Decision) -> None:
        if decision.model_replicas is not None:
            self.model_replicas.labels(namespace, name).set(decision.model_replicas)
        if decision.predicted_ms is not None and math.isfinite(decision.predicted_ms):
            self.predicted_latency.labels(namespace, name).set(decision.predicted_ms)
        if decision.direction != "hold":
            self.scale_events.labels(namespace, name, decision.direction).inc()
        self.decisions.labels(namespace, name, decision.verdict.value).inc()
        if decision.forecast is not None:
            self.forecast_decisions.labels(namespace, name).inc()
        # 0 while metrics are missing (TritonscaleMetricsMissing speaks for that time).
        self.feedback_paused.labels(namespace, name).set(decision.feedback_paused is not None)

    def record_variants(
        self, namespace: str, name: str, service: InferenceService, decision: VariantDecision | None
    ) -> None:
        """The variants' shares and the accuracy budget, as last decided (policy.variants)."""
        if decision is None:
            self._forget_variants(namespace, name)
            return
        for variant, share in zip(service.spec.model.variants, decision.shares, strict=False):
            self.variant_share.labels(namespace, name, variant.name).set(share)
        self.served_accuracy.labels(namespace, name).set(decision.served_accuracy)
        self.accuracy_budget_left.labels(namespace, name).set(decision.budget_left_points)

    def _forget_variants(self, namespace: str, name: str) -> None:
        for metric in (self.served_accuracy, self.accuracy_budget_left):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)
        for labels in list(self.variant_share._metrics):
            if labels[:2] == (namespace, name):
                self.variant_share.remove(*labels)

    def record_routers(self, namespace: str, name: str, signal: RouterSignal | None) -> None:
        if signal is None:
            for gauge in (self.router_rate, self.router_in_flight):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name)
            return
        self.router_rate.labels(namespace, name).set(signal.present_rps)
        self.router_in_flight.labels(namespace, name).set(signal.in_flight)

    def forget(self, namespace: str, name: str) -> None:
        self._forget_variants(namespace, name)
        for metric in (
            self.model_replicas,
            self.predicted_latency,
            self.router_rate,
            self.router_in_flight,
            self.surge_decisions,
            self.forecast_decisions,
            self.router_read_failures,
            self.feedback_paused,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)
        for direction in ("up", "down"):
            with contextlib.suppress(KeyError):
                self.scale_events.remove(namespace, name, direction)
        for verdict in Verdict:
            with contextlib.suppress(KeyError):
                self.decisions.remove(namespace, name, verdict.value)


AUTOSCALER = AutoscalerMetrics()
